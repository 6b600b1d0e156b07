//! One bi-level search step: the alpha update on a D_alpha batch (first order, or DARTS second order:
//! virtual AdamW step + finite-difference Hessian-vector product), then the w update on a D_w batch.
//!
//! A step is device work only: the shift is solved on the device, every parameter is read through one
//! gated pass, the optimisers' step scalars come from one small tensor written before the step, and
//! the non-finite guard writes its checks into a ring buffer on the device ([`DeviceGuard`]) that the
//! loop reads at evaluations and checkpoints. So nothing in a step waits for the device, and a step can
//! be captured as a CUDA graph ([`super::graphs`]). With `--skip-nonfinite` a step must decide on the
//! host whether to apply each update: it then reads its losses and norms there ([`guarded_step`]).
use super::bilevel::SearchConfig;
use super::graphs::{Graphs, Inputs};
use super::supernet::{Supernet, Wrt};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::guard::{guarded_step, DeviceGuard, Slot};
use crate::model::Values;
use crate::optim::{clip_grad_norm, upload, AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

/// What a step leaves on the device: the alpha step's (validation) loss and the w step's loss, 0-d.
pub struct StepOut {
    pub val_loss: Tensor,
    pub train_loss: Tensor,
}

/// The guard's slots, in the order a step writes them.
fn guard_slots() -> Vec<Slot> {
    let s = |what, update| Slot { what, update, at_most: None };
    let shift =
        |update| Slot { what: "sigmoid shift residual", update, at_most: Some(super::gates::SHIFT_TOL) };
    vec![
        s("loss", "alpha update"),
        s("gradient norm", "alpha update"),
        shift("alpha update"),
        s("parameters after the update", "alpha update"),
        shift("w update"),
        s("loss", "w update"),
        s("gradient norm", "w update"),
        s("parameters after the update", "w update"),
    ]
}

/// One search step's optimisers and noise.
pub struct Stepper<'a> {
    pub net: &'a mut Supernet,
    pub w_opt: AdamW,
    pub a_opt: AdamW,
    /// The gradient that reached alpha in the last (eager) alpha step, before clipping.
    pub last_alpha_grad: Option<Tensor>,
    /// The finite-difference Hessian-vector term the last (eager) second-order step subtracted from it.
    pub last_hessian_term: Option<Tensor>,
    /// Second order: the w+ and w- passes as one pass over both, with a replica dimension (fewer
    /// kernels, twice the activations of one pass held at once). Default: on CUDA, where a step is
    /// bound by kernel launches; off on the CPU, where it saved no time and held 1.7x the memory
    /// (docs/PERFORMANCE.md).
    pub replicas: bool,
    rng: rand_chacha::ChaCha8Rng,
    pub(crate) cfg: SearchConfig,
    pub(crate) guard: DeviceGuard,
    /// This step's scalars on the device: w's AdamW scalars (3), alpha's (3), xi.
    scalars: Tensor,
    graphs: Option<Graphs>,
}

impl<'a> Stepper<'a> {
    pub fn new(net: &'a mut Supernet, cfg: &SearchConfig) -> Self {
        let w_opt = AdamW::new(&net.model.store, AdamWConfig::new(cfg.w_lr, cfg.weight_decay));
        let a_opt = AdamW::new(&net.alpha_store, AdamWConfig::new(cfg.alpha_lr, 0.0));
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x005E_ED0F_A1FA);
        let device = net.model.device;
        let guard = DeviceGuard::new(guard_slots(), device);
        let scalars = Tensor::zeros([7], (Kind::Float, device));
        Stepper {
            net,
            w_opt,
            a_opt,
            last_alpha_grad: None,
            last_hessian_term: None,
            replicas: device.is_cuda(),
            rng,
            cfg: cfg.clone(),
            guard,
            scalars,
            graphs: None,
        }
    }

    /// Captures steps as CUDA graphs (per shape of the step's inputs) from now on, where this build and
    /// device allow it: a CUDA device, a classifier (not T5: its label words are uploaded inside the
    /// step), no `--skip-nonfinite` (which reads values on the host) and one process (no launcher: the
    /// all-reduce of a launched world is not captured). Returns whether graphs are on.
    pub fn use_cuda_graphs(&mut self, on: bool) -> Result<bool> {
        let can = crate::step_graphs::capturable(&self.net.model) && !self.cfg.skip_nonfinite;
        self.graphs = if on && can { Some(Graphs::new(self.net.model.device, "search")?) } else { None };
        Ok(self.graphs.is_some())
    }

    /// Shapes captured as CUDA graphs so far (`None`: graphs are off).
    pub fn graph_shapes(&self) -> Option<usize> {
        self.graphs.as_ref().map(|g| g.count())
    }

    /// How this attempt's steps ran as CUDA graphs so far (`None`: graphs are off).
    pub fn graph_tally(&self) -> Option<super::graphs::GraphTally> {
        self.graphs.as_ref().map(|g| g.tally())
    }

    /// Re-seeds the noise generator and libtorch's (dropout) from (seed, step): a step draws the same
    /// numbers whatever happened before it, so a resumed search repeats an uninterrupted one.
    pub fn seed_step(&mut self, step: usize) {
        let s = crate::train::step_seed(self.cfg.seed ^ 0x005E_ED0F_A1FA, step);
        self.rng = rand_chacha::ChaCha8Rng::seed_from_u64(s as u64);
        crate::model::manual_seed(crate::train::step_seed(self.cfg.seed, step));
    }

    /// u ~ U(0, 1), one per candidate, from the search's seeded generator (copied without waiting).
    fn noise(&mut self) -> Tensor {
        let k = self.net.candidates.len();
        let u: Vec<f32> = (0..k).map(|_| self.rng.gen_range(1e-6f32..1.0 - 1e-6)).collect();
        upload(&Tensor::from_slice(&u), self.net.model.device)
    }

    /// One search step `step` at learning rates (w, alpha): the alpha update on `ba` (second order also
    /// uses `bw`), then the w update on `bw`, each with its own noise.
    pub fn step(&mut self, bw: &Batch, ba: &Batch, lrs: (f64, f64), step: usize) -> Result<StepOut> {
        let u_a = self.noise();
        let u_w = self.noise();
        self.step_with(bw, ba, (&u_a, &u_w), lrs, step)
    }

    /// [`Stepper::step`] with the noise of both updates given.
    pub fn step_with(
        &mut self,
        bw: &Batch,
        ba: &Batch,
        (u_a, u_w): (&Tensor, &Tensor),
        (lr_w, lr_a): (f64, f64),
        step: usize,
    ) -> Result<StepOut> {
        let inputs =
            Inputs { bw: bw.clone(), ba: ba.clone(), u_a: u_a.shallow_clone(), u_w: u_w.shallow_clone() };
        if self.cfg.skip_nonfinite {
            return self.step_host_guarded(&inputs, (lr_w, lr_a), step);
        }
        self.w_opt.step += 1;
        self.a_opt.step += 1;
        let mut s = self.w_opt.coefs(self.w_opt.step, lr_w).to_vec();
        s.extend(self.a_opt.coefs(self.a_opt.step, lr_a));
        s.push(lr_w as f32);
        tch::no_grad(|| {
            self.scalars.shallow_clone().copy_(&upload(&Tensor::from_slice(&s), self.scalars.device()))
        });
        let out = match self.graphs.take() {
            Some(mut g) => {
                let out = g.run(&inputs, &mut |x| self.body(x));
                self.graphs = Some(g);
                out?
            }
            None => self.body(&inputs)?,
        };
        if self.guard.stepped(step) {
            self.check_guard()?;
        }
        Ok(out)
    }

    /// Reads the guard's rows since the last check: an error at the first non-finite value (the last
    /// search checkpoint on disk is then the last good one). Returns the latest row.
    pub fn check_guard(&mut self) -> Result<Option<Vec<f32>>> {
        self.guard.check("search", "the last search checkpoint is kept")
    }

    /// A step's device work on `x`, with the scalars written for it.
    pub(crate) fn body(&mut self, x: &Inputs) -> Result<StepOut> {
        let scalars = self.scalars.shallow_clone();
        let (coef_w, coef_a, xi) =
            (scalars.narrow(0, 0, 3), scalars.narrow(0, 3, 3), scalars.narrow(0, 6, 1));
        let (b, res_a) = self.net.solve()?;
        let (g, val) = self.alpha_grad(x, &b, (&coef_w, &xi))?;
        let norm_a = clip_grad_norm(&g, self.cfg.clip_norm);
        self.a_opt.apply(&self.net.alpha_store, &g, &coef_a);
        let sum_a = tch::no_grad(|| self.net.alpha.detach().sum(Kind::Float));
        let (b, res_w) = self.net.solve()?;
        let (loss, g) = self.w_grad(&x.bw, &b, &x.u_w)?;
        let norm_w = clip_grad_norm(&g, self.cfg.clip_norm);
        self.w_opt.apply(&self.net.model.store, &g, &coef_w);
        let sum_w = tch::no_grad(|| self.net.model.store.flat().sum(Kind::Float));
        self.guard.record(&[
            val.shallow_clone(),
            norm_a,
            res_a,
            sum_a,
            res_w,
            loss.shallow_clone(),
            norm_w,
            sum_w,
        ]);
        Ok(StepOut { val_loss: val, train_loss: loss })
    }

    /// The gradient reaching alpha (before clipping) and the validation loss. `coef_w`: the w AdamW
    /// scalars of the virtual step (those of this step's w update: the same step number and rate).
    fn alpha_grad(
        &mut self,
        x: &Inputs,
        b: &Tensor,
        scalars: (&Tensor, &Tensor),
    ) -> Result<(Tensor, Tensor)> {
        let (g, val) = if self.cfg.order == 1 {
            let z = self.net.gates(b, &x.u_a, false);
            let (loss, g) = self.net.pass_loss(&x.ba, Values::Store { grad: false }, &z, Wrt::Alpha)?;
            (g, loss.detach())
        } else {
            self.second_order_grad(x, b, scalars)?
        };
        self.last_alpha_grad = Some(g.copy());
        Ok((g, val))
    }

    /// d_alpha L_val(w', alpha) - xi * (d_alpha L_train(w+) - d_alpha L_train(w-)) / (2 eps), with
    /// w' one virtual AdamW step and w± = w ± eps dw', eps = 0.01 / ||dw'||. Every pass reads its values
    /// (w, w', w±) directly: the store is never rewritten.
    fn second_order_grad(
        &mut self,
        x: &Inputs,
        b: &Tensor,
        (coef_w, xi): (&Tensor, &Tensor),
    ) -> Result<(Tensor, Tensor)> {
        let (bw, ba, u) = (&x.bw, &x.ba, &x.u_a);
        let net = &*self.net;
        let k = net.candidates.len() as i64;
        // (1) virtual step from a copy of the real optimiser state
        let z = net.gates(b, u, true);
        let (_, g) = net.pass_loss(bw, Values::Store { grad: true }, &z, Wrt::Values)?;
        let w_prime = self.w_opt.virtual_with(&net.model.store, &g, coef_w).set_requires_grad(true);
        // (2) d L_val(w', alpha) wrt alpha and w'
        let z = net.gates(b, u, false);
        let (val_loss, both) = net.pass_loss(ba, Values::Given(&w_prime), &z, Wrt::Both)?;
        let (d_alpha, dw) = (both.narrow(0, 0, k), both.narrow(0, k, both.size()[0] - k));
        let eps = tch::no_grad(|| 0.01 / dw.norm().clamp_min(1e-12)); // 0-d, on the device
        let w0 = net.model.store.flat().detach();
        let step = tch::no_grad(|| &dw * &eps);
        // (3), (4) d L_train(w +- eps dw', alpha) wrt alpha only: one pass over both, or two
        let diff = if self.replicas {
            let values = tch::no_grad(|| Tensor::stack(&[&w0 + &step, &w0 - &step], 0));
            net.replica_diff_grad(bw, &values, &net.gates(b, u, false))?
        } else {
            let side = |sign: f64| -> Result<Tensor> {
                let moved = tch::no_grad(|| &w0 + &step * sign);
                Ok(net.pass_loss(bw, Values::Given(&moved), &net.gates(b, u, false), Wrt::Alpha)?.1)
            };
            let plus = side(1.0)?;
            plus - side(-1.0)?
        };
        let term = tch::no_grad(|| diff / (&eps * 2.0) * xi);
        let g = tch::no_grad(|| &d_alpha - &term);
        self.last_hessian_term = Some(term);
        Ok((g, val_loss.detach()))
    }

    /// The w step's loss and flat gradient on `bw` with the gates of shift `b` (detached) and noise `u`.
    fn w_grad(&self, bw: &Batch, b: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)> {
        let z = self.net.gates(b, u, true);
        let (loss, g) = self.net.pass_loss(bw, Values::Store { grad: true }, &z, Wrt::Values)?;
        Ok((loss.detach(), g))
    }

    /// The step with a decision per update on the host (`--skip-nonfinite`): [`guarded_step`] skips an
    /// update whose loss, gradient norm or new parameters are not finite, leaving its parameters and
    /// optimiser as they were; a shift that does not converge stops the search.
    fn step_host_guarded(&mut self, x: &Inputs, (lr_w, lr_a): (f64, f64), step: usize) -> Result<StepOut> {
        let (bw, u_w) = (&x.bw, &x.u_w);
        let device = self.net.model.device;
        let coef_v = AdamW::coef_tensor(&self.w_opt.coefs(self.w_opt.step + 1, lr_w), device);
        let xi = upload(&Tensor::from_slice(&[lr_w as f32]), device);
        let at =
            |what: &str| format!("search step {step} ({what} update); the last search checkpoint is kept");
        let b = self.host_solve(step)?;
        let (g, val) = self.alpha_grad(x, &b, (&coef_v, &xi))?;
        let norm = clip_grad_norm(&g, self.cfg.clip_norm).double_value(&[]);
        let lv = val.double_value(&[]);
        let store = &self.net.alpha_store;
        guarded_step(store, &mut self.a_opt, Some(&g), (lv, norm), lr_a, true, &|| at("alpha"))?;
        let b = self.host_solve(step)?;
        let (loss, g) = self.w_grad(bw, &b, u_w)?;
        let v = loss.double_value(&[]);
        let (g, norm) = if v.is_finite() {
            let norm = clip_grad_norm(&g, self.cfg.clip_norm).double_value(&[]);
            (Some(g), norm)
        } else {
            (None, f64::NAN)
        };
        let store = &self.net.model.store;
        guarded_step(store, &mut self.w_opt, g.as_ref(), (v, norm), lr_w, true, &|| at("w"))?;
        Ok(StepOut { val_loss: val, train_loss: loss })
    }

    /// The device shift, its residual checked on the host (the `--skip-nonfinite` path).
    fn host_solve(&mut self, step: usize) -> Result<Tensor> {
        let (b, res) = self.net.solve()?;
        let r = res.double_value(&[]);
        if r.is_finite() && r <= super::gates::SHIFT_TOL {
            return Ok(b);
        }
        Err(Error::Budget(format!(
            "the sigmoid shift did not converge at search step {step} (relative residual {r:e})"
        )))
    }
}
