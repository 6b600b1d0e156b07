//! A backbone + deltas + task head, built from a model directory and a list of placements.
//! Encoders (BERT, RoBERTa, MPNet, DeBERTa-v2, DistilBERT) classify with their family's head; encoder-
//! decoders (T5) pose the task as text to text (the head is the task's label words).
use crate::backbone::loader::{check_placements, Loader};
use crate::backbone::{Bert, Encoder, Head, HeadLayout, Llama, ModelConfig, Placement, Weights, T5};
use crate::batch::Batch;
use crate::data::{Target, TaskSpec};
use crate::delta::{Ctx, GateMap, Gates, Pass};
use crate::error::{Error, Result};
use crate::params::{flat_grads, ParamStore};
use crate::prompt::Prompter;
use crate::text2text::Verbalizer;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// A Hugging Face directory (config.json, model.safetensors, tokenizer.json) of an encoder (BERT,
/// RoBERTa, XLM-RoBERTa, MPNet, DeBERTa-v2, DistilBERT) or a T5 encoder-decoder.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub cfg: ModelConfig,
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
        let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
        for f in ["model.safetensors", "tokenizer.json"] {
            if !dir.join(f).is_file() {
                return Err(Error::file(dir.join(f), "missing from the model directory"));
            }
        }
        Ok(ModelDir { dir: dir.to_path_buf(), cfg })
    }

    /// The longest input the model takes: `requested`, cut to what an encoder's position table holds
    /// (`max_position_embeddings`, less the padding offset of RoBERTa and MPNet) so that a long text is
    /// truncated instead of running past the table (with a warning when the user asked for the longer
    /// length: `explicit`).
    pub fn max_length(&self, requested: usize, explicit: bool) -> usize {
        match self.cfg.max_tokens() {
            Some((m, table)) if requested as i64 > m => {
                let m = m.max(1) as usize;
                if !explicit {
                    return m;
                }
                tracing::warn!(
                    "--max-length {requested} is more than {} allows (max_position_embeddings {table}: {m} \
                     tokens): inputs are truncated to {m} tokens",
                    self.dir.join("config.json").display()
                );
                m
            }
            _ => requested,
        }
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
        let weights = Weights::load_prefixed(&self.weights_path(), device, self.cfg.family().prefix())?;
        let mut store = ParamStore::new(device);
        let loader = Loader::new(&weights, &[], &mut store, false);
        load_body(&loader, &self.cfg).map_err(|e| {
            Error::file(self.dir.join("config.json"), format!("does not describe the weights: {e}"))
        })?;
        Ok(weights)
    }
}

/// The backbone of `cfg` read through `loader`.
fn load_body(loader: &Loader, cfg: &ModelConfig) -> Result<Backbone> {
    Ok(match cfg {
        ModelConfig::T5(c) => Backbone::T5(T5::load(&loader.root(), c)?),
        ModelConfig::Llama(c) => Backbone::Llama(Llama::load(&loader.root(), c)?),
        encoder => Backbone::Encoder(Encoder::load(&loader.root(), encoder)?),
    })
}

/// A loaded backbone, before the head is attached.
enum Backbone {
    Encoder(Encoder),
    T5(T5),
    Llama(Llama),
}

/// How the head is made: fresh (training) or the checkpoint's own classifier (fixtures); for a
/// text-to-text model, the task's label words.
#[derive(Clone)]
pub enum HeadInit {
    Fresh {
        num_labels: i64,
    },
    FromCheckpoint {
        num_labels: i64,
    },
    Words(Box<Verbalizer>),
    /// A decoder-only LLM's prompts and answer words (crate::prompt).
    Prompt(Box<Prompter>),
}

impl HeadInit {
    /// The head a task needs on the model of `md`: a fresh classifier, or T5's label words.
    pub fn for_task(spec: &TaskSpec, md: &ModelDir) -> Result<HeadInit> {
        Ok(match &md.cfg {
            ModelConfig::T5(c) => {
                HeadInit::Words(Box::new(Verbalizer::new(spec, &md.tokenizer_path(), c.eos_token_id)?))
            }
            ModelConfig::Llama(c) => HeadInit::Prompt(Box::new(Prompter::new(spec, &md.dir, c)?)),
            _ => HeadInit::Fresh { num_labels: spec.num_labels() as i64 },
        })
    }
}

/// The network: an encoder with its family's classification head, or a T5 with the task's label words.
pub enum Body {
    Classifier {
        encoder: Encoder,
        head: Head,
    },
    Text2Text {
        t5: T5,
        words: Box<Verbalizer>,
    },
    /// A decoder-only LLM: the task as prompts, answer words or generation (crate::causal).
    CausalLm {
        llama: Llama,
        prompt: Box<Prompter>,
    },
}

pub struct Model {
    pub body: Body,
    /// The config the model was built from.
    pub cfg: ModelConfig,
    /// Everything trainable: deltas (or the whole backbone for full fine-tuning) and the head.
    pub store: ParamStore,
    pub delta_params: i64,
    pub head_params: i64,
    backbone_params: i64,
    pub device: Device,
    /// The segment map of a pass over `store` (none under full fine-tuning: the backbone's tensors are
    /// read as the store's own leaves).
    gate_map: Option<GateMap>,
}

/// What a pass reads: the store's own values (as a fresh leaf when `grad`), or other values in its flat
/// layout, (N) or with a replica dimension (R, N).
pub enum Values<'a> {
    Store { grad: bool },
    Given(&'a Tensor),
}

/// Held while a thread seeds libtorch's process-wide generator and draws from it ([`Model::build`],
/// [`manual_seed`]).
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `tch::manual_seed`, waiting for a [`Model::build`] of another thread to finish its draws (the ranks of
/// an in-process world re-seed before every step).
pub fn manual_seed(seed: i64) {
    let _turn = SEEDED.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed);
}

impl Model {
    /// Seeds libtorch's generator with `seed`, then creates deltas in site order and the head. Builds
    /// of several threads (the ranks of an in-process world) take turns, so each draws its own seed's
    /// values from the process-wide generator.
    pub fn build<C: Clone + Into<ModelConfig>>(
        cfg: &C,
        weights: &Weights,
        placements: &[Placement],
        full: bool,
        head: HeadInit,
        seed: u64,
    ) -> Result<Model> {
        let _turn = SEEDED.lock().unwrap_or_else(|p| p.into_inner());
        let cfg: ModelConfig = cfg.clone().into();
        tch::manual_seed(seed as i64);
        let device = weights.device();
        let mut store = ParamStore::new(device);
        let (backbone, walk) = {
            let loader = Loader::new(weights, placements, &mut store, full);
            let backbone = load_body(&loader, &cfg)?;
            (backbone, loader.finish())
        };
        check_placements(placements, &walk)?;
        let delta_params = store.numel();
        let body = match (backbone, head) {
            (Backbone::T5(t5), HeadInit::Words(words)) => Body::Text2Text { t5, words },
            (Backbone::T5(_), _) => {
                return Err(Error::Msg("a T5 model needs the task's label words (HeadInit::Words)".into()))
            }
            (Backbone::Llama(llama), HeadInit::Prompt(prompt)) => Body::CausalLm { llama, prompt },
            (Backbone::Llama(_), _) => {
                return Err(Error::Msg("a decoder LLM needs the task's prompts (HeadInit::Prompt)".into()))
            }
            (Backbone::Encoder(encoder), head) => {
                let head = Self::classifier(&cfg, weights, head, &mut store)?;
                Body::Classifier { encoder, head }
            }
        };
        let head_params = store.numel() - delta_params;
        let backbone_params = walk.params;
        let gate_map = if full {
            None
        } else {
            let shapes = store.entries().iter().map(|(_, t)| t.size()).collect();
            Some(GateMap::new(shapes, &walk.scaled, device)?)
        };
        Ok(Model { body, cfg, store, delta_params, head_params, backbone_params, device, gate_map })
    }

    /// The head of an encoder's family: fresh, or the checkpoint's own.
    fn classifier(
        cfg: &ModelConfig,
        weights: &Weights,
        head: HeadInit,
        store: &mut ParamStore,
    ) -> Result<Head> {
        let layout =
            HeadLayout::of(cfg).ok_or_else(|| Error::Msg("this model has no classification head".into()))?;
        match head {
            HeadInit::Fresh { num_labels } => Ok(Head::new(layout, num_labels, store)),
            HeadInit::FromCheckpoint { num_labels } => Head::load(layout, weights, num_labels, store),
            HeadInit::Words(_) | HeadInit::Prompt(_) => {
                Err(Error::Msg("label words are the head of text-to-text models, not of an encoder".into()))
            }
        }
    }

    /// The encoder, if this is a classifier.
    pub fn encoder(&self) -> Option<&Encoder> {
        match &self.body {
            Body::Classifier { encoder, .. } => Some(encoder),
            _ => None,
        }
    }

    /// The BERT / RoBERTa encoder, if this is one.
    pub fn bert(&self) -> Option<&Bert> {
        self.encoder().and_then(Encoder::as_bert)
    }

    pub fn head(&self) -> Option<&Head> {
        match &self.body {
            Body::Classifier { head, .. } => Some(head),
            _ => None,
        }
    }

    pub fn t5(&self) -> Option<&T5> {
        match &self.body {
            Body::Text2Text { t5, .. } => Some(t5),
            _ => None,
        }
    }

    /// The decoder LLM and its prompts, if this is one.
    pub fn causal(&self) -> Option<(&Llama, &Prompter)> {
        match &self.body {
            Body::CausalLm { llama, prompt } => Some((llama, prompt)),
            _ => None,
        }
    }

    /// The label words of a text-to-text model.
    pub fn words(&self) -> Option<&Verbalizer> {
        match &self.body {
            Body::Text2Text { words, .. } => Some(words),
            _ => None,
        }
    }

    /// Every tensor the backbone's loader read (tied tensors once).
    pub fn backbone_params(&self) -> i64 {
        self.backbone_params
    }

    /// Whether every backbone tensor is trained (full fine-tuning: no gates, the deltas are the backbone).
    pub fn is_full(&self) -> bool {
        self.gate_map.is_none()
    }

    /// Everything trained: deltas (or the whole backbone) and the head.
    pub fn trainable_params(&self) -> i64 {
        self.delta_params + self.head_params
    }

    /// Target token ids (b, s) of a text-to-text batch: each example's label word, -100 after its end.
    fn target_ids(&self, words: &Verbalizer, batch: &Batch) -> Tensor {
        let rows: Vec<&[i64]> = batch.targets.iter().map(|t| words.target_ids(t)).collect();
        let s = rows.iter().map(|r| r.len()).max().unwrap_or(1);
        let mut flat = vec![-100i64; rows.len() * s];
        for (i, r) in rows.iter().enumerate() {
            flat[i * s..i * s + r.len()].copy_from_slice(r);
        }
        Tensor::from_slice(&flat).view([rows.len() as i64, s as i64]).to_device(self.device)
    }

    /// Task logits, one row per batch row: (rows, num_labels); for T5 the teacher-forced LM logits of
    /// the label words (rows, target length, vocab).
    pub fn logits(&self, batch: &Batch, ctx: &Ctx) -> Tensor {
        let (encoder, head) = match &self.body {
            Body::Classifier { encoder, head } => (encoder, head),
            Body::Text2Text { t5, words } => {
                return t5.logits(&batch.ids, &batch.mask, &self.target_ids(words, batch), ctx)
            }
            Body::CausalLm { llama, prompt } => return crate::causal::logits(llama, prompt, batch, ctx),
        };
        let hidden = encoder.encode(&batch.ids, &batch.mask, &batch.types, ctx, false);
        let last = hidden
            .last()
            .map(|t| t.shallow_clone())
            .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, self.device)));
        head.forward_ctx(&encoder.features(&last, ctx), ctx)
    }

    /// Mean loss: cross-entropy (classification; softmax over choices for multiple choice) or MSE; for
    /// T5 cross-entropy over the label words' tokens.
    pub fn loss_from_logits(&self, logits: &Tensor, batch: &Batch) -> Tensor {
        if let Body::Text2Text { words, .. } = &self.body {
            return T5::loss_from_logits(logits, &self.target_ids(words, batch));
        }
        if let Body::CausalLm { prompt, .. } = &self.body {
            return crate::causal::loss_from_logits(prompt, logits, batch);
        }
        if batch.choices > 1 {
            let scores = logits.view([batch.len() as i64, batch.choices]); // (b, choices)
            scores.cross_entropy_for_logits(&batch.labels)
        } else if batch.is_regression() {
            logits.squeeze_dim(-1).mse_loss(&batch.labels, tch::Reduction::Mean)
        } else {
            logits.cross_entropy_for_logits(&batch.labels)
        }
    }

    /// How many terms the mean loss of `batch` averages: its examples, or its label-word tokens (T5) or
    /// response tokens (a generation prompt), 0-d float on the device; 0 for a stand-in batch. A rank's
    /// weight when the ranks' gradients are averaged (crate::dist::reduce_pass).
    pub fn loss_terms(&self, batch: &Batch) -> Tensor {
        let n = match &self.body {
            _ if batch.stand_in => 0,
            Body::Text2Text { words, .. } => batch.targets.iter().map(|t| words.target_ids(t).len()).sum(),
            Body::CausalLm { prompt, .. } if prompt.kind == crate::data::TaskKind::Generation => {
                return crate::causal::response_tokens(batch);
            }
            _ => batch.len(),
        };
        crate::optim::upload(&Tensor::from_slice(&[n as f32]), batch.ids.device()).reshape([])
    }

    pub fn loss(&self, batch: &Batch, ctx: &Ctx) -> Tensor {
        let logits = self.logits(batch, ctx);
        self.loss_from_logits(&logits, batch)
    }

    /// A pass over `values` with gates `z` (`None`: at 1); `None` under full fine-tuning.
    pub fn pass(&self, values: Values, z: Option<&Tensor>) -> Result<Option<Pass>> {
        let Some(map) = &self.gate_map else { return Ok(None) };
        let pass = match values {
            Values::Store { grad } => Pass::over_flat(map, self.store.flat(), grad, z)?,
            Values::Given(v) => Pass::new(map, v.shallow_clone(), z)?,
        };
        Ok(Some(pass))
    }

    /// The loss of each replica of a replica pass (`gates` holds one): the batch runs R times in one
    /// forward, replica r on rows r b .. (r + 1) b; (R) losses.
    pub fn replica_losses(&self, batch: &Batch, train: bool, gates: &Gates) -> Tensor {
        let r = gates.as_pass().and_then(|p| p.replicas()).unwrap_or(1);
        let logits = self.logits(&batch.repeated(r), &Ctx::gated(train, gates));
        let losses: Vec<Tensor> =
            logits.chunk(r, 0).iter().map(|l| self.loss_from_logits(l, batch)).collect();
        Tensor::stack(&losses, 0)
    }

    /// The mean loss of `batch` and the flat gradient of every trainable parameter (one backward; through
    /// a pass, whose leaf's gradient is that flat gradient, except under full fine-tuning).
    pub fn loss_and_grads(&self, batch: &Batch, train: bool) -> Result<(Tensor, Tensor)> {
        let Some(pass) = self.pass(Values::Store { grad: true }, None)? else {
            let loss = self.loss(batch, &Ctx { train, gates: None });
            let g = self.store.grads(&loss);
            return Ok((loss, g));
        };
        let leaf = pass.values.shallow_clone();
        let gates = Gates::pass(pass);
        let loss = self.loss(batch, &Ctx::gated(train, &gates));
        let g = flat_grads(&loss, &[&leaf]);
        Ok((loss, g))
    }

    /// Greedy decodes (rows, 1 + steps) of a text-to-text model, long enough for every label word.
    pub fn generate(&self, batch: &Batch, ctx: &Ctx) -> Option<Tensor> {
        let Body::Text2Text { t5, words } = &self.body else { return None };
        Some(t5.generate(&batch.ids, &batch.mask, words.max_len() as i64, ctx).to_device(Device::Cpu))
    }

    /// Predictions (no gradients) for a batch: class index or score per example (T5: the greedy decode
    /// mapped back to a label; a class past the labels when it is none). Non-finite logits are an error:
    /// a broken model must not read as a weak one.
    pub fn predict(&self, batch: &Batch, ctx: &Ctx) -> Result<Vec<Target>> {
        if let Body::CausalLm { llama, prompt } = &self.body {
            return crate::causal::predict(llama, prompt, batch, ctx);
        }
        if let (Some(ids), Some(words)) = (self.generate(batch, ctx), self.words()) {
            let rows = Vec::<Vec<i64>>::try_from(&ids).map_err(|e| tensor_error("generated ids", e))?;
            return Ok(rows.iter().map(|r| words.decode(r)).collect());
        }
        let logits = tch::no_grad(|| self.logits(batch, ctx)).to_device(Device::Cpu);
        check_finite(&logits, "logits")?;
        Ok(if batch.choices > 1 {
            let best = logits.view([batch.len() as i64, batch.choices]).argmax(-1, false);
            classes(&best)?
        } else if batch.is_regression() {
            let scores =
                Vec::<f32>::try_from(&logits.squeeze_dim(-1)).map_err(|e| tensor_error("scores", e))?;
            scores.into_iter().map(Target::Score).collect()
        } else {
            classes(&logits.argmax(-1, false))?
        })
    }
}

fn tensor_error(what: &str, e: tch::TchError) -> Error {
    Error::Tensor { key: what.into(), msg: format!("cannot read back: {e}") }
}

fn classes(best: &Tensor) -> Result<Vec<Target>> {
    let v = Vec::<i64>::try_from(best).map_err(|e| tensor_error("predicted classes", e))?;
    Ok(v.into_iter().map(|c| Target::Class(c as usize)).collect())
}

/// An error when `t` holds a NaN or an infinity.
pub fn check_finite(t: &Tensor, what: &str) -> Result<()> {
    let finite = t.isfinite().all().int64_value(&[]) == 1;
    if finite {
        Ok(())
    } else {
        Err(Error::Train(format!("non-finite {what}: the model's output holds NaN or infinity")))
    }
}
