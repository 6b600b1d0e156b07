//! Glue shared by the training subcommands: resolve a config, build the model, train, write the report.
use crate::cli::CommonArgs;
use anyhow::Result;
use s3pet::backbone::{Placement, Weights};
use s3pet::config::TrainConfig;
use s3pet::model::{HeadInit, Model, ModelDir};
use s3pet::rundir::RunDir;
use s3pet::structure::Structure;
use s3pet::train::{prepare_model, train, LoopOpts, Prepared};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Defaults that differ between `train` and the search commands.
pub struct Defaults {
    pub lr: f64,
    pub clip_norm: f64,
}

impl Defaults {
    pub fn train(method: &str) -> Self {
        Defaults { lr: TrainConfig::default_lr(method), clip_norm: 1.0 }
    }
    /// The paper's w optimiser: AdamW lr 3e-4, clip 2.0.
    pub fn search() -> Self {
        Defaults { lr: 3e-4, clip_norm: 2.0 }
    }
}

pub fn train_config(
    c: &CommonArgs,
    task: &str,
    method: &str,
    structure: Option<PathBuf>,
    defaults: Defaults,
) -> Result<TrainConfig> {
    // --data-dir, else $S3PET_DATA, else (None) the task's Hub dataset (a resumed run reads its own)
    let data_dir = c.data_dir.clone().or_else(s3pet::data::default_data_dir);
    Ok(TrainConfig {
        task: task.into(),
        method: method.into(),
        model: c.model.clone(),
        data_dir,
        data: None,
        seed: c.seed,
        epochs: c.epochs,
        max_steps: c.max_steps,
        batch_size: c.batch_size,
        eval_batch_size: c.eval_batch_size,
        lr: c.lr.unwrap_or(defaults.lr),
        weight_decay: c.weight_decay,
        warmup_ratio: c.warmup_ratio,
        clip_norm: c.clip_norm.unwrap_or(defaults.clip_norm),
        eval_every: c.eval_every,
        max_length: c.max_length,
        length_buckets: c.length_buckets,
        max_train_examples: c.max_train_examples,
        max_eval_examples: c.max_eval_examples,
        structure,
        device: c.device.clone(),
        threads: c.threads,
        checkpoint_every: c.checkpoint_every,
        skip_nonfinite: c.skip_nonfinite,
        backbone_dtype: c.backbone_dtype.clone(),
        search: None,
    })
}

/// Model directory, weights and tokenised task of a config.
pub struct Loaded {
    pub md: ModelDir,
    pub weights: Weights,
    pub data: Prepared,
}

pub fn load(cfg: &TrainConfig) -> Result<Loaded> {
    if let Some(n) = cfg.threads {
        tch::set_num_threads(n as i32);
    }
    let device = cfg.device()?;
    let md = ModelDir::open(&cfg.model)?;
    let mut weights = md.load_weights(device)?;
    weights.set_frozen_kind(s3pet::config::frozen_kind(&cfg.backbone_dtype)?);
    if cfg.method == "full" && cfg.backbone_dtype != "fp32" {
        anyhow::bail!(
            "--backbone-dtype {} is for delta tuning: full fine-tuning trains the backbone in fp32",
            cfg.backbone_dtype
        );
    }
    let data = prepare_model(cfg, &md)?;
    tracing::info!(
        task = %data.spec.name, train = data.train.len(), dev = data.dev.len(), test = data.test.len(),
        "data ready"
    );
    Ok(Loaded { md, weights, data })
}

/// Builds the model for `structure` (gates fixed at 1), trains it into `run`, writes report.json and
/// returns the report.
pub fn train_structure(
    cfg: &TrainConfig,
    l: &Loaded,
    structure: &Structure,
    run: &RunDir,
    opts: LoopOpts,
) -> Result<Value> {
    let placements: Vec<Placement> =
        structure.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
    let head = HeadInit::for_task(&l.data.spec, &l.md)?;
    let model = Model::build(&l.md.cfg, &l.weights, &placements, structure.full, head, cfg.seed)?;
    let backbone = model.backbone_params();
    let trainable = model.store.numel();
    s3pet::gpu_mem::reset_peak(model.device);
    if !opts.quiet {
        eprintln!(
            "trainable parameters: {trainable} of {} ({:.4}%): deltas {} ({:.4}% of the backbone), head {}",
            backbone + model.head_params,
            100.0 * trainable as f64 / (backbone + model.head_params) as f64,
            model.delta_params,
            100.0 * model.delta_params as f64 / backbone as f64,
            model.head_params
        );
    }
    tracing::info!(config = %serde_json::to_string(cfg)?, "resolved config");
    let out = train(&model, &l.data, cfg, &run.dir, opts)?;
    let report = json!({
        "task": l.data.spec.name,
        "method": cfg.method,
        "seed": cfg.seed,
        "backbone_params": backbone,
        "delta_params": model.delta_params,
        "head_params": model.head_params,
        "trainable_params": trainable,
        "delta_fraction": model.delta_params as f64 / backbone as f64,
        "train_examples": l.data.train.len(),
        "steps": out.steps,
        "best_step": out.best_step,
        "train_seconds": out.seconds,
        "examples_per_second": out.examples_per_s,
        "train_tokens": out.tokens,
        "train_padded_tokens": out.padded_tokens,
        "peak_rss_bytes": s3pet::progress::peak_rss_bytes(),
        "peak_gpu_bytes": s3pet::gpu_mem::peak(model.device).map(|p| p.0),
        "device": cfg.device,
        "dev": out.dev,
        "test": out.test,
    });
    s3pet::artifact::write_json(&run.path("report.json"), &report)?;
    Ok(report)
}

/// The config of a training command (from the command line, or with --resume the one saved in the
/// run directory) and its loaded model and data. Nothing is written yet: bad input fails first.
pub fn resolve_run(
    c: &CommonArgs,
    out: &std::path::Path,
    fresh: TrainConfig,
) -> Result<(TrainConfig, Loaded)> {
    let mut cfg = if c.resume {
        let mut cfg = TrainConfig::load(&RunDir::open(out)?.path("config.json"))?;
        cfg.device = c.device.clone();
        cfg
    } else {
        fresh
    };
    let l = load(&cfg)?;
    // a fresh run records what its data was read from (a resumed one keeps its record)
    cfg.data = Some(l.data.provenance.clone());
    Ok((cfg, l))
}

/// The run directory: opened with --resume, else created (refusing a non-empty one without
/// --overwrite) with the resolved config saved in it.
pub fn open_run(c: &CommonArgs, out: &std::path::Path, cfg: &TrainConfig) -> Result<RunDir> {
    if c.resume {
        Ok(RunDir::open(out)?)
    } else {
        let run = RunDir::create(out, c.overwrite)?;
        cfg.save(&run.path("config.json"))?;
        Ok(run)
    }
}

pub fn loop_opts(c: &CommonArgs, quiet: bool) -> LoopOpts {
    LoopOpts { resume: c.resume, quiet }
}
