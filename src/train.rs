//! The training loop shared by `train` and `retrain`: AdamW, linear decay with optional warm-up,
//! gradient clipping, evaluation every K steps, best-dev selection, test evaluation.
use crate::artifact;
use crate::batch::{batches, Batch};
use crate::config::TrainConfig;
use crate::data::{load_task, TaskData, TaskSpec};
use crate::delta::Ctx;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::optim::{linear_lr, AdamW, AdamWConfig};
use crate::tokenize::{Encoded, TextEncoder};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub type Metrics = BTreeMap<String, f64>;

/// A task's splits, tokenised.
pub struct Prepared {
    pub spec: TaskSpec,
    pub train: Vec<Encoded>,
    pub dev: Vec<Encoded>,
    pub test: Vec<Encoded>,
}

/// The task's splits as a run sees them: split with the run's seed, then cut to
/// `max_train_examples` / `max_eval_examples`.
pub fn load_examples(cfg: &TrainConfig) -> Result<TaskData> {
    let spec = TaskSpec::resolve(&cfg.task)?;
    let mut data = load_task(&spec, &cfg.data_dir, cfg.seed)?;
    if let Some(n) = cfg.max_train_examples {
        data.train.truncate(n);
    }
    if let Some(n) = cfg.max_eval_examples {
        data.dev.truncate(n);
        data.test.truncate(n);
    }
    Ok(data)
}

pub fn prepare(cfg: &TrainConfig, tokenizer: &Path) -> Result<Prepared> {
    let TaskData { spec, train, dev, test } = load_examples(cfg)?;
    let enc = TextEncoder::load(tokenizer, cfg.max_length)?;
    Ok(Prepared { train: enc.encode(&train)?, dev: enc.encode(&dev)?, test: enc.encode(&test)?, spec })
}

/// Metrics of `model` on `data` (in order, no dropout), with the gates `ctx` carries.
pub fn evaluate(model: &Model, data: &[Encoded], spec: &TaskSpec, bs: usize, ctx: &Ctx) -> Result<Metrics> {
    if data.is_empty() {
        return Err(Error::Train("cannot evaluate on an empty split".into()));
    }
    let order: Vec<usize> = (0..data.len()).collect();
    let mut preds = Vec::with_capacity(data.len());
    for items in batches(data, &order, bs) {
        let b = Batch::new(&items, model.device);
        preds.extend(model.predict(&b, &Ctx { train: false, ..*ctx }));
    }
    let golds: Vec<_> = data.iter().map(|e| e.target).collect();
    let groups: Vec<Option<String>> = data.iter().map(|e| e.group.clone()).collect();
    crate::metrics::compute(&spec.metrics, &preds, &golds, Some(&groups))
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

pub struct Outcome {
    pub best_step: usize,
    pub steps: usize,
    pub dev: Metrics,
    pub test: Metrics,
    pub seconds: f64,
    pub examples_per_s: f64,
}

/// Total optimiser steps for a config on `n` training examples.
pub fn total_steps(cfg: &TrainConfig, n: usize) -> usize {
    let per_epoch = n.div_ceil(cfg.batch_size.max(1));
    cfg.max_steps.unwrap_or(per_epoch * cfg.epochs).max(1)
}

/// Trains every parameter in `model.store`, evaluating dev every `eval_every` steps and at each epoch's end;
/// keeps the best-dev weights (ties: later wins), saves them to `out/weights.safetensors`, then tests.
pub fn train(model: &Model, data: &Prepared, cfg: &TrainConfig, out: &Path, quiet: bool) -> Result<Outcome> {
    if data.train.is_empty() {
        return Err(Error::Train("the training split is empty".into()));
    }
    let total = total_steps(cfg, data.train.len());
    let warmup = (cfg.warmup_ratio * total as f64).round() as i64;
    let mut opt = AdamW::new(model.store.tensors(), AdamWConfig::new(cfg.lr, cfg.weight_decay));
    let metrics_path = out.join("metrics.jsonl");
    let weights_path = out.join("weights.safetensors");
    let (mut step, mut best, mut best_step, mut seen) = (0usize, f64::NEG_INFINITY, 0usize, 0usize);
    let mut best_dev = Metrics::new();
    let start = Instant::now();
    let ctx = Ctx::train();
    let mut epoch = 0;
    'outer: while step < total {
        let order = epoch_order(data.train.len(), cfg.seed, epoch);
        let chunks = batches(&data.train, &order, cfg.batch_size);
        let bar = crate::progress::bar(chunks.len() as u64, &format!("epoch {}", epoch + 1), quiet);
        for items in chunks {
            let b = Batch::new(&items, model.device);
            let loss = model.loss(&b, &ctx);
            let lv = loss.double_value(&[]);
            if !lv.is_finite() {
                return Err(Error::Train(format!(
                    "non-finite loss {lv} at step {step} (epoch {}); the best weights so far are in {}",
                    epoch + 1,
                    weights_path.display()
                )));
            }
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(cfg.clip_norm);
            opt.step(linear_lr(cfg.lr, step as i64, warmup, total as i64));
            step += 1;
            seen += b.len();
            bar.inc(1);
            bar.set_message(format!("loss {lv:.4}"));
            let epoch_end = bar.position() == bar.length().unwrap_or(0);
            if cfg.eval_every.is_some_and(|k| step % k == 0) || epoch_end || step == total {
                let dev = evaluate(model, &data.dev, &data.spec, cfg.eval_batch_size, &Ctx::eval())?;
                let score = primary(&data.spec, &dev);
                artifact::append_line(
                    &metrics_path,
                    &json!({"step": step, "epoch": epoch + 1, "split": "dev", "loss": lv, "metrics": dev})
                        .to_string(),
                )?;
                if score >= best {
                    best = score;
                    best_step = step;
                    best_dev = dev;
                    model.store.save(&weights_path)?;
                }
            }
            if step >= total {
                bar.finish_and_clear();
                break 'outer;
            }
        }
        bar.finish_and_clear();
        epoch += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    model.store.load(&weights_path)?;
    let test = evaluate(model, &data.test, &data.spec, cfg.eval_batch_size, &Ctx::eval())?;
    artifact::append_line(
        &metrics_path,
        &json!({"step": best_step, "split": "test", "metrics": test}).to_string(),
    )?;
    Ok(Outcome {
        best_step,
        steps: step,
        dev: best_dev,
        test,
        seconds,
        examples_per_s: seen as f64 / seconds.max(1e-9),
    })
}
