//! What the search and the structures need to know of a backbone, whatever its family: its delta
//! sites (checkpoint module paths, in model order) and its parameter count.
use super::config::BertConfig;
use super::t5_config::T5Config;
use super::{bert_param_count, bert_sites, t5_param_count, t5_sites};
use crate::delta::SiteShape;
use crate::error::{Error, Result};
use std::path::Path;

pub trait Arch {
    /// Every delta site in model order.
    fn sites(&self) -> Vec<(String, SiteShape)>;
    /// Every tensor of the checkpoint, tied tensors once.
    fn param_count(&self) -> i64;
}

impl Arch for BertConfig {
    fn sites(&self) -> Vec<(String, SiteShape)> {
        bert_sites(self)
    }
    fn param_count(&self) -> i64 {
        bert_param_count(self)
    }
}

impl Arch for T5Config {
    fn sites(&self) -> Vec<(String, SiteShape)> {
        t5_sites(self)
    }
    fn param_count(&self) -> i64 {
        t5_param_count(self)
    }
}

/// The config.json of a supported checkpoint: a BERT-family encoder or a T5 encoder-decoder.
#[derive(Debug, Clone)]
pub enum ModelConfig {
    Bert(BertConfig),
    T5(T5Config),
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
        match model_type.as_deref() {
            Some("t5") => Ok(ModelConfig::T5(T5Config::from_json(&text, path)?)),
            _ => Ok(ModelConfig::Bert(BertConfig::from_file(path)?)),
        }
    }

    pub fn sites(&self) -> Vec<(String, SiteShape)> {
        match self {
            ModelConfig::Bert(c) => bert_sites(c),
            ModelConfig::T5(c) => t5_sites(c),
        }
    }

    pub fn param_count(&self) -> i64 {
        match self {
            ModelConfig::Bert(c) => bert_param_count(c),
            ModelConfig::T5(c) => t5_param_count(c),
        }
    }

    pub fn is_t5(&self) -> bool {
        matches!(self, ModelConfig::T5(_))
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
        }
    }
}

impl Arch for ModelConfig {
    fn sites(&self) -> Vec<(String, SiteShape)> {
        ModelConfig::sites(self)
    }
    fn param_count(&self) -> i64 {
        ModelConfig::param_count(self)
    }
}
