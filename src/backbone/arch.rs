//! What the search and the structures need to know of a backbone, whatever its family: its delta
//! sites (checkpoint module paths, in model order) and its parameter count. Both come from a walk of
//! the family's own loader over shapes alone ([`super::loader`]), made once per config.
use super::config::BertConfig;
use super::llama_config::LlamaConfig;
use super::loader::{Loader, Walk};
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

impl Arch for LlamaConfig {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        self.walk_cache.get(|vb| Llama::load(vb, self).map(|_| ()))
    }
}

/// The config.json of a supported checkpoint: a BERT-family encoder, a T5 encoder-decoder or a
/// Llama-family decoder (llama, qwen2, mistral).
#[derive(Debug, Clone)]
pub enum ModelConfig {
    Bert(BertConfig),
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

impl ModelConfig {
    /// `model_type: "t5"` is read as T5, anything else as a BERT-family config.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let model_type = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("model_type").and_then(|t| t.as_str()).map(str::to_string));
        let cfg = match model_type.as_deref() {
            Some("t5") => ModelConfig::T5(T5Config::from_json(&text, path)?),
            Some("llama" | "qwen2" | "mistral") => {
                ModelConfig::Llama(Box::new(LlamaConfig::from_json(&text, path)?))
            }
            _ => ModelConfig::Bert(BertConfig::from_file(path)?),
        };
        cfg.check().map_err(|e| Error::file(path, e.to_string()))?;
        Ok(cfg)
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

    /// A decoder-only causal LM (Llama family).
    pub fn is_causal_lm(&self) -> bool {
        matches!(self, ModelConfig::Llama(_))
    }

    /// One line for logs: family, layers, width.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Bert(c) => format!("{} layers, hidden {}", c.num_hidden_layers, c.hidden_size),
            ModelConfig::T5(c) => format!(
                "T5 {}+{} layers, d_model {}, {} FFN",
                c.num_layers,
                c.decoder_layers(),
                c.d_model,
                c.feed_forward_proj
            ),
            ModelConfig::Llama(c) => c.describe(),
        }
    }
}

impl Arch for ModelConfig {
    fn walk(&self) -> Arc<std::result::Result<Walk, String>> {
        match self {
            ModelConfig::Bert(c) => c.walk(),
            ModelConfig::T5(c) => c.walk(),
            ModelConfig::Llama(c) => c.walk(),
        }
    }
}
