//! `s3pet bench --graph-check` for the training workloads (full, lora, retrain): the training loop's
//! step captured as CUDA graphs (a run's default on CUDA) against the same step run eagerly.
use super::{fixed_batch, BenchOpts};
use crate::backbone::{ModelConfig, Weights};
use crate::error::Result;
use crate::optim::{AdamW, AdamWConfig};
use crate::train_graphs::TrainSteps;
use serde::Serialize;
use tch::Tensor;

/// Both runs from the same start, `steps` steps each (at least 12; dropout off), over two batch shapes
/// in the order long, short, short, long (two graphs in one memory pool, replayed in both orders).
#[derive(Debug, Clone, Serialize)]
pub struct TrainGraphCheck {
    pub shape: String,
    pub workload: String,
    pub steps: usize,
    /// Whether the graph path really ran as graphs (false: not in this build or on this device).
    pub captured: bool,
    pub shapes_captured: usize,
    pub max_loss_diff: f64,
    pub max_w_diff: f64,
    pub passed: bool,
}

/// Runs the check (see [`TrainGraphCheck`]); `tol` bounds both differences for `passed`, which on a CUDA
/// device of a cuda build also needs both shapes captured.
pub fn train_graph_check(
    shape: &str,
    cfg: &ModelConfig,
    weights: &Weights,
    workload: &str,
    o: &BenchOpts,
    tol: f64,
) -> Result<TrainGraphCheck> {
    let cfg = cfg.without_dropout();
    let long = fixed_batch(o.batch, o.seq_len, cfg.vocab_size(), o.device);
    let short = fixed_batch(o.batch, (o.seq_len / 2).max(1), cfg.vocab_size(), o.device);
    let steps = o.steps.max(12);
    let retrain = match workload {
        "retrain" => {
            let (cands, _, chosen) = super::bench_structures(&cfg, o.budget)?;
            chosen.iter().map(|&i| cands[i].clone()).collect()
        }
        _ => Vec::new(),
    };
    let run = |graphs: bool| -> Result<(Vec<f64>, Tensor, usize)> {
        let model = super::training_model(&cfg, weights, workload, retrain.clone())?;
        let mut opt = AdamW::new(&model.store, AdamWConfig::new(1e-4, 0.0));
        let guard = crate::train::step_guard(model.device);
        let mut st = TrainSteps::new(&model, graphs, true)?;
        let mut losses = Vec::new();
        for i in 0..steps {
            crate::model::manual_seed(crate::train::step_seed(0, i));
            let b = if matches!(i % 4, 1 | 2) { &short } else { &long };
            losses.push(st.step(&model, (&mut opt, &guard), b, (1.0, 1e-4))?.double_value(&[]));
        }
        let shapes = st.tally().map_or(0, |t| t.shapes);
        Ok((losses, model.store.flat().copy(), shapes))
    };
    let (l0, w0, _) = run(false)?;
    let (l1, w1, shapes_captured) = run(true)?;
    let max_loss_diff = l0.iter().zip(&l1).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let max_w_diff = (&w0 - &w1).abs().max().double_value(&[]);
    let must_capture = o.device.is_cuda() && crate::cuda_graph::supported();
    let close = [max_loss_diff, max_w_diff].iter().all(|d| d.is_finite() && *d <= tol);
    Ok(TrainGraphCheck {
        shape: shape.into(),
        workload: workload.into(),
        steps,
        captured: shapes_captured > 0,
        shapes_captured,
        max_loss_diff,
        max_w_diff,
        passed: close && (shapes_captured == 2 || !must_capture),
    })
}
