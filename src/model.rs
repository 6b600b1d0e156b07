//! A backbone + deltas + task head, built from a model directory and a list of placements.
use crate::backbone::{Bert, BertConfig, Head, Placement, SiteFactory, Weights};
use crate::batch::Batch;
use crate::data::Target;
use crate::delta::Ctx;
use crate::error::{Error, Result};
use crate::params::ParamStore;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// A Hugging Face BERT-family directory: config.json, model.safetensors, tokenizer.json.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub cfg: BertConfig,
}

impl ModelDir {
    /// Opens a local directory, or a hub model id (`org/name`) through the hub cache ([`crate::hub`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = &crate::hub::resolve(dir)?;
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "model directory not found (run scripts/setup.sh, or pass --model DIR with config.json, \
                 model.safetensors and tokenizer.json)",
            ));
        }
        let cfg = BertConfig::from_file(&dir.join("config.json"))?;
        for f in ["model.safetensors", "tokenizer.json"] {
            if !dir.join(f).is_file() {
                return Err(Error::file(dir.join(f), "missing from the model directory"));
            }
        }
        Ok(ModelDir { dir: dir.to_path_buf(), cfg })
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
    /// The checkpoint's tensors, each checked against config.json (name and shape) now, so that a model
    /// directory whose config and weights disagree fails before anything is written.
    pub fn load_weights(&self, device: Device) -> Result<Weights> {
        let weights = Weights::load(&self.weights_path(), device)?;
        let mut store = ParamStore::new(device);
        Bert::load(&weights, &self.cfg, &mut SiteFactory { placements: &[], store: &mut store }, false)
            .map_err(|e| {
                Error::file(self.dir.join("config.json"), format!("does not describe the weights: {e}"))
            })?;
        Ok(weights)
    }
}

/// How the head is made: fresh (training) or the checkpoint's own classifier (fixtures).
#[derive(Debug, Clone, Copy)]
pub enum HeadInit {
    Fresh { num_labels: i64 },
    FromCheckpoint { num_labels: i64 },
}

pub struct Model {
    pub bert: Bert,
    pub head: Head,
    /// Everything trainable: deltas (or the whole backbone for full fine-tuning) and the head.
    pub store: ParamStore,
    pub delta_params: i64,
    pub head_params: i64,
    pub device: Device,
}

impl Model {
    /// Seeds libtorch's generator with `seed`, then creates deltas in site order and the head.
    pub fn build(
        cfg: &BertConfig,
        weights: &Weights,
        placements: &[Placement],
        full: bool,
        head: HeadInit,
        seed: u64,
    ) -> Result<Model> {
        tch::manual_seed(seed as i64);
        let device = weights.device();
        let mut store = ParamStore::new(device);
        let bert = {
            let mut factory = SiteFactory { placements, store: &mut store };
            Bert::load(weights, cfg, &mut factory, full)?
        };
        let sites = crate::backbone::bert_sites(cfg);
        for p in placements {
            if !sites.iter().any(|(s, _)| *s == p.spec.site) {
                return Err(Error::site(&p.spec.site, "no such site in this model"));
            }
        }
        let body_params = store.numel();
        let d = cfg.hidden_size;
        let drop = cfg.hidden_dropout_prob;
        let head = match head {
            HeadInit::Fresh { num_labels } => {
                Head::new(d, num_labels, cfg.initializer_range, drop, &mut store)
            }
            HeadInit::FromCheckpoint { num_labels } => Head::load(weights, d, num_labels, drop, &mut store)?,
        };
        let head_params = store.numel() - body_params;
        Ok(Model { bert, head, store, delta_params: body_params, head_params, device })
    }

    /// Task logits, one row per batch row: (rows, num_labels).
    pub fn logits(&self, batch: &Batch, ctx: &Ctx) -> Tensor {
        let gates = ctx.split_gates();
        let ctx = &Ctx { gates: ctx.z.map(|_| gates.as_slice()), ..*ctx };
        let hidden = self.bert.encode(&batch.ids, &batch.mask, &batch.types, ctx, false);
        let last = hidden
            .last()
            .map(|t| t.shallow_clone())
            .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, self.device)));
        let pooled = self.bert.pool(&last, ctx);
        self.head.forward(&pooled, ctx.train)
    }

    /// Mean loss: cross-entropy (classification; softmax over choices for multiple choice) or MSE.
    pub fn loss_from_logits(&self, logits: &Tensor, batch: &Batch) -> Tensor {
        if batch.choices > 1 {
            let scores = logits.view([batch.len() as i64, batch.choices]); // (b, choices)
            scores.cross_entropy_for_logits(&batch.labels)
        } else if batch.is_regression() {
            logits.squeeze_dim(-1).mse_loss(&batch.labels, tch::Reduction::Mean)
        } else {
            logits.cross_entropy_for_logits(&batch.labels)
        }
    }

    pub fn loss(&self, batch: &Batch, ctx: &Ctx) -> Tensor {
        let logits = self.logits(batch, ctx);
        self.loss_from_logits(&logits, batch)
    }

    /// Predictions (no gradients) for a batch: class index or score per example.
    pub fn predict(&self, batch: &Batch, ctx: &Ctx) -> Vec<Target> {
        tch::no_grad(|| {
            let logits = self.logits(batch, ctx).to_device(Device::Cpu);
            if batch.choices > 1 {
                let best = logits.view([batch.len() as i64, batch.choices]).argmax(-1, false);
                Vec::<i64>::try_from(&best)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| Target::Class(c as usize))
                    .collect()
            } else if batch.is_regression() {
                Vec::<f32>::try_from(&logits.squeeze_dim(-1))
                    .unwrap_or_default()
                    .into_iter()
                    .map(Target::Score)
                    .collect()
            } else {
                let best = logits.argmax(-1, false);
                Vec::<i64>::try_from(&best)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| Target::Class(c as usize))
                    .collect()
            }
        })
    }
}
