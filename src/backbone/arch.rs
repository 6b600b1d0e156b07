//! What the search and the structures need to know of a backbone, whatever its family: its delta
//! sites (checkpoint module paths, in model order) and its parameter count. Both come from a walk of
//! the family's own loader over shapes alone ([`super::loader`]), made once per config.
use super::config::BertConfig;
use super::deberta::{Deberta, DebertaConfig};
use super::distilbert::{DistilBert, DistilBertConfig};
use super::llama_config::LlamaConfig;
use super::loader::{Loader, Walk};
use super::mpnet::{Mpnet, MpnetConfig};
use super::t5_config::T5Config;
use super::{Bert, Llama, T5};
use crate::delta::SiteShape;
use crate::error::{Error, Result};
use crate::params::ParamStore;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A config's shape walk, computed on first use (a config is not changed after it is read).
#[derive(Debug, Clone, Default)]
pub struct WalkCache(OnceLock<Arc<std::result::Result<Walk, String>>>);

impl WalkCache {
    fn get(
        &self,
        walk: impl FnOnce(&super::loader::Vb) -> Result<()>,
    ) -> Arc<std::result::Result<Walk, String>> {
        self.0
            .get_or_init(|| {
                let mut store = ParamStore::new(tch::Device::Cpu);
                let loader = Loader::shapes(&mut store);
                let done = walk(&loader.root());
                Arc::new(done.map(|_| loader.finish()).map_err(|e| e.to_string()))
            })
            .clone()
    }
}

pub trait Arch {
    /// The walk of this family's loader over the config's shapes.
    fn walk(&self) -> Arc<std::result::Result<Walk, String>>;

    /// Every delta site in model order (empty when the config cannot be walked: see [`Arch::check`]).
    fn sites(&self) -> Vec<(String, SiteShape)> {
        match &*self.walk() {
            Ok(w) => w.sites.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Every tensor of the checkpoint, tied tensors once.
    fn param_count(&self) -> i64 {
        match &*self.walk() {
            Ok(w) => w.params,
            Err(_) => 0,
        }
    }

    /// Every tensor the loader reads, with its shape (e.g. to make random weights of a shape).
    fn tensor_shapes(&self) -> Vec<(String, Vec<i64>)> {
        match &*self.walk() {
            Ok(w) => w.tensors.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// An error when the walk failed (a config no module accepts).
    fn check(&self) -> Result<()> {
        match &*self.walk() {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::Msg(format!("the model config cannot be loaded: {e}"))),
        }
    }
}

impl Arch for BertConfig {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        self.walk_cache.get(|vb| Bert::load(vb, self).map(|_| ()))
    }
}

impl Arch for T5Config {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        self.walk_cache.get(|vb| T5::load(vb, self).map(|_| ()))
    }
}

impl Arch for MpnetConfig {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        self.walk_cache.get(|vb| Mpnet::load(vb, self).map(|_| ()))
    }
}

impl Arch for DebertaConfig {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        self.walk_cache.get(|vb| Deberta::load(vb, self).map(|_| ()))
    }
}

impl Arch for DistilBertConfig {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        self.walk_cache.get(|vb| DistilBert::load(vb, self).map(|_| ()))
    }
}

/// A model family: its config.json's `model_type`, the backbone's prefix in its task model's
/// checkpoint and PEFT keys, and the transformers class of the classification model (merge, PEFT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    Roberta,
    XlmRoberta,
    Mpnet,
    DebertaV2,
    DistilBert,
    T5,
    /// A Llama-family causal LM (llama, qwen2, mistral): sites and PEFT keys keep the checkpoint's
    /// `model.` paths.
    Llama,
}

impl Family {
    /// The submodule of the task model that holds the backbone (`bert.` in BertForSequenceClassification).
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert.",
            Family::Roberta | Family::XlmRoberta => "roberta.",
            Family::Mpnet => "mpnet.",
            Family::DebertaV2 => "deberta.",
            Family::DistilBert => "distilbert.",
            Family::T5 | Family::Llama => "",
        }
    }

    /// transformers' sequence-classification class of this family.
    pub fn classifier_class(self) -> &'static str {
        match self {
            Family::Bert => "BertForSequenceClassification",
            Family::Roberta => "RobertaForSequenceClassification",
            Family::XlmRoberta => "XLMRobertaForSequenceClassification",
            Family::Mpnet => "MPNetForSequenceClassification",
            Family::DebertaV2 => "DebertaV2ForSequenceClassification",
            Family::DistilBert => "DistilBertForSequenceClassification",
            Family::T5 => "T5ForConditionalGeneration",
            Family::Llama => "LlamaForCausalLM",
        }
    }
}

impl Arch for LlamaConfig {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        self.walk_cache.get(|vb| Llama::load(vb, self).map(|_| ()))
    }
}

/// The config.json of a supported checkpoint: an encoder (BERT / RoBERTa / XLM-RoBERTa, MPNet,
/// DeBERTa-v2/v3, DistilBERT), a T5 encoder-decoder or a Llama-family decoder (llama, qwen2, mistral).
#[derive(Debug, Clone)]
pub enum ModelConfig {
    Bert(BertConfig),
    Mpnet(MpnetConfig),
    Deberta(DebertaConfig),
    DistilBert(DistilBertConfig),
    T5(T5Config),
    Llama(Box<LlamaConfig>),
}

impl From<LlamaConfig> for ModelConfig {
    fn from(c: LlamaConfig) -> Self {
        ModelConfig::Llama(Box::new(c))
    }
}

impl From<BertConfig> for ModelConfig {
    fn from(c: BertConfig) -> Self {
        ModelConfig::Bert(c)
    }
}

impl From<T5Config> for ModelConfig {
    fn from(c: T5Config) -> Self {
        ModelConfig::T5(c)
    }
}

/// The model types config.json may name.
pub const MODEL_TYPES: &str =
    "bert, roberta, xlm-roberta, mpnet, deberta-v2, distilbert, t5, llama, qwen2, mistral";

impl ModelConfig {
    /// Reads config.json by its `model_type` (none: BERT). When a model.safetensors lies beside it, the
    /// families whose checkpoints may or may not hold an unused pooler (RoBERTa, MPNet) are told which,
    /// so that the parameter count from the config is the checkpoint's.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg = Self::parse(&text, path)?;
        cfg.observe_pooler(&path.with_file_name("model.safetensors"));
        cfg.check().map_err(|e| Error::file(path, e.to_string()))?;
        Ok(cfg)
    }

    /// Reads config.json's text by its `model_type` (`path` names it in errors); the pooler of RoBERTa
    /// and MPNet is assumed (see [`ModelConfig::from_file`]).
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg = Self::parse(text, path)?;
        cfg.check().map_err(|e| Error::file(path, e.to_string()))?;
        Ok(cfg)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let model_type = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("model_type").and_then(|t| t.as_str()).map(str::to_string));
        let cfg = match model_type.as_deref() {
            Some("t5") => ModelConfig::T5(T5Config::from_json(text, path)?),
            Some("mpnet") => ModelConfig::Mpnet(MpnetConfig::from_json(text, path)?),
            Some("deberta-v2") => ModelConfig::Deberta(DebertaConfig::from_json(text, path)?),
            Some("distilbert") => ModelConfig::DistilBert(DistilBertConfig::from_json(text, path)?),
            None | Some("bert" | "roberta" | "xlm-roberta") => {
                ModelConfig::Bert(BertConfig::from_json(text, path)?)
            }
            Some("llama" | "qwen2" | "mistral") => {
                ModelConfig::Llama(Box::new(LlamaConfig::from_json(text, path)?))
            }
            Some(t) => {
                return Err(Error::file(path, format!("model_type `{t}` is not supported ({MODEL_TYPES})")))
            }
        };
        Ok(cfg)
    }

    /// Tells a family with an optional, unused pooler (RoBERTa, MPNet) whether the checkpoint `weights`
    /// has one, from its header. A missing or unreadable file leaves the assumption (a pooler, as hub
    /// checkpoints have); loading the weights then names what is wrong with it.
    fn observe_pooler(&mut self, weights: &Path) {
        let prefix = self.family().prefix();
        let slot = match self {
            ModelConfig::Bert(c) if c.is_roberta() => &mut c.pooler,
            ModelConfig::Mpnet(c) => &mut c.pooler,
            _ => return,
        };
        if let Ok(names) = super::weights::safetensors_names(weights) {
            *slot = names.iter().any(|n| n.strip_prefix(prefix).unwrap_or(n) == "pooler.dense.weight");
        }
    }

    pub fn family(&self) -> Family {
        match self {
            ModelConfig::Bert(c) => match c.model_type.as_deref() {
                Some("roberta") => Family::Roberta,
                Some("xlm-roberta") => Family::XlmRoberta,
                _ => Family::Bert,
            },
            ModelConfig::Mpnet(_) => Family::Mpnet,
            ModelConfig::Deberta(_) => Family::DebertaV2,
            ModelConfig::DistilBert(_) => Family::DistilBert,
            ModelConfig::T5(_) => Family::T5,
            ModelConfig::Llama(_) => Family::Llama,
        }
    }

    /// Every delta site in model order (see [`Arch::sites`]).
    pub fn sites(&self) -> Vec<(String, SiteShape)> {
        Arch::sites(self)
    }

    /// Every tensor of the checkpoint, tied tensors once (see [`Arch::param_count`]).
    pub fn param_count(&self) -> i64 {
        Arch::param_count(self)
    }

    pub fn is_t5(&self) -> bool {
        matches!(self, ModelConfig::T5(_))
    }

    /// The longest input the position table takes, and `max_position_embeddings` (`None`: no table
    /// limits the input).
    pub fn max_tokens(&self) -> Option<(i64, i64)> {
        match self {
            ModelConfig::Bert(c) => Some((c.max_tokens(), c.max_position_embeddings)),
            ModelConfig::Mpnet(c) => Some((c.max_tokens(), c.max_position_embeddings)),
            ModelConfig::Deberta(c) => c.max_tokens().map(|m| (m, c.max_position_embeddings)),
            ModelConfig::DistilBert(c) => Some((c.max_position_embeddings, c.max_position_embeddings)),
            ModelConfig::T5(_) | ModelConfig::Llama(_) => None,
        }
    }

    /// (hidden size, layers) of an encoder.
    fn width_depth(&self) -> (i64, i64) {
        match self {
            ModelConfig::Bert(c) => (c.hidden_size, c.num_hidden_layers),
            ModelConfig::Mpnet(c) => (c.hidden_size, c.num_hidden_layers),
            ModelConfig::Deberta(c) => (c.hidden_size, c.num_hidden_layers),
            ModelConfig::DistilBert(c) => (c.dim, c.n_layers),
            ModelConfig::T5(c) => (c.d_model, c.num_layers),
            ModelConfig::Llama(c) => (c.hidden_size, c.num_hidden_layers),
        }
    }

    /// The vocabulary's size (rows of the token embedding).
    pub fn vocab_size(&self) -> i64 {
        match self {
            ModelConfig::Bert(c) => c.vocab_size,
            ModelConfig::Mpnet(c) => c.vocab_size,
            ModelConfig::Deberta(c) => c.vocab_size,
            ModelConfig::DistilBert(c) => c.vocab_size,
            ModelConfig::T5(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }

    /// The same config with every dropout probability at 0 (e.g. to compare two computations of one
    /// function).
    pub fn without_dropout(&self) -> ModelConfig {
        let mut cfg = self.clone();
        match &mut cfg {
            ModelConfig::Bert(c) => {
                (c.hidden_dropout_prob, c.attention_probs_dropout_prob) = (0.0, 0.0);
                c.classifier_dropout = Some(0.0);
            }
            ModelConfig::Mpnet(c) => (c.hidden_dropout_prob, c.attention_probs_dropout_prob) = (0.0, 0.0),
            ModelConfig::Deberta(c) => {
                (c.hidden_dropout_prob, c.attention_probs_dropout_prob) = (0.0, 0.0);
                (c.pooler_dropout, c.cls_dropout) = (0.0, Some(0.0));
            }
            ModelConfig::DistilBert(c) => {
                (c.dropout, c.attention_dropout, c.seq_classif_dropout) = (0.0, 0.0, 0.0)
            }
            ModelConfig::T5(c) => c.dropout_rate = 0.0,
            ModelConfig::Llama(c) => c.attention_dropout = 0.0,
        }
        cfg
    }

    /// A decoder-only causal LM (Llama family).
    pub fn is_causal_lm(&self) -> bool {
        matches!(self, ModelConfig::Llama(_))
    }

    /// One line for logs: family, layers, width.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::T5(c) => format!(
                "T5 {}+{} layers, d_model {}, {} FFN",
                c.num_layers,
                c.decoder_layers(),
                c.d_model,
                c.feed_forward_proj
            ),
            ModelConfig::Llama(c) => c.describe(),
            other => {
                let (d, n) = other.width_depth();
                format!("{:?} {n} layers, hidden {d}", other.family())
            }
        }
    }
}

impl Arch for ModelConfig {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        match self {
            ModelConfig::Bert(c) => c.walk(),
            ModelConfig::Mpnet(c) => c.walk(),
            ModelConfig::Deberta(c) => c.walk(),
            ModelConfig::DistilBert(c) => c.walk(),
            ModelConfig::T5(c) => c.walk(),
            ModelConfig::Llama(c) => c.walk(),
        }
    }
}
