//! The attachment points of the backbone: a frozen Linear or LayerNorm plus the deltas placed there.
use crate::delta::{Ctx, Delta, DeltaModule, ModuleSpec, SiteShape};
use crate::error::Result;
use crate::params::ParamStore;
use tch::Tensor;

/// A delta to place, with its gate index (candidate id) if gated.
#[derive(Debug, Clone)]
pub struct Placement {
    pub spec: ModuleSpec,
    pub gate: Option<usize>,
}

/// Builds the deltas a site asks for: the placements whose site is `name`, in order.
pub struct SiteFactory<'a> {
    pub placements: &'a [Placement],
    pub store: &'a mut ParamStore,
}

impl SiteFactory<'_> {
    pub fn deltas(&mut self, name: &str, shape: SiteShape) -> Result<Vec<Delta>> {
        let mut out = Vec::new();
        for p in self.placements.iter().filter(|p| p.spec.site == name) {
            p.spec.check(shape)?;
            out.push(Delta::new(&p.spec, shape, p.gate, self.store));
        }
        Ok(out)
    }
}

pub struct LinearSite {
    pub name: String,
    pub weight: Tensor,       // (d_out, d_in)
    pub bias: Option<Tensor>, // (d_out); T5 linears have none
    pub shape: SiteShape,
    pub deltas: Vec<Delta>,
}

impl LinearSite {
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
        let base = if self.weight.kind() == x.kind() {
            x.linear(&self.weight, self.bias.as_ref())
        } else {
            // a bf16 frozen weight: the matmul in bf16, the result (and the deltas) in fp32
            x.to_kind(self.weight.kind()).linear(&self.weight, self.bias.as_ref()).to_kind(x.kind())
        };
        apply_deltas(&self.deltas, base, x, ctx, 0.0)
    }

    /// Folds the linear deltas (LoRA, BitFit) into (weight, bias) with gates at 1; `None` if the site holds
    /// a delta that cannot be folded (LRA, adapter). A site without a bias gets a zero one.
    pub fn folded(&self) -> Option<(Tensor, Tensor)> {
        let mut w = self.weight.detach().to_kind(tch::Kind::Float).copy();
        let mut b = match &self.bias {
            Some(b) => b.detach().to_kind(tch::Kind::Float).copy(),
            None => Tensor::zeros([self.shape.d_out()], (tch::Kind::Float, self.weight.device())),
        };
        for d in &self.deltas {
            match &d.module {
                DeltaModule::Lora(m) => w += m.delta_weight().detach(),
                DeltaModule::Bitfit(m) => b += m.b.detach(),
                _ => return None,
            }
        }
        Some((w, b))
    }
}

pub struct NormSite {
    pub name: String,
    pub weight: Tensor, // (d)
    pub bias: Tensor,   // (d)
    pub eps: f64,
    pub deltas: Vec<Delta>,
}

impl NormSite {
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
        let d = self.weight.size()[0];
        let base = x.layer_norm([d], Some(&self.weight), Some(&self.bias), self.eps, true);
        apply_deltas(&self.deltas, base, x, ctx, self.eps)
    }

    /// LNFit folded into the scale and BitFit into the shift (gates at 1).
    pub fn folded(&self) -> Option<(Tensor, Tensor)> {
        let mut w = self.weight.detach().copy();
        let mut b = self.bias.detach().copy();
        for d in &self.deltas {
            match &d.module {
                DeltaModule::Lnfit(m) => w += m.w.detach(),
                DeltaModule::Bitfit(m) => b += m.b.detach(),
                _ => return None,
            }
        }
        Some((w, b))
    }
}

/// An RMS norm (T5's LayerNorm: no mean subtraction, no bias): weight ⊙ x / sqrt(mean(x²) + eps).
/// LNFit scales the same normalised input; BitFit adds a new bias after it.
pub struct RmsNormSite {
    pub name: String,
    pub weight: Tensor, // (d)
    pub eps: f64,
    pub deltas: Vec<Delta>,
}

impl RmsNormSite {
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
        let var = x.pow_tensor_scalar(2).mean_dim(-1, true, tch::Kind::Float);
        let n = x * (var + self.eps).rsqrt(); // (.., d)
        let base = &n * &self.weight;
        let h = self
            .deltas
            .iter()
            .filter(|d| d.is_parallel())
            .fold(base, |h, d| h + d.forward_normalized(&n, ctx));
        self.deltas
            .iter()
            .filter(|d| !d.is_parallel())
            .fold(h.shallow_clone(), |y, d| y + d.forward(&h, ctx, self.eps))
    }
}

/// h = f(x) + sum of parallel deltas of x; y = h + sum of sequential deltas of h (all read the same h).
/// Out-of-place adds only: h is saved for the backward of the sequential deltas.
fn apply_deltas(deltas: &[Delta], base: Tensor, x: &Tensor, ctx: &Ctx, eps: f64) -> Tensor {
    let h = deltas.iter().filter(|d| d.is_parallel()).fold(base, |h, d| h + d.forward(x, ctx, eps));
    deltas.iter().filter(|d| !d.is_parallel()).fold(h.shallow_clone(), |y, d| y + d.forward(&h, ctx, eps))
}
