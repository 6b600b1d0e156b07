//! The attachment points of the backbone: a frozen Linear or LayerNorm plus the deltas placed there, run
//! by the per-site executor ([`super::exec`]).
use super::exec;
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
    /// The site's output: its frozen matmul with the deltas' terms (a bf16 frozen weight under fp32
    /// activations: the matmul in bf16, the result and the deltas in fp32).
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
        let mut out = exec::linear_group(&[self], None, x, ctx);
        out.pop().unwrap_or_else(|| x.shallow_clone())
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
    /// LayerNorm(x) with LNFit folded into its scale and BitFit into its shift.
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
        exec::norm(self, x, ctx)
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
        exec::rms_norm(self, x, ctx)
    }
}

/// Linear sites that read the same input (query, key and value; T5's wi_0 and wi_1): their frozen
/// matmuls run as one over the concatenated weight (when the loader could fuse them: the members'
/// weights are then views of it) and their LoRA A factors as one matmul.
pub struct LinearGroup {
    pub sites: Vec<LinearSite>,
    /// (weight (sum d_out, d_in), bias) of the members side by side.
    pub(crate) fused: Option<(Tensor, Option<Tensor>)>,
}

impl LinearGroup {
    /// A group that runs its members' matmuls one by one.
    pub fn unfused(sites: Vec<LinearSite>) -> Self {
        LinearGroup { sites, fused: None }
    }

    /// Each member's output for the shared input `x`, in member order.
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Vec<Tensor> {
        let sites: Vec<&LinearSite> = self.sites.iter().collect();
        exec::linear_group(&sites, self.fused.as_ref(), x, ctx)
    }

    /// Whether the members' frozen matmuls run as one.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }
}
