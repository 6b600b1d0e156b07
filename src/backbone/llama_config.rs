//! `config.json` of a Hugging Face decoder-only checkpoint of the Llama family: LlamaForCausalLM,
//! Qwen2ForCausalLM (q/k/v biases) and MistralForCausalLM (sliding window). RoPE is read from
//! transformers 5's `rope_parameters` or from the hub's older `rope_theta` + `rope_scaling`.
use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `qwen2` or `mistral`.
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    /// Llama: biases on q, k, v and o. Qwen2 always has q/k/v biases (and none on o).
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Mistral: every layer attends to this many keys (itself included); Qwen2: with
    /// `use_sliding_window`, the layers from `max_window_layers` on (or as `layer_types` says).
    #[serde(default)]
    pub sliding_window: Option<i64>,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub max_window_layers: Option<i64>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub bos_token_id: Option<Value>,
    #[serde(default)]
    pub eos_token_id: Option<Value>,
    #[serde(default)]
    pub pad_token_id: Option<Value>,
    /// The loader's walk over this config's shapes (sites, parameter count), made on first use.
    #[serde(skip)]
    pub walk_cache: super::arch::WalkCache,
}

fn default_max_pos() -> i64 {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

/// How RoPE's frequencies are scaled (transformers' `rope_type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Positions divided by `factor` (frequencies divided by it).
    Linear {
        factor: f64,
    },
    /// Llama 3.1's: long wavelengths scaled by `factor`, short ones kept, a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: f64,
    },
}

/// RoPE as resolved from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// The ids of a config field that holds an id or a list of ids.
fn ids(v: &Option<Value>) -> Vec<i64> {
    match v {
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_i64).collect(),
        _ => Vec::new(),
    }
}

impl LlamaConfig {
    /// Parses and validates config.json text; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg: LlamaConfig =
            serde_json::from_str(text).map_err(|e| Error::parse(path, e.line(), e.to_string()))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::file(path, msg));
        if !matches!(self.model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return bad(format!("model_type `{}` is not a Llama-family decoder", self.model_type));
        }
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
        ] {
            if v < 1 {
                return bad(format!("{k} = {v} must be at least 1"));
            }
        }
        if self.num_attention_heads % self.kv_heads() != 0 {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim() % 2 != 0 {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim()));
        }
        if !matches!(self.hidden_act.as_str(), "silu" | "gelu" | "gelu_pytorch_tanh" | "relu") {
            return bad(format!("hidden_act `{}` is not supported", self.hidden_act));
        }
        if let Some(t) = &self.layer_types {
            if t.len() as i64 != self.num_hidden_layers {
                return bad(format!(
                    "layer_types has {} entries for {} layers",
                    t.len(),
                    self.num_hidden_layers
                ));
            }
        }
        self.rope().map_err(|m| Error::file(path, m))?;
        Ok(())
    }

    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Biases of (q, k, v) and of o.
    pub fn attention_biases(&self) -> (bool, bool) {
        if self.model_type == "qwen2" {
            (true, false)
        } else {
            (self.attention_bias, self.attention_bias)
        }
    }

    /// The attention window of layer `i` (keys per query, itself included), `None` for full attention.
    pub fn window(&self, i: i64) -> Option<i64> {
        let w = self.sliding_window.filter(|w| *w > 0)?;
        if let Some(types) = &self.layer_types {
            return (types.get(i as usize).map(String::as_str) == Some("sliding_attention")).then_some(w);
        }
        match self.model_type.as_str() {
            "mistral" => Some(w),
            "qwen2" if self.use_sliding_window => {
                (i >= self.max_window_layers.unwrap_or(self.num_hidden_layers)).then_some(w)
            }
            _ => None,
        }
    }

    pub fn eos_ids(&self) -> Vec<i64> {
        ids(&self.eos_token_id)
    }

    pub fn pad_id(&self) -> Option<i64> {
        ids(&self.pad_token_id).first().copied()
    }

    /// RoPE theta and scaling from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling`.
    pub fn rope(&self) -> std::result::Result<Rope, String> {
        let params = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref()).filter(|v| !v.is_null());
        let num = |key: &str| -> std::result::Result<f64, String> {
            params
                .and_then(|p| p.get(key))
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("rope scaling needs a number `{key}`"))
        };
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0);
        let kind = params
            .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: num("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max: num("original_max_position_embeddings")?,
            },
            other => return Err(format!("rope_type `{other}` is not supported (default, linear, llama3)")),
        };
        Ok(Rope { theta, scaling })
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} {} layers, hidden {}, {} heads / {} KV heads, FFN {}",
            self.model_type,
            self.num_hidden_layers,
            self.hidden_size,
            self.num_attention_heads,
            self.kv_heads(),
            self.intermediate_size
        )
    }
}

impl Rope {
    /// The inverse frequencies (head_dim / 2) as transformers computes them, in fp32.
    pub fn inv_freq(&self, head_dim: i64) -> Vec<f32> {
        let base: Vec<f32> = (0..head_dim / 2)
            .map(|i| {
                let e = (2 * i) as f32 / head_dim as f32;
                1.0 / (self.theta as f32).powf(e)
            })
            .collect();
        match self.scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => {
                let (factor, low, high, old) =
                    (factor as f32, low_freq_factor as f32, high_freq_factor as f32, original_max as f32);
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> LlamaConfig {
        let text = format!(
            r#"{{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2{extra}}}"#
        );
        LlamaConfig::from_json(&text, Path::new("config.json")).unwrap()
    }

    #[test]
    fn rope_from_either_style() {
        let a = cfg(r#", "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5.0}"#);
        let b = cfg(r#", "rope_theta": 5.0, "rope_scaling": {"type": "linear", "factor": 2.0}"#);
        assert_eq!(a.rope().unwrap(), b.rope().unwrap());
        assert_eq!(cfg("").rope().unwrap(), Rope { theta: 10000.0, scaling: RopeScaling::Default });
        let text = r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 2, "num_attention_heads": 2, "rope_scaling": {"rope_type": "yarn"}}"#;
        let err = LlamaConfig::from_json(text, Path::new("c.json")).unwrap_err().to_string();
        assert!(err.contains("c.json") && err.contains("yarn"), "{err}");
    }

    #[test]
    fn windows_by_family() {
        let m = cfg(r#", "sliding_window": 4"#);
        assert_eq!(m.window(0), None, "llama ignores sliding_window");
        let mut m = m;
        m.model_type = "mistral".into();
        assert_eq!(m.window(1), Some(4));
        m.model_type = "qwen2".into();
        m.use_sliding_window = true;
        m.max_window_layers = Some(1);
        assert_eq!((m.window(0), m.window(1)), (None, Some(4)));
        assert_eq!(m.attention_biases(), (true, false));
    }
}
