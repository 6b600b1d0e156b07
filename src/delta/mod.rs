//! Delta modules (S3PET.md section 1): each sits at one site of the frozen backbone behind a gate.
//! A new method is one file here, one [`DeltaKind`] variant and one row in the invariant tests.
mod adapter;
mod bitfit;
mod lnfit;
mod lora;
mod lra;
pub mod pass;
mod spec;

pub use adapter::Adapter;
pub use bitfit::Bitfit;
pub use lnfit::Lnfit;
pub use lora::Lora;
pub use lra::Lra;
pub use pass::{GateMap, Pass, Scaled};
pub use spec::{DeltaKind, ModuleSpec, SiteShape};

use crate::params::ParamStore;
use tch::Tensor;

/// The gates of one forward pass, in one of two forms. Per candidate: z split once into 0-d tensors (a
/// pass makes one autograd node for all gates instead of one select per gate) that each module applies to
/// its own gated factor. Or a [`Pass`]: every parameter read from one flat buffer that the gates already
/// scaled through the segment map (the fast path of training and search steps).
pub struct Gates {
    z: Option<Tensor>,
    each: Vec<Tensor>,
    pass: Option<Pass>,
}

impl Gates {
    pub fn new(z: &Tensor) -> Self {
        Gates { z: Some(z.shallow_clone()), each: z.unbind(0), pass: None }
    }

    /// The gates folded into a pass's parameters (`pass` may have been built with none: all at 1).
    pub fn pass(pass: Pass) -> Self {
        Gates { z: None, each: Vec::new(), pass: Some(pass) }
    }

    /// The 0-d gate of candidate `i` (none in a pass: its parameters are gated already).
    pub fn get(&self, i: usize) -> Option<&Tensor> {
        self.each.get(i)
    }

    /// The gate values of the per-candidate form.
    pub fn z(&self) -> Option<&Tensor> {
        self.z.as_ref()
    }

    pub fn as_pass(&self) -> Option<&Pass> {
        self.pass.as_ref()
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

    /// The pass whose parameters this forward reads, if any.
    pub fn pass(&self) -> Option<&'a Pass> {
        self.gates.and_then(|g| g.as_pass())
    }

    /// Replicas of the pass (`None`: one, without a replica dimension).
    pub fn replicas(&self) -> Option<i64> {
        self.pass().and_then(|p| p.replicas())
    }
}

pub enum DeltaModule {
    Lora(Lora),
    Bitfit(Bitfit),
    Lnfit(Lnfit),
    Lra(Lra),
    Adapter(Adapter),
}

impl DeltaModule {
    /// The module's parameters in the order it created them (its store entries).
    pub fn leaves(&self) -> Vec<&Tensor> {
        match self {
            DeltaModule::Lora(m) => vec![&m.a, &m.b],
            DeltaModule::Bitfit(m) => vec![&m.b],
            DeltaModule::Lnfit(m) => vec![&m.w],
            DeltaModule::Lra(m) => m.leaves(),
            DeltaModule::Adapter(m) => vec![&m.down_w, &m.down_b, &m.up_w, &m.up_b],
        }
    }

    /// The positions (in [`DeltaModule::leaves`]) that the gate scales, with their constant factor: the
    /// module's last small factor (and bias), never its output.
    pub fn gated_factors(&self) -> Vec<(usize, f64)> {
        match self {
            DeltaModule::Lora(m) => vec![(1, m.scale)],
            DeltaModule::Bitfit(_) | DeltaModule::Lnfit(_) => vec![(0, 1.0)],
            DeltaModule::Lra(_) => vec![(3, 1.0), (5, 1.0)],
            DeltaModule::Adapter(_) => vec![(2, 1.0), (3, 1.0)],
        }
    }
}

/// What a delta adds at its site, from its parameters as one pass reads them (gated, scaled, and with
/// a leading replica dimension in a replica pass). The site's executor folds these together.
pub enum Contribution {
    /// A vector added to the site's output (BitFit): folded into the base op's bias.
    Bias(Tensor),
    /// A vector added to a norm's scale (LNFit): folded into the norm's weight.
    Scale(Tensor),
    /// b (a dropout(x)), reading the site's input (LoRA): `a` (r, d_in), `b` (d_out, r) gated and scaled.
    LowRank { a: Tensor, b: Tensor, dropout: f64 },
    /// inner(h) m + bias, reading the site's output h (LRA, adapter): `m` (k, d), `bias` (d).
    Sequential { module: SequentialKind, params: Vec<Tensor>, m: Tensor, bias: Tensor },
}

/// The nonlinear sequential modules, whose inner part the executor evaluates on h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequentialKind {
    Lra,
    Adapter,
}

impl SequentialKind {
    /// The (.., n, k) inner activations of h (.., n, d).
    pub fn inner(self, params: &[Tensor], h: &Tensor) -> Tensor {
        match self {
            SequentialKind::Lra => Lra::inner(params, h),
            SequentialKind::Adapter => Adapter::inner(params, h),
        }
    }
}

/// A delta module placed at a site, with the index of its gate (candidate id) if it has one.
pub struct Delta {
    pub spec: ModuleSpec,
    pub gate: Option<usize>,
    pub module: DeltaModule,
    /// Its parameters' entries in the store, in creation order.
    pub entries: std::ops::Range<usize>,
}

impl Delta {
    /// Creates the module's fresh parameters in `store` under `<site>.<name>`.
    pub fn new(spec: &ModuleSpec, shape: SiteShape, gate: Option<usize>, store: &mut ParamStore) -> Self {
        let device = store.device();
        let first = store.len();
        let p = |n: &str| format!("{}.{n}", spec.site);
        let mut add = |n: &str, t: Tensor| store.add(&p(n), t);
        let module = match spec.kind {
            DeltaKind::Lora => DeltaModule::Lora(Lora::new(spec, shape, device, &mut add)),
            DeltaKind::Bitfit => DeltaModule::Bitfit(Bitfit::new(shape, device, &mut add)),
            DeltaKind::Lnfit => DeltaModule::Lnfit(Lnfit::new(shape, device, &mut add)),
            DeltaKind::Lra => DeltaModule::Lra(Lra::new(spec, shape, device, &mut add)),
            DeltaKind::Adapter => DeltaModule::Adapter(Adapter::new(spec, shape, device, &mut add)),
        };
        let entries = first..store.len();
        Delta { spec: spec.clone(), gate, module, entries }
    }

    /// Parallel deltas read the site's input; sequential ones its output.
    pub fn is_parallel(&self) -> bool {
        self.spec.kind.is_parallel()
    }

    /// The store entries this delta's gate or constant scales (for the pass's segment map).
    pub fn scaled(&self) -> Vec<Scaled> {
        self.module
            .gated_factors()
            .into_iter()
            .map(|(pos, scale)| Scaled { entry: self.entries.start + pos, gate: self.gate, scale })
            .collect()
    }

    /// The parameters as this forward reads them: a pass's (already gated), or the module's own with the
    /// gate (when active) and constant applied to its gated factors.
    pub fn params(&self, ctx: &Ctx) -> Vec<Tensor> {
        if let Some(pass) = ctx.pass() {
            let parts: Option<Vec<Tensor>> =
                self.entries.clone().map(|e| pass.part(e).map(|t| t.shallow_clone())).collect();
            if let Some(parts) = parts {
                return parts;
            }
        }
        let g = ctx.gate(self.gate);
        let mut out: Vec<Tensor> = self.module.leaves().into_iter().map(|t| t.shallow_clone()).collect();
        for (pos, scale) in self.module.gated_factors() {
            let p = &out[pos];
            out[pos] = match (&g, scale == 1.0) {
                (Some(g), true) => p * g,
                (Some(g), false) => p * (g * scale),
                (None, true) => p.shallow_clone(),
                (None, false) => p * scale,
            };
        }
        out
    }

    /// What the delta adds, from [`Delta::params`].
    pub fn contribution(&self, ctx: &Ctx) -> Contribution {
        let p = self.params(ctx);
        match &self.module {
            DeltaModule::Lora(m) => {
                Contribution::LowRank { a: p[0].shallow_clone(), b: p[1].shallow_clone(), dropout: m.dropout }
            }
            DeltaModule::Bitfit(_) => Contribution::Bias(p[0].shallow_clone()),
            DeltaModule::Lnfit(_) => Contribution::Scale(p[0].shallow_clone()),
            DeltaModule::Lra(_) => {
                let (m, bias) = Lra::outer(&p);
                Contribution::Sequential { module: SequentialKind::Lra, params: p, m, bias }
            }
            DeltaModule::Adapter(_) => {
                let (m, bias) = Adapter::outer(&p);
                Contribution::Sequential { module: SequentialKind::Adapter, params: p, m, bias }
            }
        }
    }
}

/// Kaiming-uniform bound with a = sqrt(5), as torch.nn.Linear and PEFT's LoRA A use: 1 / sqrt(fan_in).
pub(crate) fn kaiming_uniform(shape: &[i64], fan_in: i64, device: tch::Device) -> Tensor {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Tensor::empty(shape, (tch::Kind::Float, device)).uniform_(-bound, bound)
}
