//! `config.json` of a Hugging Face T5 checkpoint (v1.0 with a ReLU FFN, v1.1 / Flan-T5 with gated GELU).
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: i64,
    pub d_model: i64,
    pub d_kv: i64,
    pub d_ff: i64,
    pub num_layers: i64,
    #[serde(default)]
    pub num_decoder_layers: Option<i64>,
    pub num_heads: i64,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: i64,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: i64,
    #[serde(default = "default_dropout")]
    pub dropout_rate: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `relu` (v1.0), `gated-gelu` (v1.1, Flan-T5), also `gelu`, `gated-relu`, `gated-silu`, ...
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Scale the decoder output by d_model^-0.5 before the LM head (transformers 5 writes this; older
    /// configs imply it by tied embeddings).
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default)]
    pub decoder_start_token_id: i64,
    #[serde(default = "default_eos")]
    pub eos_token_id: i64,
    #[serde(default)]
    pub pad_token_id: i64,
    #[serde(default)]
    pub model_type: Option<String>,
    /// The loader's walk over this config's shapes (sites, parameter count), made on first use.
    #[serde(skip)]
    pub walk_cache: super::arch::WalkCache,
}

fn default_buckets() -> i64 {
    32
}
fn default_max_distance() -> i64 {
    128
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}
fn default_eos() -> i64 {
    1
}

impl T5Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses and validates config.json text; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg: T5Config =
            serde_json::from_str(text).map_err(|e| Error::parse(path, e.line(), e.to_string()))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::file(path, msg));
        if let Some(t) = &self.model_type {
            if t != "t5" {
                return bad(format!("model_type `{t}` is not a T5 encoder-decoder"));
            }
        }
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_decoder_layers", self.decoder_layers()),
            ("relative_attention_num_buckets", self.relative_attention_num_buckets),
        ] {
            if v < 1 {
                return bad(format!("{k} = {v} must be at least 1"));
            }
        }
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets / 4 {
            return bad(format!(
                "relative_attention_max_distance {} must exceed a quarter of the buckets",
                self.relative_attention_max_distance
            ));
        }
        let act = self.act();
        if !matches!(act, "relu" | "gelu" | "gelu_new" | "silu" | "gelu_pytorch_tanh") {
            return bad(format!("feed_forward_proj `{}` is not supported", self.feed_forward_proj));
        }
        Ok(())
    }

    pub fn scales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs.unwrap_or(self.tie_word_embeddings)
    }

    pub fn decoder_layers(&self) -> i64 {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// Width of the attention projections (num_heads x d_kv, not always d_model).
    pub fn inner_dim(&self) -> i64 {
        self.num_heads * self.d_kv
    }

    /// `gated-*` (v1.1, Flan): wi_0 and wi_1 instead of wi.
    pub fn is_gated(&self) -> bool {
        self.feed_forward_proj.starts_with("gated-")
    }

    /// The FFN activation as transformers resolves it (`gated-gelu` means the tanh approximation).
    pub fn act(&self) -> &str {
        if self.feed_forward_proj == "gated-gelu" {
            return "gelu_new";
        }
        self.feed_forward_proj.rsplit('-').next().unwrap_or("relu")
    }
}
