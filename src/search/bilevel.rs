//! Bi-level optimisation of the delta weights w (on D_w) and the structure logits alpha (on D_alpha),
//! first order or the paper's second order (DARTS: virtual AdamW step + finite-difference
//! Hessian-vector product). Only the deltas are ever copied; the frozen backbone is shared.
use super::gates::{gate_probs, relax, solve_shift};
use crate::artifact;
use crate::batch::Batch;
use crate::checkpoint::{self, LoopState};
use crate::data::TaskSpec;
use crate::delta::{Ctx, Gates, ModuleSpec};
use crate::error::{Error, Result};
use crate::guard::guarded_step;
use crate::model::Model;
use crate::optim::{clip_grad_norm, linear_lr, AdamW, AdamWConfig};
use crate::params::flat_grads;
use crate::params::ParamStore;
use crate::tokenize::Encoded;
use crate::train::{encoded_len, epoch_order_bucketed, eval_due, evaluate, primary, Metrics};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// 1: first order (2 passes a step); 2: DARTS second order (5 passes a step).
    pub order: u8,
    pub w_lr: f64,
    /// AdamW weight decay of the delta weights w (the structure logits have none, as the paper).
    pub weight_decay: f64,
    /// Linear warm-up of w's learning rate over this fraction of the steps (alpha's has none).
    pub warmup_ratio: f64,
    /// Skip a step whose loss, gradient or updated parameters are not finite instead of stopping.
    pub skip_nonfinite: bool,
    pub alpha_lr: f64,
    pub clip_norm: f64,
    pub beta: f64,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub eval_every: Option<usize>,
    pub seed: u64,
    /// Batches per length bucket (0: off); see `train::epoch_order_bucketed`.
    pub length_buckets: usize,
}

impl SearchConfig {
    /// The paper's optimiser (w AdamW lr 3e-4, alpha lr 0.1, clip 2.0, no weight decay or warm-up, beta 1)
    /// for `order` with batches of `batch_size`, one epoch, seed 0.
    pub fn paper(order: u8, batch_size: usize) -> Self {
        SearchConfig {
            order,
            w_lr: 3e-4,
            weight_decay: 0.0,
            warmup_ratio: 0.0,
            skip_nonfinite: false,
            alpha_lr: 0.1,
            clip_norm: 2.0,
            beta: 1.0,
            epochs: 1,
            max_steps: None,
            batch_size,
            eval_batch_size: batch_size,
            eval_every: None,
            seed: 0,
            length_buckets: 0,
        }
    }
}

/// The supernet: every candidate behind a gate, its logits alpha and the budget.
pub struct Supernet {
    pub model: Model,
    pub candidates: Vec<ModuleSpec>,
    pub budget: i64,
    pub alpha_store: ParamStore,
    pub alpha: Tensor,
    n: Vec<f64>,
    shift: Option<f64>,
    /// The shift is valid for the current alpha (no host round trip until alpha changes).
    shift_fresh: bool,
    beta: f64,
}

impl Supernet {
    pub fn new(model: Model, candidates: Vec<ModuleSpec>, budget: i64, beta: f64) -> Self {
        let mut alpha_store = ParamStore::new(model.device);
        let k = candidates.len() as i64;
        let alpha = alpha_store.add("alpha", Tensor::zeros([k], (Kind::Float, model.device)));
        let n = candidates.iter().map(|c| c.params.unwrap_or(0) as f64).collect();
        Supernet { model, candidates, budget, alpha_store, alpha, n, shift: None, shift_fresh: false, beta }
    }

    pub fn alpha_values(&self) -> Result<Vec<f64>> {
        to_vec(&self.alpha, "alpha")
    }

    /// Solves the shift for the current alpha (warm-started; once per alpha value) and returns p
    /// (carrying alpha's gradient).
    pub fn probs(&mut self) -> Result<Tensor> {
        let b = match (self.shift_fresh, self.shift) {
            (true, Some(b)) => b,
            _ => {
                let b =
                    solve_shift(&self.alpha_values()?, &self.n, self.budget as f64, self.beta, self.shift)?;
                (self.shift, self.shift_fresh) = (Some(b), true);
                b
            }
        };
        Ok(gate_probs(&self.alpha, b, self.beta))
    }

    /// Call after alpha is written: the next [`Supernet::probs`] solves the shift again.
    pub fn alpha_changed(&mut self) {
        self.shift_fresh = false;
    }

    pub fn shift(&self) -> Option<f64> {
        self.shift
    }

    /// Restores alpha and the shift solved for it (a resumed search continues bit-identically).
    pub fn restore(&mut self, alpha: &Tensor, shift: Option<f64>) {
        tch::no_grad(|| self.alpha.shallow_clone().copy_(alpha));
        (self.shift, self.shift_fresh) = (shift, shift.is_some());
    }

    pub fn loss(&self, b: &Batch, z: &Tensor) -> Tensor {
        self.model.loss(b, &Ctx::gated(true, &Gates::new(z)))
    }
}

/// A 1-d tensor's values on the host; `what` names it in the error.
fn to_vec(t: &Tensor, what: &str) -> Result<Vec<f64>> {
    Vec::<f64>::try_from(&t.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu))
        .map_err(|e| Error::Tensor { key: what.into(), msg: format!("cannot read back: {e}") })
}

fn check(v: f64, what: &str, step: usize) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::Train(format!("non-finite {what} ({v}) at search step {step}")))
    }
}

/// One search step's optimisers and noise.
pub struct Stepper<'a> {
    pub net: &'a mut Supernet,
    pub w_opt: AdamW,
    pub a_opt: AdamW,
    /// The gradient that reached alpha in the last alpha step, before clipping.
    pub last_alpha_grad: Option<Tensor>,
    /// The finite-difference Hessian-vector term the last second-order step subtracted from it.
    pub last_hessian_term: Option<Tensor>,
    rng: rand_chacha::ChaCha8Rng,
    cfg: SearchConfig,
}

impl<'a> Stepper<'a> {
    pub fn new(net: &'a mut Supernet, cfg: &SearchConfig) -> Self {
        let w_opt = AdamW::new(&net.model.store, AdamWConfig::new(cfg.w_lr, cfg.weight_decay));
        let a_opt = AdamW::new(&net.alpha_store, AdamWConfig::new(cfg.alpha_lr, 0.0));
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x005E_ED0F_A1FA);
        Stepper { net, w_opt, a_opt, last_alpha_grad: None, last_hessian_term: None, rng, cfg: cfg.clone() }
    }

    /// Re-seeds the noise generator and libtorch's (dropout) from (seed, step): a step draws the same
    /// numbers whatever happened before it, so a resumed search repeats an uninterrupted one.
    pub fn seed_step(&mut self, step: usize) {
        let s = crate::train::step_seed(self.cfg.seed ^ 0x005E_ED0F_A1FA, step);
        self.rng = rand_chacha::ChaCha8Rng::seed_from_u64(s as u64);
        tch::manual_seed(crate::train::step_seed(self.cfg.seed, step));
    }

    /// u ~ U(0, 1), one per candidate, from the search's seeded generator.
    fn noise(&mut self) -> Tensor {
        let k = self.net.candidates.len();
        let u: Vec<f32> = (0..k).map(|_| self.rng.gen_range(1e-6f32..1.0 - 1e-6)).collect();
        Tensor::from_slice(&u).to_device(self.net.model.device)
    }

    /// The alpha update on a D_alpha batch (`ba`); second order also uses the D_w batch (`bw`).
    /// `xi` is the current w learning rate. Returns the validation loss (a 0-d tensor: reading it
    /// would wait for the device).
    pub fn alpha_step(&mut self, bw: &Batch, ba: &Batch, xi: f64, lr_a: f64) -> Result<Tensor> {
        let u = self.noise();
        self.alpha_step_with(bw, ba, &u, xi, lr_a)
    }

    /// [`Stepper::alpha_step`] with the step's shared noise `u` given.
    pub fn alpha_step_with(
        &mut self,
        bw: &Batch,
        ba: &Batch,
        u: &Tensor,
        xi: f64,
        lr_a: f64,
    ) -> Result<Tensor> {
        let (g, val) = if self.cfg.order == 1 {
            let z = relax(&self.net.probs()?, u);
            let loss = self.net.loss(ba, &z);
            (flat_grads(&loss, &[&self.net.alpha]), loss.detach())
        } else {
            self.second_order_grad(bw, ba, u, xi)?
        };
        self.last_alpha_grad = Some(g.copy());
        let norm = clip_grad_norm(&g, self.cfg.clip_norm).double_value(&[]);
        let lv = val.double_value(&[]);
        let at = || "a search step (alpha update); the last search checkpoint is kept".to_string();
        let store = &self.net.alpha_store;
        guarded_step(store, &mut self.a_opt, Some(&g), (lv, norm), lr_a, self.cfg.skip_nonfinite, &at)?;
        self.net.alpha_changed();
        Ok(val)
    }

    /// d_alpha L_val(w', alpha) - xi * (d_alpha L_train(w+) - d_alpha L_train(w-)) / (2 eps), with
    /// w' one virtual AdamW step and w± = w ± eps dw', eps = 0.01 / ||dw'||. All on flat buffers, no
    /// host round trip.
    fn second_order_grad(&mut self, bw: &Batch, ba: &Batch, u: &Tensor, xi: f64) -> Result<(Tensor, Tensor)> {
        let k = self.net.candidates.len() as i64;
        // (1) virtual step from a copy of the real optimiser state
        let z = relax(&self.net.probs()?.detach(), u);
        let g = self.net.model.store.grads(&self.net.loss(bw, &z));
        let w_prime = self.w_opt.virtual_values(&self.net.model.store, &g, xi);
        let w0 = self.net.model.store.snapshot();
        self.net.model.store.restore(&w_prime);
        // (2) d L_val(w', alpha) wrt alpha and w'
        let z = relax(&self.net.probs()?, u);
        let val_loss = self.net.loss(ba, &z);
        let mut inputs: Vec<&Tensor> = vec![&self.net.alpha];
        inputs.extend(self.net.model.store.entries().iter().map(|(_, t)| t));
        let both = flat_grads(&val_loss, &inputs);
        let (d_alpha, dw) = (both.narrow(0, 0, k), both.narrow(0, k, both.size()[0] - k));
        let eps = tch::no_grad(|| 0.01 / dw.norm().clamp_min(1e-12)); // 0-d, on the device
                                                                      // (3), (4) d L_train(w +- eps dw', alpha) wrt alpha only
        let mut side = |sign: f64| -> Result<Tensor> {
            let moved = tch::no_grad(|| &w0 + &dw * &eps * sign);
            self.net.model.store.restore(&moved);
            let z = relax(&self.net.probs()?, u);
            Ok(flat_grads(&self.net.loss(bw, &z), &[&self.net.alpha]))
        };
        let plus = side(1.0);
        let minus = side(-1.0);
        self.net.model.store.restore(&w0);
        let (plus, minus) = (plus?, minus?);
        let term = tch::no_grad(|| (plus - minus) / (&eps * 2.0) * xi);
        let g = tch::no_grad(|| &d_alpha - &term);
        self.last_hessian_term = Some(term);
        Ok((g, val_loss.detach()))
    }

    /// The weight update on a D_w batch with fresh noise; returns the training loss.
    pub fn w_step(&mut self, bw: &Batch, lr_w: f64, step: usize) -> Result<f64> {
        let u = self.noise();
        self.w_step_with(bw, &u, lr_w, step)
    }

    /// [`Stepper::w_step`] with the noise `u` given; behind the non-finite guard.
    pub fn w_step_with(&mut self, bw: &Batch, u: &Tensor, lr_w: f64, step: usize) -> Result<f64> {
        let z = relax(&self.net.probs()?.detach(), u);
        let loss = self.net.loss(bw, &z);
        let v = loss.double_value(&[]);
        let (g, norm) = if v.is_finite() {
            let g = self.net.model.store.grads(&loss);
            let norm = clip_grad_norm(&g, self.cfg.clip_norm).double_value(&[]);
            (Some(g), norm)
        } else {
            (None, f64::NAN)
        };
        let at = || format!("search step {step} (w update); the last search checkpoint is kept");
        let store = &self.net.model.store;
        guarded_step(store, &mut self.w_opt, g.as_ref(), (v, norm), lr_w, self.cfg.skip_nonfinite, &at)?;
        Ok(v)
    }
}

pub struct SearchOutcome {
    pub best_alpha: Vec<f64>,
    pub best_p: Vec<f64>,
    pub best_step: usize,
    pub best_dev: Metrics,
    pub steps: usize,
    /// Seconds of search over every attempt (a resumed search adds its earlier attempts').
    pub seconds: f64,
    /// Seconds of this attempt alone.
    pub attempt_seconds: f64,
    pub final_alpha: Vec<f64>,
    pub final_p: Vec<f64>,
}

/// Where a search starts and what it saves: `search_checkpoint.safetensors` in `out` at every evaluation,
/// every `checkpoint_every` steps and on SIGINT; `resume` continues from it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchLoop {
    pub resume: bool,
    pub checkpoint_every: Option<usize>,
    pub quiet: bool,
}

pub const SEARCH_CHECKPOINT: &str = "search_checkpoint.safetensors";

/// The data of a search: the two halves of the training set and the dev split.
pub struct SearchData<'a> {
    pub d_w: &'a [Encoded],
    pub d_alpha: &'a [Encoded],
    pub dev: &'a [Encoded],
    pub spec: &'a TaskSpec,
}

/// Where the loop stands: position, best dev score, the best alpha and its dev metrics.
struct Progress {
    ls: LoopState,
    best_alpha: Vec<f64>,
    best_dev: Metrics,
}

/// Restores a search checkpoint into the stepper (cutting alphas.jsonl back to it), or starts afresh.
fn start_search(st: &mut Stepper, ckpt: &Path, log: &Path, resume: bool) -> Result<Progress> {
    if !(resume && ckpt.is_file()) {
        let _ = std::fs::remove_file(log);
        let ls = LoopState { step: 0, best: f64::NEG_INFINITY, best_step: 0, seconds: 0.0 };
        return Ok(Progress { ls, best_alpha: Vec::new(), best_dev: Metrics::new() });
    }
    let (w_store, a_store) = (&st.net.model.store, &st.net.alpha_store);
    let (ls, extra) = checkpoint::load(
        ckpt,
        &mut [("w", w_store, &mut st.w_opt), ("alpha", a_store, &mut st.a_opt)],
        &["best_alpha", "shift"],
    )?;
    let shift = extra[1].double_value(&[0]);
    let alpha = st.net.alpha.detach().copy();
    st.net.restore(&alpha, shift.is_finite().then_some(shift));
    let best_alpha = to_vec(&extra[0], "extra.best_alpha")?;
    checkpoint::truncate_log(log, ls.step)?;
    let best_dev = checkpoint::logged_metrics(log, ls.best_step, "dev", None);
    tracing::info!(step = ls.step, best_step = ls.best_step, "search resumed from {}", ckpt.display());
    Ok(Progress { ls, best_alpha, best_dev })
}

/// Writes the search checkpoint: both stores and optimisers, the loop state, the best alpha, the shift.
fn save_search(st: &Stepper, pr: &Progress, ckpt: &Path) -> Result<()> {
    let best = if pr.best_alpha.is_empty() {
        Tensor::zeros([0], (Kind::Double, tch::Device::Cpu))
    } else {
        Tensor::from_slice(&pr.best_alpha)
    };
    let shift = Tensor::from_slice(&[st.net.shift().unwrap_or(f64::NAN)]);
    checkpoint::save(
        ckpt,
        &[("w", &st.net.model.store, &st.w_opt), ("alpha", &st.net.alpha_store, &st.a_opt)],
        &pr.ls,
        &[("best_alpha", best), ("shift", shift)],
    )
}

/// Evaluates dev with z = p, logs alpha and p to alphas.jsonl and keeps the best alpha (ties: later).
fn evaluate_search(
    st: &mut Stepper,
    pr: &mut Progress,
    data: &SearchData,
    log: &Path,
    losses: (f64, &Tensor),
    epoch: usize,
) -> Result<()> {
    let lv = check(losses.1.double_value(&[]), "validation loss", pr.ls.step)?;
    let p = tch::no_grad(|| st.net.probs())?;
    let dev_m = evaluate(
        &st.net.model,
        data.dev,
        data.spec,
        st.cfg.eval_batch_size,
        &Ctx::gated(false, &Gates::new(&p)),
    )?;
    let (alpha, pv) = (st.net.alpha_values()?, to_vec(&p, "p")?);
    let line = json!({"step": pr.ls.step, "epoch": epoch + 1, "train_loss": losses.0, "val_loss": lv,
                      "shift": st.net.shift(), "dev": dev_m, "alpha": alpha, "p": pv});
    artifact::append_line(log, &line.to_string())?;
    let score = primary(data.spec, &dev_m);
    if score >= pr.ls.best {
        (pr.ls.best, pr.ls.best_step, pr.best_alpha, pr.best_dev) = (score, pr.ls.step, alpha, dev_m);
    }
    Ok(())
}

/// The epoch's batch orders of D_w and D_alpha, cut to the shorter half's length `n`.
fn epoch_orders(data: &SearchData, cfg: &SearchConfig, epoch: usize, n: usize) -> (Vec<usize>, Vec<usize>) {
    let bs = cfg.batch_size.max(1);
    let order = |d: &[Encoded], seed: u64| -> Vec<usize> {
        let len = |j: usize| encoded_len(&d[j]);
        epoch_order_bucketed(d.len(), seed, epoch, bs, cfg.length_buckets, len).into_iter().take(n).collect()
    };
    (order(data.d_w, cfg.seed), order(data.d_alpha, cfg.seed ^ 0xA1FA))
}

/// Runs the bi-level search; writes `alphas.jsonl` (alpha and p of every candidate at each evaluation)
/// under `out`. Evaluates dev with z = p every `eval_every` steps and at each epoch's end; keeps the alpha
/// of the best dev score (ties: later wins).
pub fn search(
    net: &mut Supernet,
    data: &SearchData,
    cfg: &SearchConfig,
    out: &Path,
    lo: SearchLoop,
) -> Result<SearchOutcome> {
    let n = data.d_w.len().min(data.d_alpha.len());
    let bs = cfg.batch_size.max(1);
    let per_epoch = n.div_ceil(bs);
    if per_epoch == 0 {
        return Err(Error::Train("too few training examples to split into D_w and D_alpha".into()));
    }
    let total = cfg.max_steps.unwrap_or(per_epoch * cfg.epochs).max(1);
    let warmup = (cfg.warmup_ratio * total as f64).round() as i64;
    let (log, ckpt) = (out.join("alphas.jsonl"), out.join(SEARCH_CHECKPOINT));
    let device = net.model.device;
    let mut st = Stepper::new(net, cfg);
    let mut pr = start_search(&mut st, &ckpt, &log, lo.resume)?;
    let (start, before) = (Instant::now(), pr.ls.seconds);
    let bar = crate::progress::bar(total as u64, "search", lo.quiet);
    bar.set_position(pr.ls.step as u64);
    let mut orders: (usize, Vec<usize>, Vec<usize>) = (usize::MAX, Vec::new(), Vec::new());
    while pr.ls.step < total {
        pr.ls.seconds = before + start.elapsed().as_secs_f64();
        checkpoint::stop_if_interrupted("search", pr.ls.step, &ckpt, || save_search(&st, &pr, &ckpt))?;
        let (epoch, i) = (pr.ls.step / per_epoch, pr.ls.step % per_epoch);
        if orders.0 != epoch {
            let (w, a) = epoch_orders(data, cfg, epoch, n);
            orders = (epoch, w, a);
        }
        let range = i * bs..((i + 1) * bs).min(n);
        let pick = |d: &[Encoded], order: &[usize]| {
            Batch::new(&order[range.clone()].iter().map(|&j| &d[j]).collect::<Vec<_>>(), device)
        };
        let (bw, ba) = (pick(data.d_w, &orders.1), pick(data.d_alpha, &orders.2));
        let lr_w = linear_lr(cfg.w_lr, pr.ls.step as i64, warmup, total as i64);
        let lr_a = linear_lr(cfg.alpha_lr, pr.ls.step as i64, 0, total as i64);
        st.seed_step(pr.ls.step);
        let stopped = |e: Error| stopped_at(e, pr.ls.step, &ckpt);
        let val = st.alpha_step(&bw, &ba, lr_w, lr_a).map_err(stopped)?;
        let lt = st.w_step(&bw, lr_w, pr.ls.step).map_err(stopped)?;
        pr.ls.step += 1;
        bar.set_position(pr.ls.step as u64);
        bar.set_message(format!("epoch {} train {lt:.4}", epoch + 1));
        let eval_now = eval_due(pr.ls.step, cfg.eval_every, per_epoch, total);
        if eval_now {
            evaluate_search(&mut st, &mut pr, data, &log, (lt, &val), epoch)?;
        }
        if eval_now || lo.checkpoint_every.is_some_and(|c| pr.ls.step.is_multiple_of(c)) {
            pr.ls.seconds = before + start.elapsed().as_secs_f64();
            save_search(&st, &pr, &ckpt)?;
        }
    }
    bar.finish_and_clear();
    finish_search(&mut st, pr, (before, start.elapsed().as_secs_f64()))
}

/// A step's error with where the search stopped and what it keeps (a non-finite value, or a shift that
/// no longer converges because the structure logits ran off: lower --alpha-lr).
fn stopped_at(e: Error, step: usize, ckpt: &Path) -> Error {
    match e {
        Error::Train(m) => Error::Train(m),
        e => Error::Train(format!(
            "{e} at search step {step}; the last search checkpoint ({}) is kept",
            ckpt.display()
        )),
    }
}

/// The outcome: the best alpha and its p (the shift solved again for it), the final alpha and p.
fn finish_search(st: &mut Stepper, pr: Progress, (before, attempt): (f64, f64)) -> Result<SearchOutcome> {
    let final_alpha = st.net.alpha_values()?;
    let final_p = to_vec(&tch::no_grad(|| st.net.probs())?, "p")?;
    if pr.best_alpha.len() != st.net.candidates.len() {
        return Err(Error::Train("the search ended without a dev evaluation".into()));
    }
    let b = solve_shift(&pr.best_alpha, &st.net.n, st.net.budget as f64, st.net.beta, st.net.shift)?;
    let best_p = pr.best_alpha.iter().map(|a| 1.0 / (1.0 + (-(a - b) / st.net.beta).exp())).collect();
    Ok(SearchOutcome {
        best_alpha: pr.best_alpha,
        best_p,
        best_step: pr.ls.best_step,
        best_dev: pr.best_dev,
        steps: pr.ls.step,
        seconds: before + attempt,
        attempt_seconds: attempt,
        final_alpha,
        final_p,
    })
}
