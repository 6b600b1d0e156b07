//! `config.json` of a Hugging Face BERT-family checkpoint: BERT itself, and RoBERTa / XLM-RoBERTa (the same
//! modules; positions counted from the padding index, no token types in use, the classification head
//! dense -> tanh -> out_proj on the first token instead of the pooler).
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// The padding id (RoBERTa's positions start after it); default 0 (BERT) or 1 (RoBERTa).
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// Dropout of the task head (default: `hidden_dropout_prob`).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Whether the checkpoint has a pooler (`pooler.dense`): BERT's head reads it, so BERT always does;
    /// RoBERTa's head does not, and its checkpoints may or may not hold one (hub checkpoints of
    /// RobertaModel do). Set from the checkpoint's header when one is beside config.json
    /// ([`super::ModelConfig::from_file`]); assumed otherwise.
    #[serde(skip, default = "yes")]
    pub pooler: bool,
    /// The loader's walk over this config's shapes (sites, parameter count), made on first use.
    #[serde(skip)]
    pub walk_cache: super::arch::WalkCache,
}

// Defaults shared by the encoder families' configs (transformers' own defaults).
pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_act() -> String {
    "gelu".into()
}
pub(super) fn default_dropout() -> f64 {
    0.1
}
pub(super) fn default_max_pos() -> i64 {
    512
}
fn default_type_vocab() -> i64 {
    2
}
pub(super) fn default_eps() -> f64 {
    1e-12
}
pub(super) fn default_init_range() -> f64 {
    0.02
}

/// config.json's text as an encoder family's config, errors at their line.
pub(super) fn parse<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::parse(path, e.line(), e.to_string()))
}

/// Checks what every encoder family needs: whole heads and an activation we have.
pub(super) fn check_encoder(path: &Path, hidden: i64, heads: i64, act: &str) -> Result<()> {
    if heads < 1 || hidden % heads != 0 {
        return Err(Error::file(
            path,
            format!("hidden size {hidden} is not a multiple of {heads} attention heads"),
        ));
    }
    if !super::encoder::known_activation(act) {
        return Err(Error::file(path, format!("activation `{act}` is not supported")));
    }
    Ok(())
}

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses config.json's text (`path` names it in errors).
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg: BertConfig =
            serde_json::from_str(text).map_err(|e| Error::parse(path, e.line(), e.to_string()))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        if let Some(t) = &self.model_type {
            if !matches!(t.as_str(), "bert" | "roberta" | "xlm-roberta") {
                return Err(Error::file(
                    path,
                    format!("model_type `{t}` is not a BERT-family encoder (bert, roberta, xlm-roberta)"),
                ));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::file(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_new" | "relu" | "gelu_pytorch_tanh") {
            return Err(Error::file(path, format!("hidden_act `{}` is not supported", self.hidden_act)));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// RoBERTa or XLM-RoBERTa (positions from the padding index, no token types, no pooler in the head).
    pub fn is_roberta(&self) -> bool {
        matches!(self.model_type.as_deref(), Some("roberta" | "xlm-roberta"))
    }

    /// The padding id: the config's, else 1 for RoBERTa and 0 for BERT.
    pub fn pad_id(&self) -> i64 {
        self.pad_token_id.unwrap_or(if self.is_roberta() { 1 } else { 0 })
    }

    /// Whether the loader reads a pooler: always for BERT (its head uses it), for RoBERTa when the
    /// checkpoint has one.
    pub fn reads_pooler(&self) -> bool {
        !self.is_roberta() || self.pooler
    }

    /// The longest input the position table holds (RoBERTa's positions start at the padding id + 1).
    pub fn max_tokens(&self) -> i64 {
        if self.is_roberta() {
            self.max_position_embeddings - self.pad_id() - 1
        } else {
            self.max_position_embeddings
        }
    }
}
