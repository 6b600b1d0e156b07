//! The resolved configuration of a run (saved as config.json in every run directory), and where each of
//! its values came from.
use super::layers::Source;
use super::types::{DeviceSpec, Dtype, Method, Precision, Strategy};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything a training, search or run command does, resolved from its layers
/// ([`super::layers`]): built-in defaults, the task's schedule, `--config FILE`, the command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Builtin task name or a task-spec TOML path.
    pub task: String,
    pub method: Method,
    pub model: PathBuf,
    /// Where the task's files are (None: the task's Hugging Face Hub dataset).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// What the run's data was read from (files with size and sha256; for the Hub the repo, config and
    /// commit), recorded when the run is created; eval and --resume then read the same commit.
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
    /// Pad each batch's length up to a multiple of N (at most max_length): fewer batch shapes, so a
    /// search on CUDA replays its steps as CUDA graphs instead of capturing new ones (None: 16 for a
    /// search that runs CUDA graphs, no padding elsewhere).
    #[serde(default)]
    pub pad_to_multiple: Option<usize>,
    /// Keep only the first N training examples (file order, after the dev/test split).
    pub max_train_examples: Option<usize>,
    /// Keep only the first N dev and test examples.
    pub max_eval_examples: Option<usize>,
    pub structure: Option<PathBuf>,
    pub device: DeviceSpec,
    pub threads: Option<usize>,
    /// Also save a checkpoint every K steps (always at each evaluation).
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// Skip batches whose loss, gradient or updated parameters are not finite instead of stopping.
    #[serde(default)]
    pub skip_nonfinite: bool,
    /// Dtype of the frozen backbone matrices (deltas, head, norms and optimiser state stay fp32).
    #[serde(default = "fp32")]
    pub backbone_dtype: Dtype,
    /// Manual LoRA's rank, alpha, dropout, target modules and rank pattern (`train --method lora`; with a
    /// structure only the dropout applies).
    #[serde(default)]
    pub lora_r: Option<i64>,
    #[serde(default)]
    pub lora_alpha: Option<f64>,
    #[serde(default)]
    pub lora_dropout: Option<f64>,
    #[serde(default)]
    pub target_modules: Option<String>,
    #[serde(default)]
    pub rank_pattern: Option<String>,
    /// fp32, or bf16 activations and frozen matmuls with fp32 deltas, head and optimiser ([`Precision`]).
    #[serde(default = "fp32_precision")]
    pub precision: Precision,
    /// The search settings of `search` and `run` (absent for `train` / `retrain`).
    #[serde(default)]
    pub search: Option<SearchSettings>,
    /// Where each value came from (`epochs` -> task, `lr` -> cli, `search.order` -> default, ...).
    #[serde(skip)]
    pub sources: BTreeMap<String, Source>,
}

fn fp32() -> Dtype {
    Dtype::Fp32
}

fn fp32_precision() -> Precision {
    Precision::Fp32
}

/// What `search` and `run` add to a training config: the space, the budget and the bi-level optimiser.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    pub strategy: Strategy,
    /// mix, mix-peft, lora or a space TOML file.
    pub space: String,
    /// Budget as a fraction of the backbone.
    pub budget: Option<f64>,
    /// Budget as a parameter count.
    pub budget_params: Option<i64>,
    /// 1: first order; 2: second order.
    pub order: u8,
    pub alpha_lr: f64,
    pub beta: f64,
    /// Search epochs (`run`; a `search` command's epochs are its `epochs`).
    pub search_epochs: usize,
    /// Batch size of the search's D_w and D_alpha batches (default: batch_size).
    #[serde(default)]
    pub search_batch_size: Option<usize>,
}

impl RunConfig {
    /// The device (in a launched world, a CUDA device is this rank's `cuda:LOCAL_RANK`).
    pub fn device(&self) -> Result<tch::Device> {
        crate::dist::place(self.device.resolve()?)
    }

    /// Saves config.json: every value with where it came from, `{"epochs": {"value": 20, "from": "task"}}`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let plain = serde_json::to_value(self).map_err(|e| Error::Msg(e.to_string()))?;
        crate::artifact::write_json(path, &annotate(plain, "", &self.sources))
    }

    /// Reads config.json (annotated as [`RunConfig::save`] writes it, or plain).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(path, e.line(), e.to_string()))?;
        let mut sources = BTreeMap::new();
        let plain = strip(v, "", &mut sources);
        let mut cfg: RunConfig =
            serde_json::from_value(plain).map_err(|e| Error::file(path, e.to_string()))?;
        cfg.sources = sources;
        cfg.validate().map_err(|e| Error::file(path, e.to_string()))?;
        Ok(cfg)
    }

    /// Every numeric value within its range ([`super::limits`]), the device and the dtype usable.
    pub fn validate(&self) -> Result<()> {
        use super::limits::{check_f64, check_u64};
        for (k, v) in
            [("lr", self.lr), ("weight_decay", self.weight_decay), ("warmup_ratio", self.warmup_ratio)]
                .into_iter()
                .chain([("clip_norm", self.clip_norm)])
        {
            check_f64(k, v)?;
        }
        let counts = [
            ("epochs", Some(self.epochs)),
            ("batch_size", Some(self.batch_size)),
            ("eval_batch_size", Some(self.eval_batch_size)),
            ("max_length", Some(self.max_length)),
            ("max_steps", self.max_steps),
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
            ("max_train_examples", self.max_train_examples),
            ("max_eval_examples", self.max_eval_examples),
            ("threads", self.threads),
            ("lora_r", self.lora_r.map(|r| r.max(0) as usize)),
        ];
        for (k, v) in counts {
            if let Some(v) = v {
                check_u64(k, v as u64)?;
            }
        }
        if let Some(s) = &self.search {
            s.validate()?;
        }
        if let Some(a) = self.lora_alpha {
            check_f64("lora_alpha", a)?;
        }
        if let Some(d) = self.lora_dropout {
            check_f64("lora_dropout", d)?;
        }
        if self.method.is_full() && self.precision != Precision::Fp32 {
            return Err(Error::config(
                "--precision",
                format!(
                    "{} is for delta tuning: full fine-tuning trains the backbone in fp32",
                    self.precision.name()
                ),
            ));
        }
        if self.method.is_full() && self.backbone_dtype != Dtype::Fp32 {
            return Err(Error::config(
                "--backbone-dtype",
                format!(
                    "{} is for delta tuning: full fine-tuning trains the backbone in fp32",
                    self.backbone_dtype.name()
                ),
            ));
        }
        Ok(())
    }

    /// The manual-LoRA knobs of this run.
    pub fn lora_knobs(&self) -> crate::lora_targets::LoraKnobs {
        crate::lora_targets::LoraKnobs {
            r: self.lora_r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules: self.target_modules.clone(),
            rank_pattern: self.rank_pattern.clone(),
        }
    }

    /// Where `key` came from (`search.order` for a search setting).
    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).copied().unwrap_or(Source::Default)
    }
}

impl SearchSettings {
    pub fn validate(&self) -> Result<()> {
        use super::limits::{check_f64, check_u64};
        check_f64("alpha_lr", self.alpha_lr)?;
        check_f64("beta", self.beta)?;
        check_u64("order", self.order as u64)?;
        check_u64("search_epochs", self.search_epochs as u64)?;
        if let Some(b) = self.budget {
            check_f64("budget", b)?;
        }
        if let Some(b) = self.budget_params {
            if b < 1 {
                return Err(super::limits::out_of_range(
                    "budget_params",
                    &b.to_string(),
                    super::limits::Range::AtLeast(1),
                ));
            }
        }
        if let Some(b) = self.search_batch_size {
            check_u64("search_batch_size", b as u64)?;
        }
        Ok(())
    }
}

/// `{"k": v}` -> `{"k": {"value": v, "from": source}}`, one level into `search`.
fn annotate(v: Value, prefix: &str, sources: &BTreeMap<String, Source>) -> Value {
    let Value::Object(map) = v else { return v };
    let mut out = Map::new();
    for (k, v) in map {
        let key = format!("{prefix}{k}");
        let v = if k == "search" && prefix.is_empty() && v.is_object() {
            annotate(v, "search.", sources)
        } else {
            v
        };
        let from = sources.get(&key).copied().unwrap_or(Source::Default);
        out.insert(k, serde_json::json!({"value": v, "from": from}));
    }
    Value::Object(out)
}

/// The inverse of [`annotate`]; plain values (config.json of older runs) are taken as they are.
fn strip(v: Value, prefix: &str, sources: &mut BTreeMap<String, Source>) -> Value {
    let Value::Object(map) = v else { return v };
    let mut out = Map::new();
    for (k, v) in map {
        let key = format!("{prefix}{k}");
        let (value, from) = match v {
            Value::Object(mut o) if o.len() == 2 && o.contains_key("value") && o.contains_key("from") => {
                let from =
                    serde_json::from_value(o.remove("from").unwrap_or_default()).unwrap_or(Source::Default);
                (o.remove("value").unwrap_or_default(), Some(from))
            }
            other => (other, None),
        };
        if let Some(f) = from {
            sources.insert(key, f);
        }
        let value = if k == "search" && prefix.is_empty() { strip(value, "search.", sources) } else { value };
        out.insert(k, value);
    }
    Value::Object(out)
}
