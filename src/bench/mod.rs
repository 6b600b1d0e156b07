//! Training-step benchmarks on fixed (batch x sequence) inputs: full fine-tuning, LoRA r8 on query and
//! value, a retrain step of a structure, and S3PET-M search steps of first and second order.
//! The device is synchronised before the clock is read.
mod search;
mod train_check;

use crate::backbone::{Arch, ModelConfig, Placement, Weights};
use crate::batch::Batch;
use crate::data::Target;
use crate::error::{Error, Result};
use crate::model::{HeadInit, Model};
use crate::optim::{AdamW, AdamWConfig};
use crate::space::{budget_params, Space};
use crate::structure::method_modules;
use crate::tokenize::Encoded;
pub use search::{graph_check, GraphCheck};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
pub use train_check::{train_graph_check, TrainGraphCheck};

/// The named shapes (random weights): BERT's three sizes, and the real configs of all-mpnet-base-v2,
/// roberta-base and deberta-v3-base (copied from their hub repositories).
pub const SHAPES: &[&str] =
    &["minilm", "bert-base", "bert-large", "mpnet-base", "roberta-base", "deberta-v3-base"];

/// A named shape's config, or the config of a model directory.
pub fn shape_config(shape: &str) -> Result<ModelConfig> {
    let family = |name: &str, text: &str| ModelConfig::from_json(text, Path::new(name));
    match shape {
        "minilm" => bert_shape(6, 384, 12, 1536),
        "bert-base" => bert_shape(12, 768, 12, 3072),
        "bert-large" => bert_shape(24, 1024, 16, 4096),
        "mpnet-base" => family("mpnet-base.json", include_str!("shapes/mpnet-base.json")),
        "roberta-base" => family("roberta-base.json", include_str!("shapes/roberta-base.json")),
        "deberta-v3-base" => family("deberta-v3-base.json", include_str!("shapes/deberta-v3-base.json")),
        dir => ModelConfig::from_file(&crate::hub::resolve(Path::new(dir))?.join("config.json")),
    }
}

fn bert_shape(layers: i64, d: i64, heads: i64, f: i64) -> Result<ModelConfig> {
    let json = format!(
        r#"{{"vocab_size": 30522, "hidden_size": {d}, "num_hidden_layers": {layers}, "num_attention_heads": {heads},
            "intermediate_size": {f}, "model_type": "bert"}}"#
    );
    ModelConfig::from_json(&json, Path::new("<bert shape>"))
}

/// Random weights for a config (for shapes without a checkpoint): every tensor its loader reads, 1-d
/// `*weight` (norm scales) at 1, `*bias` at 0, the rest N(0, 0.02).
pub fn random_weights(cfg: &impl Arch, device: Device) -> Weights {
    tch::manual_seed(0);
    let opts = (Kind::Float, device);
    let t = cfg
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let t = if name.ends_with("bias") {
                Tensor::zeros(shape.as_slice(), opts)
            } else if shape.len() == 1 && name.ends_with("weight") {
                Tensor::ones(shape.as_slice(), opts)
            } else {
                Tensor::randn(shape.as_slice(), opts) * 0.02
            };
            (name, t)
        })
        .collect();
    Weights::from_tensors(Path::new("<random>"), t, device)
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub shape: String,
    pub workload: String,
    pub device: String,
    pub threads: i32,
    pub batch: usize,
    pub seq_len: usize,
    pub steps: usize,
    pub ms_per_step: f64,
    /// CPU time of the process per step (all threads): less sensitive than wall time to other work on a
    /// shared machine.
    pub cpu_ms_per_step: Option<f64>,
    pub examples_per_s: f64,
    pub tokens_per_s: f64,
    pub trainable_params: i64,
    /// Every backbone tensor's elements (for model FLOP rates: 4 x this x tokens a delta-tuning step).
    pub backbone_params: i64,
    pub peak_rss_bytes: Option<u64>,
    /// Peak bytes allocated to tensors on the GPU (libtorch's caching allocator; `cuda` builds only).
    pub peak_gpu_bytes: Option<u64>,
    /// Peak bytes the allocator held from the driver (allocated + cached).
    pub peak_gpu_reserved_bytes: Option<u64>,
    /// Dtype of the frozen backbone matrices (fp32 or bf16; full fine-tuning is always fp32).
    pub backbone_dtype: String,
    /// Activations' dtype: fp32, or bf16 (`--precision bf16`).
    pub precision: String,
    /// Search rows: whether the step ran as a CUDA graph (training rows: true when it did; both unless
    /// S3PET_CUDA_GRAPHS or --cuda-graphs turns them off), and whether the second order's w± passes ran
    /// as one replica pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_graphs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hvp_replicas: Option<bool>,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// A fixed batch: `batch` rows of `seq_len` random tokens, no padding, binary labels. Ids from 1000 up
/// (all ids for a vocabulary of at most 2000, as tools/bench_peer.py does).
pub fn fixed_batch(batch: usize, seq_len: usize, vocab: i64, device: Device) -> Batch {
    let lo = if vocab > 2000 { 1000 } else { 0 };
    let items: Vec<Encoded> = (0..batch)
        .map(|i| {
            let ids: Vec<i64> =
                (0..seq_len).map(|j| lo + ((i * 7919 + j * 104_729) as i64 % (vocab - lo).max(1))).collect();
            Encoded { rows: vec![(ids, vec![0; seq_len])], target: Target::Class(i % 2), group: None }
        })
        .collect();
    let refs: Vec<&Encoded> = items.iter().collect();
    Batch::new(&refs, device)
}

/// Times `steps` calls of `step` after `warmup` untimed ones; returns wall-clock ms per step and this
/// process's CPU ms per step (all threads; see [`crate::progress::cpu_seconds`]).
pub fn time_steps(
    device: Device,
    warmup: usize,
    steps: usize,
    mut step: impl FnMut() -> Result<()>,
) -> Result<(f64, Option<f64>)> {
    for _ in 0..warmup {
        step()?;
    }
    sync(device);
    let (t, cpu) = (Instant::now(), crate::progress::cpu_seconds());
    for _ in 0..steps {
        step()?;
    }
    sync(device);
    let n = steps.max(1) as f64;
    let cpu_ms = cpu.zip(crate::progress::cpu_seconds()).map(|(a, b)| (b - a) * 1e3 / n);
    Ok((t.elapsed().as_secs_f64() * 1e3 / n, cpu_ms))
}

pub struct BenchOpts {
    pub batch: usize,
    pub seq_len: usize,
    pub warmup: usize,
    pub steps: usize,
    pub device: Device,
    pub budget: f64,
    /// Search rows: capture the step as a CUDA graph (where the build and device allow it).
    pub cuda_graphs: bool,
    /// Search rows, second order: the w+ and w- passes as one pass with a replica dimension.
    pub replicas: bool,
}

/// The mix-space candidates of a shape (with their parameter counts), its budget in parameters at
/// `budget`, and the random structure the `retrain` workload trains (seed 0).
pub fn bench_structures(
    cfg: &ModelConfig,
    budget: f64,
) -> Result<(Vec<crate::delta::ModuleSpec>, i64, Vec<usize>)> {
    let space = Space::builtin("mix").ok_or_else(|| Error::Msg("no mix space".into()))?;
    let cands = space.candidates(cfg)?;
    let budget = budget_params(Some(budget), None, cfg.param_count(), &cands)?;
    let chosen = crate::search::random_structure(&cands, budget, 0);
    Ok((cands, budget, chosen))
}

/// Writes `SHAPE.retrain.json` (a structure.json) and `SHAPE.candidates.json` ({space, budget_params,
/// backbone_params, candidates}) under `dir`: what tools/bench_peer.py rebuilds in PyTorch.
pub fn emit_structures(dir: &Path, shape: &str, cfg: &ModelConfig, budget: f64) -> Result<()> {
    let (cands, budget, chosen) = bench_structures(cfg, budget)?;
    let backbone = cfg.param_count();
    let mods: Vec<_> = chosen.iter().map(|&i| cands[i].clone()).collect();
    let mut retrain = crate::structure::Structure::manual("random", mods, cfg, backbone)?;
    retrain.budget_params = budget;
    retrain.space = Some("mix".into());
    let slug: String =
        shape.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let write = |name: String, v: serde_json::Value| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(&v).map_err(|e| Error::Msg(e.to_string()))?)
            .map_err(|e| Error::io(&p, e))
    };
    write(
        format!("{slug}.retrain.json"),
        serde_json::to_value(&retrain).map_err(|e| Error::Msg(e.to_string()))?,
    )?;
    write(
        format!("{slug}.candidates.json"),
        serde_json::json!({"space": "mix", "budget_params": budget, "backbone_params": backbone, "candidates": cands}),
    )
}

/// The error of a workload name that is none of bench's.
fn unknown_workload(w: &str) -> Error {
    Error::config("workload", format!("unknown workload `{w}` (full, lora, retrain, search1, search2)"))
}

/// The model a training workload trains: `full` (every weight, no deltas), `lora` (r8 on query and
/// value) or `retrain` (the modules `retrain`, fixed).
pub(super) fn training_model(
    cfg: &ModelConfig,
    weights: &Weights,
    workload: &str,
    retrain: Vec<crate::delta::ModuleSpec>,
) -> Result<Model> {
    let fixed = |mods: Vec<crate::delta::ModuleSpec>| -> Vec<Placement> {
        mods.into_iter().map(|m| Placement { spec: m, gate: None }).collect()
    };
    let (placements, full) = match workload {
        "full" => (vec![], true),
        "lora" => (fixed(method_modules("lora", cfg)?), false),
        "retrain" => (fixed(retrain), false),
        w => return Err(unknown_workload(w)),
    };
    Model::build(cfg, weights, &placements, full, HeadInit::Fresh { num_labels: 2 }, 0)
}

/// One workload on one shape: `full`, `lora`, `retrain` (a random S3PET-M structure at the budget,
/// standing for a searched one of the same size), `search1`, `search2`.
pub fn bench(
    shape: &str,
    cfg: &ModelConfig,
    weights: &Weights,
    workload: &str,
    o: &BenchOpts,
) -> Result<BenchRow> {
    let b = fixed_batch(o.batch, o.seq_len, cfg.vocab_size(), o.device);
    let (cands, budget, chosen) = bench_structures(cfg, o.budget)?;
    // the training loop's own step (behind its device guard; CUDA graphs unless S3PET_CUDA_GRAPHS or
    // --cuda-graphs turns them off)
    let train_step = |model: &Model| -> Result<((f64, Option<f64>), bool)> {
        let mut opt = AdamW::new(&model.store, AdamWConfig::new(1e-5, 0.0));
        let guard = crate::train::step_guard(model.device);
        let wanted = o.cuda_graphs && crate::step_graphs::train_graphs_wanted()?;
        let mut steps = crate::train_graphs::TrainSteps::new(model, wanted, true)?;
        let on = steps.graphs_on();
        // with graphs, the eager warm-up steps and the capture stay out of the timed steps
        let warmup = if on { o.warmup.max(3) } else { o.warmup };
        let ms = time_steps(o.device, warmup, o.steps, || {
            steps.step(model, (&mut opt, &guard), &b, (1.0, 1e-5)).map(|_| ())
        })?;
        Ok((ms, on))
    };
    if workload == "full" && weights.act_kind() != tch::Kind::Float {
        return Err(Error::config("--precision", "the full workload trains the backbone in fp32"));
    }
    // per workload: (wall, CPU) ms a step, trainable parameters, and whether the step ran as CUDA graphs
    // (search: always said; training: only when it did) and the second order's w± passes as one replica
    // pass (search rows)
    let ((ms, cpu_ms), trainable, (cuda_graphs, hvp_replicas)) = match workload {
        "full" | "lora" | "retrain" => {
            let retrain: Vec<_> = chosen.iter().map(|&i| cands[i].clone()).collect();
            let model = training_model(cfg, weights, workload, retrain)?;
            let (ms, graphs) = train_step(&model)?;
            (ms, model.store.numel(), (graphs.then_some(true), None))
        }
        "search1" | "search2" => {
            let order = if workload == "search1" { 1 } else { 2 };
            let (ms, trainable, graphs) = search::time_search(cfg, weights, (&cands, budget), order, &b, o)?;
            (ms, trainable, (Some(graphs), Some(o.replicas && order == 2)))
        }
        w => return Err(unknown_workload(w)),
    };
    let gpu = crate::gpu_mem::peak(o.device);
    Ok(BenchRow {
        shape: shape.into(),
        workload: workload.into(),
        device: format!("{:?}", o.device),
        threads: tch::get_num_threads(),
        batch: o.batch,
        seq_len: o.seq_len,
        steps: o.steps,
        ms_per_step: ms,
        cpu_ms_per_step: cpu_ms,
        examples_per_s: o.batch as f64 * 1e3 / ms,
        tokens_per_s: (o.batch * o.seq_len) as f64 * 1e3 / ms,
        trainable_params: trainable,
        backbone_params: cfg.param_count(),
        peak_rss_bytes: crate::progress::peak_rss_bytes(),
        peak_gpu_bytes: gpu.map(|p| p.0),
        peak_gpu_reserved_bytes: gpu.map(|p| p.1),
        backbone_dtype: if workload == "full" || weights.frozen_kind() == tch::Kind::Float {
            "fp32".into()
        } else {
            "bf16".into()
        },
        precision: if weights.act_kind() == tch::Kind::Float { "fp32".into() } else { "bf16".into() },
        cuda_graphs,
        hvp_replicas,
    })
}
