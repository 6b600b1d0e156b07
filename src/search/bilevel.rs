//! Bi-level optimisation of the delta weights w (on D_w) and the structure logits alpha (on D_alpha),
//! first order or the paper's second order (DARTS: virtual AdamW step + finite-difference
//! Hessian-vector product). Only the deltas are ever copied; the frozen backbone is shared.
use super::gates::solve_shift;
use super::graphs::graphs_wanted;
pub use super::stepper::{StepOut, Stepper};
use super::supernet::to_vec;
pub use super::supernet::Supernet;
use crate::artifact;
use crate::checkpoint::{self, LoopState};
use crate::data::TaskSpec;
use crate::delta::{Ctx, Gates};
use crate::error::{Error, Result};
use crate::model::Values;
use crate::optim::linear_lr;
use crate::tokenize::Encoded;
use crate::train::{encoded_len, epoch_order_bucketed, eval_due, evaluate, primary, Metrics};
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
    /// Batch lengths padded up to a multiple of this (None: [`crate::step_graphs::GRAPH_PAD_MULTIPLE`]
    /// when the steps run as CUDA graphs, else none), at most `max_length`.
    pub pad_to_multiple: Option<usize>,
    pub max_length: usize,
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
            pad_to_multiple: None,
            max_length: 128,
        }
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
    /// How this attempt's steps ran as CUDA graphs (`None`: graphs off).
    pub graphs: Option<super::graphs::GraphTally>,
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
    // the shift is solved again from alpha (the checkpoint's `shift` is for readers)
    let alpha = st.net.alpha.detach().copy();
    st.net.restore(&alpha);
    let best_alpha = to_vec(&extra[0], "extra.best_alpha")?;
    checkpoint::truncate_log(log, ls.step)?;
    let best_dev = checkpoint::logged_metrics(log, ls.best_step, "dev", None);
    tracing::info!(step = ls.step, best_step = ls.best_step, "search resumed from {}", ckpt.display());
    Ok(Progress { ls, best_alpha, best_dev })
}

/// Writes the search checkpoint: both stores and optimisers, the loop state, the best alpha, the shift;
/// after the non-finite guard's check (a bad step since the last check fails here, before anything is
/// written).
fn save_search(st: &mut Stepper, pr: &Progress, ckpt: &Path) -> Result<()> {
    st.check_guard()?;
    let best = if pr.best_alpha.is_empty() {
        Tensor::zeros([0], (Kind::Double, tch::Device::Cpu))
    } else {
        Tensor::from_slice(&pr.best_alpha)
    };
    let shift = Tensor::from_slice(&[st.net.shift()?.unwrap_or(f64::NAN)]);
    checkpoint::save(
        ckpt,
        &[("w", &st.net.model.store, &st.w_opt), ("alpha", &st.net.alpha_store, &st.a_opt)],
        &pr.ls,
        &[("best_alpha", best), ("shift", shift)],
    )
}

/// Evaluates dev with z = p, logs alpha and p to alphas.jsonl and keeps the best alpha (ties: later);
/// first the non-finite guard's check of the steps since the last one.
fn evaluate_search(
    st: &mut Stepper,
    pr: &mut Progress,
    data: &SearchData,
    log: &Path,
    out: &StepOut,
    epoch: usize,
) -> Result<()> {
    st.check_guard()?;
    // the last step's losses (null in alphas.jsonl when --skip-nonfinite skipped that step's batch)
    let train_loss = out.train_loss.double_value(&[]);
    let lv = out.val_loss.double_value(&[]);
    let p = tch::no_grad(|| st.net.probs())?;
    // every parameter read once through a pass gated by p (the reference path when there is none)
    let gates = match st.net.model.pass(Values::Store { grad: false }, Some(&p))? {
        Some(pass) => Gates::pass(pass),
        None => Gates::new(&p),
    };
    let dev_m = tch::no_grad(|| {
        evaluate(&st.net.model, data.dev, data.spec, st.cfg.eval_batch_size, &Ctx::gated(false, &gates))
    })?;
    let (alpha, pv) = (st.net.alpha_values()?, to_vec(&p, "p")?);
    let line = json!({"step": pr.ls.step, "epoch": epoch + 1, "train_loss": train_loss, "val_loss": lv,
                      "shift": st.net.shift()?, "dev": dev_m, "alpha": alpha, "p": pv});
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
    if st.use_cuda_graphs(graphs_wanted()?)? {
        tracing::info!("search steps run as CUDA graphs (S3PET_CUDA_GRAPHS=off turns them off)");
    }
    let mut pr = start_search(&mut st, &ckpt, &log, lo.resume)?;
    let (start, before) = (Instant::now(), pr.ls.seconds);
    let bar = crate::progress::bar(total as u64, "search", lo.quiet);
    bar.set_position(pr.ls.step as u64);
    let mut orders: (usize, Vec<usize>, Vec<usize>) = (usize::MAX, Vec::new(), Vec::new());
    let pad = crate::step_graphs::padding(cfg.pad_to_multiple, st.graph_shapes().is_some(), cfg.max_length);
    while pr.ls.step < total {
        pr.ls.seconds = before + start.elapsed().as_secs_f64();
        checkpoint::stop_if_interrupted("search", pr.ls.step, &ckpt, || save_search(&mut st, &pr, &ckpt))?;
        let (epoch, i) = (pr.ls.step / per_epoch, pr.ls.step % per_epoch);
        if orders.0 != epoch {
            let (w, a) = epoch_orders(data, cfg, epoch, n);
            orders = (epoch, w, a);
        }
        let range = i * bs..((i + 1) * bs).min(n);
        let pick = |d: &[Encoded], order: &[usize]| {
            crate::dist::shard_batch(
                &order[range.clone()].iter().map(|&j| &d[j]).collect::<Vec<_>>(),
                device,
                pad,
            )
        };
        let (bw, ba) = (pick(data.d_w, &orders.1), pick(data.d_alpha, &orders.2));
        let lr_w = linear_lr(cfg.w_lr, pr.ls.step as i64, warmup, total as i64);
        let lr_a = linear_lr(cfg.alpha_lr, pr.ls.step as i64, 0, total as i64);
        st.seed_step(pr.ls.step);
        let stopped = |e: Error| stopped_at(e, pr.ls.step, &ckpt);
        let out = st.step(&bw, &ba, (lr_w, lr_a), pr.ls.step).map_err(stopped)?;
        pr.ls.step += 1;
        bar.set_position(pr.ls.step as u64);
        let eval_now = eval_due(pr.ls.step, cfg.eval_every, per_epoch, total);
        if eval_now {
            evaluate_search(&mut st, &mut pr, data, &log, &out, epoch)?;
            bar.set_message(format!("epoch {} train {:.4}", epoch + 1, out.train_loss.double_value(&[])));
        }
        if eval_now || lo.checkpoint_every.is_some_and(|c| pr.ls.step.is_multiple_of(c)) {
            pr.ls.seconds = before + start.elapsed().as_secs_f64();
            save_search(&mut st, &pr, &ckpt)?;
        }
    }
    bar.finish_and_clear();
    st.check_guard()?;
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
    let b = solve_shift(&pr.best_alpha, &st.net.n, st.net.budget as f64, st.net.beta, st.net.shift()?)?;
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
        graphs: st.graph_tally(),
    })
}
