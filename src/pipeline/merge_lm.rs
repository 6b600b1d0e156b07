//! `s3pet merge` of a decoder run: a plain LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM
//! directory (config.json, model.safetensors, the tokenizer files) with LoRA folded into the weights,
//! LNFit into the RMS norms' scales and BitFit into Linear biases. A Llama gains `attention_bias` /
//! `mlp_bias` (zero biases where no BitFit was trained) when BitFit sits on a Linear without a bias;
//! where the architecture has no such bias (Qwen2's o_proj and MLP, Mistral), and for BitFit after an
//! RMS norm or a low-rank adapter, merging is refused naming the site.
use crate::backbone::Llama;
use crate::error::{Error, Result};
use crate::model::ModelDir;
use serde_json::{json, Value};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Tokenizer files copied next to the merged weights when the model directory has them.
const TOKENIZER_FILES: [&str; 4] =
    ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];

/// The Linears of one bias group (`attention_bias`: q, k, v, o; `mlp_bias`: gate, up, down).
fn group_of(name: &str) -> &'static str {
    if name.contains(".self_attn.") {
        "attention_bias"
    } else {
        "mlp_bias"
    }
}

/// Fills in the biases a Llama config flag implies: a group with one bias gets zero biases on the rest.
fn complete_biases(llama: &Llama, named: &mut Vec<(String, Tensor)>, cfg: &mut Value) -> Result<()> {
    let (qkv_bias, o_bias) = llama.cfg.attention_biases();
    for s in llama.linear_sites() {
        let key = format!("{}.bias", s.name);
        let has = named.iter().any(|(k, _)| *k == key);
        let native = match group_of(&s.name) {
            "attention_bias" if s.name.ends_with("o_proj") => o_bias,
            "attention_bias" => qkv_bias,
            _ => llama.cfg.mlp_bias,
        };
        if has && !native {
            if llama.cfg.model_type != "llama" {
                return Err(Error::site(
                    &s.name,
                    format!(
                        "holds BitFit, but {} has no bias there: export it with --format peft (lora_bias) instead",
                        llama.cfg.model_type
                    ),
                ));
            }
            cfg[group_of(&s.name)] = json!(true);
        }
    }
    for s in llama.linear_sites() {
        let key = format!("{}.bias", s.name);
        let on = cfg[group_of(&s.name)].as_bool().unwrap_or(false);
        if on && !named.iter().any(|(k, _)| *k == key) {
            named.push((key, Tensor::zeros([s.shape.d_out()], (Kind::Float, Device::Cpu))));
        }
    }
    Ok(())
}

/// Folds a decoder run into a plain model directory `out` (written atomically).
pub fn merge_causal(llama: &Llama, md: &ModelDir, out: &Path, overwrite: bool) -> Result<Value> {
    let mut named = llama.folded_tensors().map_err(|site| {
        Error::site(
            site,
            "holds a delta that cannot be folded into the weights (a low-rank adapter, or BitFit after an RMS \
             norm); use the run itself (s3pet eval / predict) or --format native",
        )
    })?;
    let base = md.dir.join("config.json");
    let text = std::fs::read_to_string(&base).map_err(|e| Error::io(&base, e))?;
    let mut cfg: Value =
        serde_json::from_str(&text).map_err(|e| Error::parse(&base, e.line(), e.to_string()))?;
    complete_biases(llama, &mut named, &mut cfg)?;
    cfg["torch_dtype"] = json!("float32");
    let copies: Vec<&str> = TOKENIZER_FILES.iter().copied().filter(|f| md.dir.join(f).is_file()).collect();
    let mut files = vec!["model.safetensors", "config.json"];
    files.extend(&copies);
    crate::artifact::write_dir(out, overwrite, &files, |dir| {
        crate::artifact::write_safetensors(&dir.join("model.safetensors"), &named)?;
        crate::artifact::write_json(&dir.join("config.json"), &cfg)?;
        for f in &copies {
            std::fs::copy(md.dir.join(f), dir.join(f)).map_err(|e| Error::io(dir.join(f), e))?;
        }
        Ok(())
    })?;
    Ok(json!({"out": out, "tensors": named.len(), "architecture": cfg["architectures"]}))
}
