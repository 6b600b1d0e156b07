//! The search rows of `s3pet bench`: one bi-level step on a fixed batch (the same batch as D_w and
//! D_alpha batch), and the check that a step captured as a CUDA graph computes what the eager step does.
use super::{fixed_batch, time_steps, BenchOpts};
use crate::backbone::{ModelConfig, Placement, Weights};
use crate::batch::Batch;
use crate::delta::ModuleSpec;
use crate::error::{Error, Result};
use crate::model::{HeadInit, Model};
use crate::search::bilevel::{SearchConfig, Stepper, Supernet};
use serde::Serialize;
use tch::Tensor;

/// The supernet of a shape: every candidate behind its gate (seed 0).
fn supernet(cfg: &ModelConfig, weights: &Weights, (cands, budget): (&[ModuleSpec], i64)) -> Result<Supernet> {
    let placements: Vec<Placement> =
        cands.iter().enumerate().map(|(i, c)| Placement { spec: c.clone(), gate: Some(i) }).collect();
    let model = Model::build(cfg, weights, &placements, false, HeadInit::Fresh { num_labels: 2 }, 0)?;
    Ok(Supernet::new(model, cands.to_vec(), budget, 1.0))
}

/// (wall, CPU) ms per search step of `order`, trainable parameters (deltas, head, one alpha per candidate), and
/// whether the step ran as a CUDA graph.
pub(super) fn time_search(
    cfg: &ModelConfig,
    weights: &Weights,
    space: (&[ModuleSpec], i64),
    order: u8,
    b: &Batch,
    o: &BenchOpts,
) -> Result<((f64, Option<f64>), i64, bool)> {
    let mut net = supernet(cfg, weights, space)?;
    let trainable = net.model.store.numel() + space.0.len() as i64;
    let mut st = Stepper::new(&mut net, &SearchConfig::paper(order, o.batch));
    st.replicas = o.replicas;
    let graphs = st.use_cuda_graphs(o.cuda_graphs)?;
    // with graphs, the eager warm-up steps and the capture of the step stay out of the timed steps
    let warmup = if graphs { o.warmup.max(3) } else { o.warmup };
    let mut i = 0;
    let ms = time_steps(o.device, warmup, o.steps, || {
        st.step(b, b, (3e-4, 0.1), i)?;
        i += 1;
        Ok(())
    })?;
    st.check_guard()?;
    Ok((ms, trainable, graphs))
}

/// A CUDA graph step against the eager step: both from the same start, `steps` steps each (at least
/// 12; dropout off, so that the two see the same function), then the largest differences. The steps
/// take two batch shapes (the sequence length and half of it) in the order long, short, short, long,
/// so that two graphs are captured into the one memory pool they share and replayed in both orders.
#[derive(Debug, Clone, Serialize)]
pub struct GraphCheck {
    pub shape: String,
    pub order: u8,
    pub steps: usize,
    /// Whether the graph path really ran as graphs (false: capture unavailable in this build or on this
    /// device, or it failed: see the log).
    pub captured: bool,
    /// Shapes captured as graphs (2 where graphs run).
    pub shapes_captured: usize,
    pub max_loss_diff: f64,
    pub max_alpha_diff: f64,
    pub max_w_diff: f64,
    pub max_p_diff: f64,
    pub passed: bool,
}

/// Runs the check (see [`GraphCheck`]); `tol` bounds every difference for `passed`, which on a CUDA
/// device of a cuda build also needs the graph path to have been captured.
pub fn graph_check(
    shape: &str,
    cfg: &ModelConfig,
    weights: &Weights,
    order: u8,
    o: &BenchOpts,
    tol: f64,
) -> Result<GraphCheck> {
    let cfg = cfg.without_dropout();
    let (cands, budget, _) = super::bench_structures(&cfg, o.budget)?;
    let long = fixed_batch(o.batch, o.seq_len, cfg.vocab_size(), o.device);
    let short = fixed_batch(o.batch, (o.seq_len / 2).max(1), cfg.vocab_size(), o.device);
    let steps = o.steps.max(12);
    let run = |graphs: bool| -> Result<(Vec<f64>, Tensor, Tensor, Tensor, usize)> {
        let mut net = supernet(&cfg, weights, (&cands, budget))?;
        let mut st = Stepper::new(&mut net, &SearchConfig::paper(order, o.batch));
        st.replicas = o.replicas;
        st.use_cuda_graphs(graphs)?;
        let mut losses = Vec::new();
        for i in 0..steps {
            st.seed_step(i);
            let b = if matches!(i % 4, 1 | 2) { &short } else { &long };
            let out = st.step(b, b, (3e-4, 0.1), i)?;
            losses.extend([out.val_loss.double_value(&[]), out.train_loss.double_value(&[])]);
        }
        st.check_guard()?;
        let p = tch::no_grad(|| st.net.probs())?;
        let (alpha, w) = (st.net.alpha.detach().copy(), st.net.model.store.flat().copy());
        Ok((losses, alpha, w, p, st.graph_shapes().unwrap_or(0)))
    };
    let (l0, a0, w0, p0, _) = run(false)?;
    let (l1, a1, w1, p1, shapes_captured) = run(true)?;
    let max = |x: &Tensor, y: &Tensor| (x - y).abs().max().double_value(&[]);
    let max_loss_diff = l0.iter().zip(&l1).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let (max_alpha_diff, max_w_diff, max_p_diff) = (max(&a0, &a1), max(&w0, &w1), max(&p0, &p1));
    // on a CUDA device of a cuda build the graph path must really have been captured
    let must_capture = o.device.is_cuda() && crate::cuda_graph::supported();
    let close =
        [max_loss_diff, max_alpha_diff, max_w_diff, max_p_diff].iter().all(|d| d.is_finite() && *d <= tol);
    let passed = close && (shapes_captured == 2 || !must_capture);
    if l0.len() != l1.len() {
        return Err(Error::Msg("the graph and eager runs made different numbers of steps".into()));
    }
    Ok(GraphCheck {
        shape: shape.into(),
        order,
        steps,
        captured: shapes_captured > 0,
        shapes_captured,
        max_loss_diff,
        max_alpha_diff,
        max_w_diff,
        max_p_diff,
        passed,
    })
}
