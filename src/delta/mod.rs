//! Delta modules (S3PET.md section 1): each sits at one site of the frozen backbone behind a gate.
//! A new method is one file here, one [`DeltaKind`] variant and one row in the invariant tests.
mod adapter;
mod bitfit;
mod lnfit;
mod lora;
mod lra;
mod spec;

pub use adapter::Adapter;
pub use bitfit::Bitfit;
pub use lnfit::Lnfit;
pub use lora::Lora;
pub use lra::Lra;
pub use spec::{DeltaKind, ModuleSpec, SiteShape};

use crate::params::ParamStore;
use tch::Tensor;

/// The gate values z of one forward pass (one per candidate), split once into 0-d tensors so that a
/// pass makes one autograd node for all gates instead of one select per gate.
pub struct Gates {
    pub z: Tensor,
    each: Vec<Tensor>,
}

impl Gates {
    pub fn new(z: &Tensor) -> Self {
        Gates { z: z.shallow_clone(), each: z.unbind(0) }
    }

    /// The 0-d gate of candidate `i`.
    pub fn get(&self, i: usize) -> Option<&Tensor> {
        self.each.get(i)
    }
}

/// What a forward pass needs to know besides its input: training mode and the gates (`None`: every
/// gate is fixed at 1).
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub train: bool,
    pub gates: Option<&'a Gates>,
}

impl<'a> Ctx<'a> {
    pub fn eval() -> Self {
        Ctx { train: false, gates: None }
    }
    pub fn train() -> Self {
        Ctx { train: true, gates: None }
    }
    pub fn gated(train: bool, gates: &'a Gates) -> Self {
        Ctx { train, gates: Some(gates) }
    }
    /// The 0-d gate tensor of candidate `gate` when gates are active. Modules scale their last (small)
    /// parameter factor by it instead of their (batch x tokens x d) output: the same function, but autograd
    /// keeps no full-size output per gate and runs no full-size multiply.
    pub fn gate(&self, gate: Option<usize>) -> Option<Tensor> {
        match (gate, self.gates) {
            (Some(i), Some(g)) => g.get(i).map(|t| t.shallow_clone()),
            _ => None,
        }
    }
}

/// `p` times the gate, or `p` itself when there is none.
pub(crate) fn gated(p: &Tensor, g: Option<&Tensor>) -> Tensor {
    match g {
        Some(g) => p * g,
        None => p.shallow_clone(),
    }
}

pub enum DeltaModule {
    Lora(Lora),
    Bitfit(Bitfit),
    Lnfit(Lnfit),
    Lra(Lra),
    Adapter(Adapter),
}

/// A delta module placed at a site, with the index of its gate (candidate id) if it has one.
pub struct Delta {
    pub spec: ModuleSpec,
    pub gate: Option<usize>,
    pub module: DeltaModule,
}

impl Delta {
    /// Creates the module's fresh parameters in `store` under `<site>.<name>`.
    pub fn new(spec: &ModuleSpec, shape: SiteShape, gate: Option<usize>, store: &mut ParamStore) -> Self {
        let device = store.device();
        let p = |n: &str| format!("{}.{n}", spec.site);
        let module = match spec.kind {
            DeltaKind::Lora => {
                DeltaModule::Lora(Lora::new(spec, shape, device, &mut |n, t| store.add(&p(n), t)))
            }
            DeltaKind::Bitfit => {
                DeltaModule::Bitfit(Bitfit::new(shape, device, &mut |n, t| store.add(&p(n), t)))
            }
            DeltaKind::Lnfit => {
                DeltaModule::Lnfit(Lnfit::new(shape, device, &mut |n, t| store.add(&p(n), t)))
            }
            DeltaKind::Lra => {
                DeltaModule::Lra(Lra::new(spec, shape, device, &mut |n, t| store.add(&p(n), t)))
            }
            DeltaKind::Adapter => {
                DeltaModule::Adapter(Adapter::new(spec, shape, device, &mut |n, t| store.add(&p(n), t)))
            }
        };
        Delta { spec: spec.clone(), gate, module }
    }

    /// Parallel deltas read the site's input; sequential ones its output.
    pub fn is_parallel(&self) -> bool {
        self.spec.kind.is_parallel()
    }

    /// The delta's contribution (before gating): `x` is the site's input for parallel deltas, and the
    /// site's output for sequential ones. `norm_eps` is the LayerNorm epsilon at norm sites.
    /// The gate (when active) scales the module's last parameter factor, not its output.
    pub fn forward(&self, x: &Tensor, ctx: &Ctx, norm_eps: f64) -> Tensor {
        let g = ctx.gate(self.gate);
        let g = g.as_ref();
        match &self.module {
            DeltaModule::Lora(m) => m.forward(x, ctx.train, g),
            DeltaModule::Bitfit(m) => m.forward(g),
            DeltaModule::Lnfit(m) => m.forward(x, norm_eps, g),
            DeltaModule::Lra(m) => m.forward(x, g),
            DeltaModule::Adapter(m) => m.forward(x, g),
        }
    }
}

impl Delta {
    /// At an RMS norm site: LNFit scales the already normalised input `n`; other deltas as in
    /// [`Delta::forward`].
    pub fn forward_normalized(&self, n: &Tensor, ctx: &Ctx) -> Tensor {
        match &self.module {
            DeltaModule::Lnfit(m) => n * gated(&m.w, ctx.gate(self.gate).as_ref()),
            _ => self.forward(n, ctx, 0.0),
        }
    }
}

/// Kaiming-uniform bound with a = sqrt(5), as torch.nn.Linear and PEFT's LoRA A use: 1 / sqrt(fan_in).
pub(crate) fn kaiming_uniform(shape: &[i64], fan_in: i64, device: tch::Device) -> Tensor {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Tensor::empty(shape, (tch::Kind::Float, device)).uniform_(-bound, bound)
}
