//! The resolved configuration of a training run (saved as config.json in every run directory).
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Builtin task name or a task-spec TOML path.
    pub task: String,
    /// Manual method (`full`, `lora`, `adapter`, `bitfit`, `lnfit`, `lra`) or `structure`.
    pub method: String,
    pub model: PathBuf,
    /// The task files' directory; `None`: the task's `[hub]` dataset repo (the hub cache).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// What the run's data was read from (files with size and sha256; for the Hub the repo, config
    /// and commit), recorded when the run is created; eval and --resume then read the same commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::data::Provenance>,
    pub seed: u64,
    pub epochs: usize,
    /// Stop after this many optimiser steps (overrides epochs when set).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub clip_norm: f64,
    /// Evaluate dev every K steps (and always at the end of each epoch).
    pub eval_every: Option<usize>,
    pub max_length: usize,
    /// Batches per length bucket (0: plain shuffled batches); see `train::epoch_order_bucketed`.
    #[serde(default)]
    pub length_buckets: usize,
    /// Keep only the first N training examples (file order, after the dev/test split).
    pub max_train_examples: Option<usize>,
    /// Keep only the first N dev and test examples.
    pub max_eval_examples: Option<usize>,
    pub structure: Option<PathBuf>,
    pub device: String,
    pub threads: Option<usize>,
    /// Also save a checkpoint every K steps (always at each evaluation).
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// Skip batches whose loss or gradient is not finite instead of stopping.
    #[serde(default)]
    pub skip_nonfinite: bool,
    /// Dtype of the frozen backbone matrices: `fp32` or `bf16` (deltas, head, norms and optimiser
    /// state stay fp32).
    #[serde(default = "fp32")]
    pub backbone_dtype: String,
    /// The search settings of `search` and `run` (absent for `train` / `retrain`).
    #[serde(default)]
    pub search: Option<SearchSettings>,
}

/// What `search` and `run` add to a training config: the space, the budget and the bi-level optimiser.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// `s3pet` (search) or `random` (a random structure of the same space and budget).
    pub strategy: String,
    /// mix, lora or a space TOML file.
    pub space: String,
    /// Budget as a fraction of the backbone.
    pub budget: Option<f64>,
    /// Budget as a parameter count.
    pub budget_params: Option<i64>,
    /// 1: first order; 2: second order.
    pub order: u8,
    pub alpha_lr: f64,
    pub beta: f64,
    /// Search epochs (default: epochs).
    pub search_epochs: Option<usize>,
    /// Retraining epochs (default: epochs).
    pub retrain_epochs: Option<usize>,
    /// Batch size of the search's D_w and D_alpha batches (default: batch_size).
    #[serde(default)]
    pub search_batch_size: Option<usize>,
}

fn fp32() -> String {
    "fp32".into()
}

/// The libtorch kind of a `--backbone-dtype` value.
pub fn frozen_kind(dtype: &str) -> Result<tch::Kind> {
    match dtype {
        "fp32" | "float32" => Ok(tch::Kind::Float),
        "bf16" | "bfloat16" => Ok(tch::Kind::BFloat16),
        d => Err(Error::config("backbone_dtype", format!("unknown dtype `{d}` (fp32, bf16)"))),
    }
}

impl TrainConfig {
    pub fn device(&self) -> Result<tch::Device> {
        parse_device(&self.device)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::artifact::write_json(path, self)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::parse(path, e.line(), e.to_string()))
    }

    /// Default learning rate: 2e-5 for full fine-tuning, 5e-4 for delta tuning.
    pub fn default_lr(method: &str) -> f64 {
        if method == "full" {
            2e-5
        } else {
            5e-4
        }
    }
}

pub fn parse_device(s: &str) -> Result<tch::Device> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        s if s.starts_with("cuda:") => s[5..]
            .parse()
            .map(tch::Device::Cuda)
            .map_err(|_| Error::config("device", format!("bad device `{s}` (cpu, cuda, cuda:N)"))),
        s => Err(Error::config("device", format!("bad device `{s}` (cpu, cuda, cuda:N)"))),
    }
    .and_then(|d| {
        if let tch::Device::Cuda(i) = d {
            if !tch::Cuda::is_available() || i as i64 >= tch::Cuda::device_count() {
                return Err(Error::config(
                    "device",
                    format!("{s} requested but CUDA is unavailable (build with --features cuda, on a GPU machine)"),
                ));
            }
        }
        Ok(d)
    })
}
