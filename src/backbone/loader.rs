//! A path-recording weight loader (like candle's `VarBuilder::pp`): a backbone's modules take their
//! tensors by walking the checkpoint's own module paths (`vb.pp("encoder.layer").pp(3).pp("attention")`),
//! and the loader records every delta site it creates and every tensor it reads. The site list and the
//! parameter count of a model are then what its loader saw, never a second list written by hand.
//!
//! The same walk runs on real weights (building a model) or on shapes alone ([`Source::Shapes`]: each
//! tensor is a zero-size-in-memory stand-in of the requested shape), which gives the sites and the
//! parameter count of a config without a checkpoint.
use super::sites::{LinearGroup, LinearSite, NormSite, Placement, RmsNormSite, SiteFactory};
use super::weights::Weights;
use crate::delta::{Scaled, SiteShape};
use crate::error::{Error, Result};
use crate::params::ParamStore;
use std::cell::RefCell;
use std::fmt::Display;
use tch::{Device, Kind, Tensor};

/// Where a walk reads its tensors from.
pub enum Source<'w> {
    Weights(&'w Weights),
    /// No checkpoint: every tensor is a stand-in of the requested shape (a broadcast scalar).
    Shapes,
}

/// What a walk saw: the delta sites in model order, every tensor read (key and shape) and their
/// parameter count (tied tensors read once), and the store entries of the deltas it created that a gate
/// or a constant scales (the segment map of a pass, [`crate::delta::GateMap`]).
#[derive(Debug, Clone, Default)]
pub struct Walk {
    pub sites: Vec<(String, SiteShape)>,
    pub tensors: Vec<(String, Vec<i64>)>,
    pub params: i64,
    pub scaled: Vec<Scaled>,
}

struct State<'a> {
    source: Source<'a>,
    factory: SiteFactory<'a>,
    full: bool,
    walk: Walk,
}

/// The loader of one model build: owns the walk's state; [`Loader::root`] gives the path builder.
pub struct Loader<'a> {
    state: RefCell<State<'a>>,
}

impl<'a> Loader<'a> {
    /// A loader over real weights whose sites ask `placements` what to attach (deltas go to `store`).
    /// With `full`, every backbone tensor becomes trainable in `store` (full fine-tuning).
    pub fn new(
        weights: &'a Weights,
        placements: &'a [Placement],
        store: &'a mut ParamStore,
        full: bool,
    ) -> Self {
        let factory = SiteFactory { placements, store };
        Loader {
            state: RefCell::new(State {
                source: Source::Weights(weights),
                factory,
                full,
                walk: Walk::default(),
            }),
        }
    }

    /// A loader that reads shapes only (no deltas, nothing trainable).
    pub fn shapes(store: &'a mut ParamStore) -> Self {
        let factory = SiteFactory { placements: &[], store };
        Loader {
            state: RefCell::new(State {
                source: Source::Shapes,
                factory,
                full: false,
                walk: Walk::default(),
            }),
        }
    }

    pub fn root(&self) -> Vb<'_, 'a> {
        Vb { state: &self.state, prefix: String::new() }
    }

    /// The sites, tensors and parameter count seen so far.
    pub fn finish(self) -> Walk {
        self.state.into_inner().walk
    }
}

/// A position in the checkpoint's module tree.
pub struct Vb<'s, 'a> {
    state: &'s RefCell<State<'a>>,
    prefix: String,
}

/// How a Linear site takes part in the delta framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A delta site inside a block (q, k, v, FFN in).
    Site,
    /// A delta site that is the output projection of a whole attention or FFN block (LRA and adapters
    /// attach there).
    BlockOutput,
    /// Not a delta site (a pooler, a head's dense layer): frozen, no deltas.
    Frozen,
}

impl<'s, 'a> Vb<'s, 'a> {
    /// The path one level down (`name` may itself hold dots).
    pub fn pp(&self, name: impl Display) -> Vb<'s, 'a> {
        let name = name.to_string();
        let prefix = if self.prefix.is_empty() { name } else { format!("{}.{name}", self.prefix) };
        Vb { state: self.state, prefix }
    }

    /// The full key of `name` under this path.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The activations' dtype of the model being built (fp32 when reading shapes only).
    pub fn act_kind(&self) -> Kind {
        match &self.state.borrow().source {
            Source::Weights(w) => w.act_kind(),
            Source::Shapes => Kind::Float,
        }
    }

    pub fn device(&self) -> Device {
        match &self.state.borrow().source {
            Source::Weights(w) => w.device(),
            Source::Shapes => Device::Cpu,
        }
    }

    /// Whether the checkpoint holds `name` here (always false when reading shapes only: callers then
    /// take the canonical key).
    pub fn contains(&self, name: &str) -> bool {
        match &self.state.borrow().source {
            Source::Weights(w) => w.contains(&self.key(name)),
            Source::Shapes => false,
        }
    }

    /// The stored tensor `name` compared with `other` (false when reading shapes only).
    pub fn equals(&self, name: &str, shape: &[i64], other: &Tensor) -> Result<bool> {
        match &self.state.borrow().source {
            Source::Weights(w) => Ok(w.get(&self.key(name), shape)?.equal(other)),
            Source::Shapes => Ok(false),
        }
    }

    fn read(&self, key: &str, shape: &[i64], frozen: bool) -> Result<Tensor> {
        let st = self.state.borrow();
        match &st.source {
            Source::Weights(w) if frozen && !st.full => w.get_frozen(key, shape),
            Source::Weights(w) => w.get(key, shape),
            Source::Shapes => Ok(Tensor::zeros([], (Kind::Float, Device::Cpu)).expand(shape, false)),
        }
    }

    fn take(&self, name: &str, shape: &[i64], frozen_dtype: bool) -> Result<Tensor> {
        let key = self.key(name);
        let t = self.read(&key, shape, frozen_dtype)?;
        self.count(&key, shape);
        let mut st = self.state.borrow_mut();
        // full fine-tuning trains a private copy: the loaded weights stay as read
        Ok(if st.full { st.factory.store.add(&key, t.to_kind(Kind::Float).copy()) } else { t })
    }

    /// Records a tensor read at `key` in the walk: the backbone's parameter count and tensor list.
    fn count(&self, key: &str, shape: &[i64]) {
        let mut st = self.state.borrow_mut();
        st.walk.params += shape.iter().product::<i64>();
        st.walk.tensors.push((key.to_string(), shape.to_vec()));
    }

    /// A checkpoint Linear (d, d) with bias that the task model never reads (the pooler of MPNet and
    /// RoBERTa: their heads take the first token): read, shape-checked and counted in the backbone, but
    /// never trained, not even under full fine-tuning.
    pub fn unused_linear(&self, name: &str, d: i64) -> Result<()> {
        let at = self.pp(name);
        for (part, shape) in [("weight", vec![d, d]), ("bias", vec![d])] {
            let key = at.key(part);
            let _checked = at.read(&key, &shape, true)?;
            at.count(&key, &shape);
        }
        Ok(())
    }

    /// A frozen fp32 tensor (norm scales, position-bias tables); trainable under full fine-tuning.
    pub fn tensor(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        self.take(name, shape, false)
    }

    /// A frozen matrix (embedding table, linear weight or bias) in the weights' frozen dtype.
    pub fn matrix(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        self.take(name, shape, true)
    }

    /// The deltas placed at this path's site, recording the site.
    fn deltas(&self, shape: SiteShape) -> Result<Vec<crate::delta::Delta>> {
        let mut st = self.state.borrow_mut();
        st.walk.sites.push((self.prefix.clone(), shape));
        let deltas = st.factory.deltas(&self.prefix, shape)?;
        st.walk.scaled.extend(deltas.iter().flat_map(|d| d.scaled()));
        Ok(deltas)
    }

    /// The Linear at `name` (`weight` (d_out, d_in), `bias` when `bias`).
    pub fn linear(&self, name: &str, d_in: i64, d_out: i64, bias: bool, role: Role) -> Result<LinearSite> {
        let at = self.pp(name);
        let weight = at.matrix("weight", &[d_out, d_in])?;
        let bias = if bias { Some(at.matrix("bias", &[d_out])?) } else { None };
        let shape = SiteShape::Linear { d_in, d_out, block: role == Role::BlockOutput };
        let deltas = if role == Role::Frozen { Vec::new() } else { at.deltas(shape)? };
        Ok(LinearSite { name: at.prefix.clone(), weight, bias, shape, deltas })
    }

    /// The Linears at `names` (under this path) that read the same input, loaded in order as
    /// [`Vb::linear`] loads each. Their frozen weights (and biases) are concatenated into one matrix whose
    /// slices become the members' weights, replacing the loaded originals in the weights, so that the
    /// group's base matmuls run as one; not under full fine-tuning (each weight is trained) nor when
    /// reading shapes only.
    pub fn linear_group(
        &self,
        names: &[&str],
        d_in: i64,
        d_out: i64,
        bias: bool,
        role: Role,
    ) -> Result<LinearGroup> {
        let sites =
            names.iter().map(|n| self.linear(n, d_in, d_out, bias, role)).collect::<Result<Vec<_>>>()?;
        let st = self.state.borrow();
        let Source::Weights(w) = &st.source else { return Ok(LinearGroup::unfused(sites)) };
        if st.full || sites.len() < 2 {
            return Ok(LinearGroup::unfused(sites));
        }
        let mut sites = sites;
        let fused = fuse(&mut sites, w, &self.key(""))?;
        Ok(LinearGroup { sites, fused: Some(fused) })
    }

    /// The LayerNorm at `name` (`weight`/`bias`, or the older `gamma`/`beta`), a delta site.
    pub fn layer_norm(&self, name: &str, d: i64, eps: f64) -> Result<NormSite> {
        let at = self.pp(name);
        let (wk, bk) = if at.contains("gamma") { ("gamma", "beta") } else { ("weight", "bias") };
        let weight = at.tensor(wk, &[d])?;
        let bias = at.tensor(bk, &[d])?;
        let deltas = at.deltas(SiteShape::Norm { d })?;
        Ok(NormSite { name: at.prefix.clone(), weight, bias, eps, deltas })
    }

    /// The RMS norm at `name` (`weight` only), a delta site.
    pub fn rms_norm(&self, name: &str, d: i64, eps: f64) -> Result<RmsNormSite> {
        let at = self.pp(name);
        let weight = at.tensor("weight", &[d])?;
        let deltas = at.deltas(SiteShape::Norm { d })?;
        Ok(RmsNormSite { name: at.prefix.clone(), weight, eps, deltas })
    }
}

/// Concatenates the members' weights (and biases) and makes each member's a view of the result, in the
/// sites and in `w` (so the originals are freed).
fn fuse(sites: &mut [LinearSite], w: &Weights, at: &str) -> Result<(Tensor, Option<Tensor>)> {
    let sizes: Vec<i64> = sites.iter().map(|s| s.shape.d_out()).collect();
    let weight = Tensor::cat(&sites.iter().map(|s| &s.weight).collect::<Vec<_>>(), 0);
    let biases: Option<Vec<&Tensor>> = sites.iter().map(|s| s.bias.as_ref()).collect();
    let bias = biases.map(|b| Tensor::cat(&b, 0));
    let views = weight.split_with_sizes(&sizes, 0);
    let bviews = bias.as_ref().map(|b| b.split_with_sizes(&sizes, 0));
    for (i, (s, v)) in sites.iter_mut().zip(views).enumerate() {
        w.replace(&format!("{}.weight", s.name), v.shallow_clone())
            .map_err(|e| Error::site(at.trim_end_matches('.'), e.to_string()))?;
        s.weight = v;
        if let Some(b) = bviews.as_ref().map(|bs| bs[i].shallow_clone()) {
            w.replace(&format!("{}.bias", s.name), b.shallow_clone())
                .map_err(|e| Error::site(at.trim_end_matches('.'), e.to_string()))?;
            s.bias = Some(b);
        }
    }
    Ok((weight, bias))
}

/// Checks that every placement names a site the walk recorded.
pub fn check_placements(placements: &[Placement], walk: &Walk) -> Result<()> {
    for p in placements {
        if !walk.sites.iter().any(|(s, _)| *s == p.spec.site) {
            return Err(Error::site(&p.spec.site, "no such site in this model"));
        }
    }
    Ok(())
}
