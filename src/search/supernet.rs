//! The supernet: every candidate behind a gate, its structure logits alpha, the budget, and the shift
//! solved on the device.
use super::gates::{gate_probs_at, relax, DeviceShift};
use crate::batch::Batch;
use crate::delta::{Ctx, Gates, ModuleSpec};
use crate::error::{Error, Result};
use crate::model::{Model, Values};
use crate::params::{flat_grads, ParamStore};
use tch::{Kind, Tensor};

/// What a pass's gradient is taken in: alpha, the values the pass read (a leaf), or both (concatenated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrt {
    Alpha,
    Values,
    Both,
}

pub struct Supernet {
    pub model: Model,
    pub candidates: Vec<ModuleSpec>,
    pub budget: i64,
    pub alpha_store: ParamStore,
    pub alpha: Tensor,
    pub(crate) n: Vec<f64>,
    pub(crate) beta: f64,
    solver: std::result::Result<DeviceShift, String>,
    /// The last shift solved (0-d float64 on the device).
    last_shift: Option<Tensor>,
}

impl Supernet {
    pub fn new(model: Model, candidates: Vec<ModuleSpec>, budget: i64, beta: f64) -> Self {
        let mut alpha_store = ParamStore::new(model.device);
        let k = candidates.len() as i64;
        let alpha = alpha_store.add("alpha", Tensor::zeros([k], (Kind::Float, model.device)));
        let n: Vec<f64> = candidates.iter().map(|c| c.params.unwrap_or(0) as f64).collect();
        let solver = DeviceShift::new(&n, budget as f64, beta, model.device).map_err(|e| e.to_string());
        Supernet { model, candidates, budget, alpha_store, alpha, n, beta, solver, last_shift: None }
    }

    pub fn alpha_values(&self) -> Result<Vec<f64>> {
        to_vec(&self.alpha, "alpha")
    }

    /// The shift for the current alpha and its relative residual (0-d float64 on the device; nothing is
    /// read back).
    pub fn solve(&mut self) -> Result<(Tensor, Tensor)> {
        let s = self.solver.as_ref().map_err(|e| Error::Budget(e.trim_start_matches("budget: ").into()))?;
        let (b, residual) = s.solve(&self.alpha);
        self.last_shift = Some(b.shallow_clone());
        Ok((b, residual))
    }

    /// p for the shift `b` (carrying alpha's gradient).
    pub fn probs_at(&self, b: &Tensor) -> Tensor {
        gate_probs_at(&self.alpha, b, self.beta)
    }

    /// Solves the shift for the current alpha and returns p (carrying alpha's gradient).
    pub fn probs(&mut self) -> Result<Tensor> {
        let (b, _) = self.solve()?;
        Ok(self.probs_at(&b))
    }

    /// The last shift solved, read on the host.
    pub fn shift(&self) -> Result<Option<f64>> {
        self.last_shift.as_ref().map(|b| to_vec(&b.reshape([1]), "shift").map(|v| v[0])).transpose()
    }

    /// Restores alpha (a resumed search solves its shift again: the same value, the solve is not
    /// warm-started).
    pub fn restore(&mut self, alpha: &Tensor) {
        tch::no_grad(|| self.alpha.shallow_clone().copy_(alpha));
    }

    /// The loss with gates `z` through the per-module reference path.
    pub fn loss(&self, b: &Batch, z: &Tensor) -> Tensor {
        self.model.loss(b, &Ctx::gated(true, &Gates::new(z)))
    }

    /// The loss of `b` with gates `z` through a pass over `values`, and its gradient in `wrt` (flat).
    pub(crate) fn pass_loss(
        &self,
        b: &Batch,
        values: Values,
        z: &Tensor,
        wrt: Wrt,
    ) -> Result<(Tensor, Tensor)> {
        let pass =
            self.model.pass(values, Some(z))?.ok_or_else(|| Error::Msg("the search needs a pass".into()))?;
        let leaf = pass.values.shallow_clone();
        let loss = self.model.loss(b, &Ctx::gated(true, &Gates::pass(pass)));
        let g = match wrt {
            Wrt::Alpha => flat_grads(&loss, &[&self.alpha]),
            Wrt::Values => flat_grads(&loss, &[&leaf]),
            Wrt::Both => flat_grads(&loss, &[&self.alpha, &leaf]),
        };
        crate::dist::reduce_pass(&loss, &g, || self.model.loss_terms(b))
    }

    /// The losses of each replica of `values` (R, N) and the gradient of L_0 - L_1 in alpha.
    pub(crate) fn replica_diff_grad(&self, b: &Batch, values: &Tensor, z: &Tensor) -> Result<Tensor> {
        let pass = self
            .model
            .pass(Values::Given(values), Some(z))?
            .ok_or_else(|| Error::Msg("the search needs a pass".into()))?;
        let losses = self.model.replica_losses(b, true, &Gates::pass(pass));
        let diff = losses.get(0) - losses.get(1);
        let g = flat_grads(&diff, &[&self.alpha]);
        Ok(crate::dist::reduce_pass(&diff, &g, || self.model.loss_terms(b))?.1)
    }

    /// z = relax(p(b), u), with alpha's gradient unless `detached`.
    pub(crate) fn gates(&self, b: &Tensor, u: &Tensor, detached: bool) -> Tensor {
        let p = self.probs_at(b);
        relax(&if detached { p.detach() } else { p }, u)
    }
}

/// A 1-d tensor's values on the host; `what` names it in the error.
pub(crate) fn to_vec(t: &Tensor, what: &str) -> Result<Vec<f64>> {
    Vec::<f64>::try_from(&t.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu))
        .map_err(|e| Error::Tensor { key: what.into(), msg: format!("cannot read back: {e}") })
}
