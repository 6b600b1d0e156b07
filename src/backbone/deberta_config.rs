//! `config.json` of a Hugging Face DeBERTa-v2 / v3 checkpoint (`model_type: "deberta-v2"`).
use super::encoder::known_activation;
use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct DebertaConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "super::config::default_act")]
    pub hidden_act: String,
    #[serde(default = "super::config::default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "super::config::default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "super::config::default_max_pos")]
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "super::config::default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub relative_attention: bool,
    /// Below 1: `max_position_embeddings`.
    #[serde(default = "minus_one")]
    pub max_relative_positions: i64,
    /// Log-bucketed relative positions (v3: 256); below 1: none.
    #[serde(default = "minus_one")]
    pub position_buckets: i64,
    #[serde(default = "super::config::yes")]
    pub position_biased_input: bool,
    /// `"p2c|c2p"`, `["p2c", "c2p"]` or null.
    #[serde(default)]
    pub pos_att_type: Value,
    #[serde(default)]
    pub share_att_key: bool,
    #[serde(default = "default_norm_rel")]
    pub norm_rel_ebd: String,
    #[serde(default)]
    pub embedding_size: Option<i64>,
    #[serde(default)]
    pub pooler_hidden_size: Option<i64>,
    #[serde(default)]
    pub pooler_dropout: f64,
    #[serde(default = "super::config::default_act")]
    pub pooler_hidden_act: String,
    #[serde(default)]
    pub cls_dropout: Option<f64>,
    #[serde(default)]
    pub conv_kernel_size: i64,
    #[serde(default)]
    pub attention_head_size: Option<i64>,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(skip)]
    pub walk_cache: super::arch::WalkCache,
}

fn minus_one() -> i64 {
    -1
}
fn default_eps() -> f64 {
    1e-7
}
fn default_norm_rel() -> String {
    "none".into()
}

impl DebertaConfig {
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg: DebertaConfig = super::config::parse(text, path)?;
        super::config::check_encoder(path, cfg.hidden_size, cfg.num_attention_heads, &cfg.hidden_act)?;
        cfg.validate().map_err(|msg| Error::file(path, msg))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.attention_head_size.is_some_and(|a| a * self.num_attention_heads != self.hidden_size) {
            return Err("attention_head_size x num_attention_heads must equal hidden_size".into());
        }
        if !known_activation(&self.pooler_hidden_act) {
            return Err(format!("pooler_hidden_act `{}` is not supported", self.pooler_hidden_act));
        }
        if self.conv_kernel_size > 0 {
            return Err("conv_kernel_size > 0 (DeBERTa-v2's convolution layer) is not supported".into());
        }
        if self.pooler_hidden_size.is_some_and(|p| p != self.hidden_size) {
            return Err("pooler_hidden_size must equal hidden_size".into());
        }
        let types = self.att_types()?;
        if let Some(t) = types.iter().find(|t| !matches!(t.as_str(), "c2p" | "p2c")) {
            return Err(format!("pos_att_type `{t}` is not supported (c2p, p2c)"));
        }
        Ok(())
    }

    /// The relative attention terms in use (`c2p`, `p2c`).
    pub fn att_types(&self) -> std::result::Result<Vec<String>, String> {
        let split = |s: &str| s.to_lowercase().split('|').map(|x| x.trim().to_string()).collect::<Vec<_>>();
        Ok(match &self.pos_att_type {
            Value::Null => vec![],
            Value::String(s) => split(s),
            Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            other => return Err(format!("pos_att_type {other} is neither a string nor a list")),
        })
    }

    pub fn has(&self, term: &str) -> bool {
        self.relative_attention && self.att_types().unwrap_or_default().iter().any(|t| t == term)
    }

    /// Relative positions beyond this are clamped (or bucketed up to it).
    pub fn max_relative(&self) -> i64 {
        if self.max_relative_positions < 1 {
            self.max_position_embeddings
        } else {
            self.max_relative_positions
        }
    }

    /// Half the rows of `encoder.rel_embeddings`: the attention span.
    pub fn att_span(&self) -> i64 {
        if self.position_buckets > 0 {
            self.position_buckets
        } else {
            self.max_relative()
        }
    }

    pub fn embedding_dim(&self) -> i64 {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    pub fn norm_rel(&self) -> bool {
        self.norm_rel_ebd.to_lowercase().split('|').any(|x| x.trim() == "layer_norm")
    }

    /// The longest input: the position table when positions are added to the input, else no limit.
    pub fn max_tokens(&self) -> Option<i64> {
        self.position_biased_input.then_some(self.max_position_embeddings)
    }
}
