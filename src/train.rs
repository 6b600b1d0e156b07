//! The training loop shared by `train` and `retrain`: AdamW, linear decay with optional warm-up,
//! gradient clipping, evaluation every K steps, best-dev selection, test evaluation.
use crate::artifact;
use crate::batch::{batches, Batch};
use crate::checkpoint::{self, LoopState};
use crate::config::{RunConfig, Source};
use crate::data::{load_run_data, Provenance, TaskData, TaskSpec};
use crate::delta::Ctx;
use crate::error::{Error, Result};
use crate::guard::{DeviceGuard, Slot};
use crate::model::Model;
use crate::optim::{clip_grad_norm, linear_lr, AdamW, AdamWConfig};
use crate::tokenize::{Encoded, TextEncoder};
use crate::train_graphs::TrainSteps;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::Tensor;

pub type Metrics = BTreeMap<String, f64>;

/// A task's splits, tokenised.
pub struct Prepared {
    pub spec: TaskSpec,
    pub train: Vec<Encoded>,
    pub dev: Vec<Encoded>,
    pub test: Vec<Encoded>,
    /// What the examples were read from (saved as `data` in the run's config.json).
    pub provenance: Provenance,
}

/// The task's splits as a run sees them: split with the run's seed, then cut to
/// `max_train_examples` / `max_eval_examples`; and the record of the files read.
pub fn load_examples(cfg: &RunConfig) -> Result<(TaskData, Provenance)> {
    let spec = TaskSpec::resolve(&cfg.task)?;
    let (mut data, provenance) = load_run_data(&spec, cfg.data_dir.as_deref(), cfg.data.as_ref(), cfg.seed)?;
    if let Some(n) = cfg.max_train_examples {
        data.train.truncate(n);
    }
    if let Some(n) = cfg.max_eval_examples {
        data.dev.truncate(n);
        data.test.truncate(n);
    }
    Ok((data, provenance))
}

pub fn prepare(cfg: &RunConfig, tokenizer: &Path) -> Result<Prepared> {
    let (TaskData { spec, train, dev, test }, provenance) = load_examples(cfg)?;
    let enc = TextEncoder::load(tokenizer, cfg.max_length)?;
    let (train, dev, test) = (enc.encode(&train)?, enc.encode(&dev)?, enc.encode(&test)?);
    Ok(Prepared { train, dev, test, spec, provenance })
}

/// [`prepare`] with the tokenizer of `md`; for an encoder-decoder every example first becomes one
/// source string (crate::text2text).
pub fn prepare_model(cfg: &RunConfig, md: &crate::model::ModelDir) -> Result<Prepared> {
    let explicit = !matches!(cfg.source("max_length"), Source::Default | Source::Task);
    let max_length = md.max_length(cfg.max_length, explicit);
    if md.cfg.is_causal_lm() {
        return crate::prompt::prepare(&RunConfig { max_length, ..cfg.clone() }, md);
    }
    if !md.cfg.is_t5() {
        return prepare(&RunConfig { max_length, ..cfg.clone() }, &md.tokenizer_path());
    }
    let (TaskData { spec, train, dev, test }, provenance) = load_examples(cfg)?;
    let enc = TextEncoder::load(&md.tokenizer_path(), max_length)?;
    let split = |v: Vec<crate::data::Example>| enc.encode(&crate::text2text::to_sources(&spec, v));
    let (train, dev, test) = (split(train)?, split(dev)?, split(test)?);
    Ok(Prepared { train, dev, test, spec, provenance })
}

/// Metrics of `model` on `data` (in order, no dropout), with the gates `ctx` carries.
pub fn evaluate(model: &Model, data: &[Encoded], spec: &TaskSpec, bs: usize, ctx: &Ctx) -> Result<Metrics> {
    if data.is_empty() {
        return Err(Error::Train("cannot evaluate on an empty split".into()));
    }
    if let Some((llama, p)) = model.causal().filter(|(_, p)| p.kind == crate::data::TaskKind::Generation) {
        let mut m = crate::causal::evaluate_generation(llama, p, data, bs)?;
        m.retain(|k, _| spec.metrics.contains(k));
        return Ok(m);
    }
    let preds = predict_sharded(model, data, bs, ctx)?;
    let golds: Vec<_> = data.iter().map(|e| e.target).collect();
    let groups: Vec<Option<String>> = data.iter().map(|e| e.group.clone()).collect();
    crate::metrics::compute(&spec.metrics, &preds, &golds, Some(&groups))
}

/// Predictions of every example of `data`, in order. In a launched world each rank predicts its part
/// (crate::dist::part) and the parts are gathered on every rank.
fn predict_sharded(
    model: &Model,
    data: &[Encoded],
    bs: usize,
    ctx: &Ctx,
) -> Result<Vec<crate::data::Target>> {
    let w = crate::dist::current();
    let range =
        if w.is_distributed() { crate::dist::part(data.len(), w.rank, w.size) } else { 0..data.len() };
    let order: Vec<usize> = range.clone().collect();
    let mut preds = Vec::with_capacity(order.len());
    for items in batches(data, &order, bs) {
        let b = Batch::new(&items, model.device);
        preds.extend(model.predict(&b, &Ctx { train: false, ..*ctx })?);
    }
    if !w.is_distributed() {
        return Ok(preds);
    }
    crate::dist::gather::gather_targets(&w, &preds, range, data.len(), model.device)
}

/// The first metric of a task selects checkpoints.
pub fn primary(spec: &TaskSpec, m: &Metrics) -> f64 {
    spec.metrics.first().and_then(|k| m.get(k)).copied().unwrap_or(f64::NEG_INFINITY)
}

/// Shuffled example order for an epoch (seeded by seed and epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1)),
    );
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// The epoch's example order, in consecutive batches of `bs`. With `pool` > 0, each run of `pool`
/// batches of the shuffled order is sorted by length (stable: ties keep the shuffled order), cut into
/// batches, and those batches are shuffled (seeded by seed and epoch; a short last batch stays last), so
/// a batch holds examples of similar length and pads less. `len(i)` is example i's length in tokens.
pub fn epoch_order_bucketed(
    n: usize,
    seed: u64,
    epoch: usize,
    bs: usize,
    pool: usize,
    len: impl Fn(usize) -> usize,
) -> Vec<usize> {
    let order = epoch_order(n, seed, epoch);
    if pool == 0 || bs == 0 {
        return order;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ 0xB0C4 ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1)).rotate_left(17),
    );
    let mut out = Vec::with_capacity(n);
    for chunk in order.chunks(pool * bs) {
        let mut sorted = chunk.to_vec();
        sorted.sort_by_key(|&i| len(i));
        let mut batches: Vec<&[usize]> = sorted.chunks(bs).collect();
        let full =
            if batches.last().is_some_and(|b| b.len() < bs) { batches.len() - 1 } else { batches.len() };
        batches[..full].shuffle(&mut rng);
        out.extend(batches.into_iter().flatten());
    }
    out
}

/// Length of an encoded example in tokens (its longest row).
pub fn encoded_len(e: &Encoded) -> usize {
    e.rows.iter().map(|r| r.0.len()).max().unwrap_or(0)
}

/// Whether a loop evaluates after `step` optimiser steps: every `eval_every` steps, at each epoch's end
/// and at the last step (training and the search alike).
pub fn eval_due(step: usize, eval_every: Option<usize>, per_epoch: usize, total: usize) -> bool {
    eval_every.is_some_and(|k| step.is_multiple_of(k)) || step.is_multiple_of(per_epoch) || step == total
}

pub struct Outcome {
    pub best_step: usize,
    pub steps: usize,
    pub dev: Metrics,
    pub test: Metrics,
    /// Seconds of training over every attempt (a resumed run adds its earlier attempts', up to their
    /// last checkpoint).
    pub seconds: f64,
    /// Seconds of this attempt alone.
    pub attempt_seconds: f64,
    pub examples_per_s: f64,
    /// Real and padded (rows x longest row, summed over batches) training tokens of the steps this process
    /// ran: how much dynamic padding (and `--length-buckets`) wastes.
    pub tokens: i64,
    pub padded_tokens: i64,
    /// How this attempt's steps ran as CUDA graphs (`None`: graphs off).
    pub graphs: Option<crate::step_graphs::GraphTally>,
}

/// Total optimiser steps for a config on `n` training examples.
pub fn total_steps(cfg: &RunConfig, n: usize) -> usize {
    let per_epoch = n.div_ceil(cfg.batch_size.max(1));
    cfg.max_steps.unwrap_or(per_epoch * cfg.epochs).max(1)
}

/// How a training loop starts and reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopOpts {
    /// Continue from `checkpoint.safetensors` in the run directory when it exists.
    pub resume: bool,
    pub quiet: bool,
}

/// libtorch's generator is re-seeded from (seed, step) before every step, so that dropout does not
/// depend on history and a resumed run draws the same masks.
pub fn step_seed(seed: u64, step: usize) -> i64 {
    (seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64 & i64::MAX
}

/// The files a training loop writes in its run directory.
struct LoopFiles {
    metrics: std::path::PathBuf,
    weights: std::path::PathBuf,
    checkpoint: std::path::PathBuf,
}

impl LoopFiles {
    /// Where a stopped run stands and what it keeps, for the non-finite guard's message.
    fn kept(&self, step: usize, epoch: usize) -> String {
        format!("step {step} (epoch {}); {}", epoch + 1, self.kept_files())
    }

    fn kept_files(&self) -> String {
        format!(
            "the last checkpoint ({}) and the best weights so far ({}) are kept",
            self.checkpoint.display(),
            self.weights.display()
        )
    }

    fn new(out: &Path) -> Self {
        LoopFiles {
            metrics: out.join("metrics.jsonl"),
            weights: out.join("weights.safetensors"),
            checkpoint: out.join("checkpoint.safetensors"),
        }
    }
}

/// The loop state to start from: the checkpoint's with `resume` (the metrics log cut back to it), else
/// a fresh one; and the best dev metrics so far.
fn start_state(model: &Model, opt: &mut AdamW, f: &LoopFiles, resume: bool) -> Result<(LoopState, Metrics)> {
    if resume && f.checkpoint.is_file() {
        let st = checkpoint::load(&f.checkpoint, &mut [("w", &model.store, opt)], &[])?.0;
        checkpoint::truncate_log(&f.metrics, st.step)?;
        let best_dev = checkpoint::logged_metrics(&f.metrics, st.best_step, "metrics", Some("dev"));
        tracing::info!(step = st.step, best_step = st.best_step, "resumed from {}", f.checkpoint.display());
        return Ok((st, best_dev));
    }
    let _ = std::fs::remove_file(&f.metrics);
    Ok((LoopState { step: 0, best: f64::NEG_INFINITY, best_step: 0, seconds: 0.0 }, Metrics::new()))
}

/// Evaluates dev, logs it to metrics.jsonl and keeps the weights when the score is the best so far
/// (ties: later wins).
fn evaluate_and_keep(
    model: &Model,
    data: &Prepared,
    cfg: &RunConfig,
    f: &LoopFiles,
    (st, best_dev): (&mut LoopState, &mut Metrics),
    (loss, epoch): (f64, usize),
) -> Result<()> {
    let dev = evaluate(model, &data.dev, &data.spec, cfg.eval_batch_size, &Ctx::eval())
        .map_err(|e| Error::Train(format!("evaluating dev: {e} at {}", f.kept(st.step, epoch))))?;
    let line = json!({"step": st.step, "epoch": epoch + 1, "split": "dev", "loss": loss, "metrics": dev});
    artifact::append_line(&f.metrics, &line.to_string())?;
    let score = primary(&data.spec, &dev);
    if score >= st.best {
        (st.best, st.best_step, *best_dev) = (score, st.step, dev);
        model.store.save(&f.weights)?;
    }
    Ok(())
}

/// The training loop's non-finite guard: on the device, read at evaluations, checkpoints and every
/// [`crate::guard::GUARD_ROWS`] steps; `None` with `--skip-nonfinite` (each step decides on the host).
fn device_guard(cfg: &RunConfig, device: tch::Device) -> Option<DeviceGuard> {
    (!cfg.skip_nonfinite).then(|| step_guard(device))
}

/// The device guard of a training step: loss, gradient norm, parameters after the update.
pub(crate) fn step_guard(device: tch::Device) -> DeviceGuard {
    let s = |what| Slot { what, update: "update", at_most: None };
    DeviceGuard::new(vec![s("loss"), s("gradient norm"), s("parameters after the update")], device)
}

/// One optimiser step on `b` behind the non-finite guard (device work only, eager or a CUDA graph: see
/// [`TrainSteps`]; with `--skip-nonfinite` the host guard); returns the loss (0-d, on the device).
fn train_step(
    model: &Model,
    (opt, guard, steps): (&mut AdamW, &mut Option<DeviceGuard>, &mut TrainSteps),
    b: &Batch,
    (cfg, lr, step): (&RunConfig, f64, usize),
    (at, kept): (&dyn Fn() -> String, &str),
) -> Result<Tensor> {
    if let Some(guard) = guard {
        let loss = steps.step(model, (opt, guard), b, (cfg.clip_norm, lr))?;
        if guard.stepped(step) {
            guard.check("training", kept)?;
        }
        return Ok(loss);
    }
    let (loss, g) = model.loss_and_grads(b, true)?;
    let (loss, g) = crate::dist::reduce_pass(&loss, &g, || model.loss_terms(b))?;
    let loss = loss.detach();
    let lv = loss.double_value(&[]);
    let (g, norm) = if lv.is_finite() {
        let norm = clip_grad_norm(&g, cfg.clip_norm).double_value(&[]);
        (Some(g), norm)
    } else {
        (None, f64::NAN)
    };
    crate::guard::guarded_step(&model.store, opt, g.as_ref(), (lv, norm), lr, true, at)?;
    Ok(loss)
}

/// The device guard's check (nothing with `--skip-nonfinite`).
fn check_guard(guard: &mut Option<DeviceGuard>, kept: &str) -> Result<()> {
    guard.as_mut().map_or(Ok(()), |g| g.check("training", kept).map(|_| ()))
}

/// Trains every parameter in `model.store`, evaluating dev every `eval_every` steps and at each epoch's end;
/// keeps the best-dev weights (ties: later wins), saves them to `out/weights.safetensors`, then tests.
/// Saves `out/checkpoint.safetensors` at every evaluation, every `checkpoint_every` steps and on SIGINT.
pub fn train(model: &Model, data: &Prepared, cfg: &RunConfig, out: &Path, o: LoopOpts) -> Result<Outcome> {
    if data.train.is_empty() {
        return Err(Error::Train("the training split is empty".into()));
    }
    let bs = cfg.batch_size.max(1);
    let per_epoch = data.train.len().div_ceil(bs);
    let total = total_steps(cfg, data.train.len());
    let warmup = (cfg.warmup_ratio * total as f64).round() as i64;
    let mut opt = AdamW::new(&model.store, AdamWConfig::new(cfg.lr, cfg.weight_decay));
    let f = LoopFiles::new(out);
    let (mut st, mut best_dev) = start_state(model, &mut opt, &f, o.resume)?;
    let (start, before) = (Instant::now(), st.seconds);
    let save_ckpt = |opt: &AdamW, st: &mut LoopState| {
        st.seconds = before + start.elapsed().as_secs_f64();
        checkpoint::save(&f.checkpoint, &[("w", &model.store, opt)], st, &[])
    };
    let (mut seen, mut tokens, mut padded_tokens) = (0usize, 0i64, 0i64);
    let bar = crate::progress::bar(total as u64, "train", o.quiet);
    bar.set_position(st.step as u64);
    let mut order: (usize, Vec<usize>) = (usize::MAX, Vec::new());
    let (mut guard, kept) = (device_guard(cfg, model.device), f.kept_files());
    let mut steps = TrainSteps::new(model, crate::step_graphs::train_graphs_wanted()?, guard.is_some())?;
    if steps.graphs_on() {
        tracing::info!("training steps run as CUDA graphs (S3PET_CUDA_GRAPHS=search or off turns them off)");
    }
    // batches padded to few shapes where the steps run as graphs (each shape is a graph)
    let pad = crate::step_graphs::padding(cfg.pad_to_multiple, steps.graphs_on(), cfg.max_length);
    while st.step < total {
        checkpoint::stop_if_interrupted("training", st.step, &f.checkpoint, || {
            check_guard(&mut guard, &kept)?;
            save_ckpt(&opt, &mut st.clone())
        })?;
        let (epoch, idx) = (st.step / per_epoch, st.step % per_epoch);
        if order.0 != epoch {
            let len = |i: usize| encoded_len(&data.train[i]);
            order =
                (epoch, epoch_order_bucketed(data.train.len(), cfg.seed, epoch, bs, cfg.length_buckets, len));
        }
        let items: Vec<&Encoded> = order.1[idx * bs..((idx + 1) * bs).min(data.train.len())]
            .iter()
            .map(|&i| &data.train[i])
            .collect();
        let b = crate::dist::shard_batch(&items, model.device, pad);
        crate::model::manual_seed(step_seed(cfg.seed, st.step));
        let at = || f.kept(st.step, epoch);
        let lr = linear_lr(cfg.lr, st.step as i64, warmup, total as i64);
        let loss =
            train_step(model, (&mut opt, &mut guard, &mut steps), &b, (cfg, lr, st.step), (&at, &kept))?;
        st.step += 1;
        (seen, tokens, padded_tokens) =
            (seen + items.len(), tokens + b.tokens, padded_tokens + b.ids.numel() as i64);
        bar.set_position(st.step as u64);
        let eval_now = eval_due(st.step, cfg.eval_every, per_epoch, total);
        if eval_now || cfg.checkpoint_every.is_some_and(|k| st.step.is_multiple_of(k)) {
            check_guard(&mut guard, &kept)?;
        }
        if eval_now {
            let lv = loss.double_value(&[]);
            bar.set_message(format!("epoch {} loss {lv:.4}", epoch + 1));
            evaluate_and_keep(model, data, cfg, &f, (&mut st, &mut best_dev), (lv, epoch))?;
        }
        if eval_now || cfg.checkpoint_every.is_some_and(|k| st.step.is_multiple_of(k)) {
            save_ckpt(&opt, &mut st)?;
        }
    }
    bar.finish_and_clear();
    check_guard(&mut guard, &kept)?;
    let attempt = start.elapsed().as_secs_f64();
    model.store.load(&f.weights)?;
    let test = evaluate(model, &data.test, &data.spec, cfg.eval_batch_size, &Ctx::eval())?;
    artifact::append_line(
        &f.metrics,
        &json!({"step": st.best_step, "split": "test", "metrics": test}).to_string(),
    )?;
    Ok(Outcome {
        best_step: st.best_step,
        steps: st.step,
        dev: best_dev,
        test,
        seconds: before + attempt,
        attempt_seconds: attempt,
        examples_per_s: seen as f64 / attempt.max(1e-9),
        tokens,
        padded_tokens,
        graphs: steps.tally(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens a batching pads to: every batch padded to its longest example.
    fn padded(order: &[usize], bs: usize, len: &[usize]) -> usize {
        order.chunks(bs).map(|b| b.len() * b.iter().map(|&i| len[i]).max().unwrap_or(0)).sum()
    }

    #[test]
    fn length_buckets_permute_pad_less_and_repeat() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let len: Vec<usize> = (0..1003).map(|_| rand::Rng::gen_range(&mut rng, 5..200)).collect();
        let (bs, pool) = (16, 8);
        let plain = epoch_order(len.len(), 7, 2);
        assert_eq!(epoch_order_bucketed(len.len(), 7, 2, bs, 0, |i| len[i]), plain);
        let b = epoch_order_bucketed(len.len(), 7, 2, bs, pool, |i| len[i]);
        assert_eq!(b, epoch_order_bucketed(len.len(), 7, 2, bs, pool, |i| len[i]));
        assert_ne!(b, epoch_order_bucketed(len.len(), 7, 3, bs, pool, |i| len[i]));
        let mut sorted = b.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..len.len()).collect::<Vec<_>>());
        // each pool holds the same examples as the plain order's pool: only the batching changes
        for (x, y) in b.chunks(pool * bs).zip(plain.chunks(pool * bs)) {
            let (mut x, mut y) = (x.to_vec(), y.to_vec());
            x.sort_unstable();
            y.sort_unstable();
            assert_eq!(x, y);
        }
        // the short last batch (1003 = 62 * 16 + 11) stays last, so batch boundaries stay aligned
        let last: Vec<usize> = b[b.len() - 11..].to_vec();
        let pool_start = (len.len() / (pool * bs)) * pool * bs;
        let mut tail: Vec<usize> = b[pool_start..].to_vec();
        tail.sort_by_key(|&i| len[i]);
        assert_eq!(last.iter().map(|&i| len[i]).min(), tail[tail.len() - 11..].iter().map(|&i| len[i]).min());
        assert!(padded(&b, bs, &len) * 10 < padded(&plain, bs, &len) * 7, "bucketing should cut padding");
    }
}
