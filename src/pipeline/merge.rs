//! `s3pet merge`: a plain Hugging Face directory of the family's sequence-classification model
//! (BertForSequenceClassification, RobertaFor..., MPNetFor..., DebertaV2For..., DistilBertFor...) with the
//! linear deltas (LoRA, BitFit, LNFit) folded into the weights. LRA and adapters cannot be folded: a clear
//! error. An unused pooler of a RoBERTa or MPNet checkpoint is not written (the task model has none).
use super::finished::RunModel;
use crate::config::DeviceSpec;
use crate::data::{TaskKind, TaskSpec};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The merged config.json: the base model's, with the task's labels and problem type.
fn merged_config(base: &Path, spec: &TaskSpec, class: &str) -> Result<Value> {
    let text = std::fs::read_to_string(base).map_err(|e| Error::io(base, e))?;
    let mut cfg: Value =
        serde_json::from_str(&text).map_err(|e| Error::parse(base, e.line(), e.to_string()))?;
    let regression = spec.kind == TaskKind::Regression;
    let labels: Vec<String> = if regression { vec!["score".into()] } else { spec.labels.clone() };
    cfg["architectures"] = json!([class]);
    cfg["num_labels"] = json!(labels.len());
    cfg["id2label"] = labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    cfg["label2id"] = labels.iter().enumerate().map(|(l_i, l)| (l.clone(), json!(l_i))).collect();
    cfg["problem_type"] = json!(if regression { "regression" } else { "single_label_classification" });
    Ok(cfg)
}

/// Folds the run in `run` into a plain model directory `out` (written atomically).
pub fn merge_run(run: &Path, out: &Path, overwrite: bool) -> Result<Value> {
    let RunModel { md, spec, model, .. } = RunModel::open(run, Some(DeviceSpec::Cpu))?;
    if let Some((llama, _)) = model.causal() {
        return super::merge_lm::merge_causal(llama, &md, out, overwrite);
    }
    let (Some(encoder), Some(head)) = (model.encoder(), model.head()) else {
        return Err(Error::Msg(
            "merge writes an encoder's sequence-classification model; a T5 run keeps its deltas in \
             weights.safetensors"
                .into(),
        ));
    };
    let folded = encoder.folded_tensors().map_err(|site| {
        Error::site(
            site,
            "holds a low-rank adapter or Houlsby adapter, which cannot be folded into the weights; use the run's \
             own weights.safetensors (s3pet eval / predict) instead",
        )
    })?;
    let family = md.cfg.family();
    let cpu = |t: &tch::Tensor| t.detach().to_device(tch::Device::Cpu);
    let mut named: Vec<(String, tch::Tensor)> =
        folded.into_iter().map(|(k, t)| (format!("{}{k}", family.prefix()), cpu(&t))).collect();
    named.extend(head.tensors().into_iter().map(|(k, t)| (k, cpu(t))));
    let cfg = merged_config(&md.dir.join("config.json"), &spec, family.classifier_class())?;
    crate::artifact::write_dir(
        out,
        overwrite,
        &["model.safetensors", "config.json", "tokenizer.json"],
        |dir| {
            crate::artifact::write_safetensors(&dir.join("model.safetensors"), &named)?;
            crate::artifact::write_json(&dir.join("config.json"), &cfg)?;
            let tok = dir.join("tokenizer.json");
            std::fs::copy(md.tokenizer_path(), &tok).map_err(|e| Error::io(&tok, e))?;
            Ok(())
        },
    )?;
    Ok(json!({"out": out, "tensors": named.len(), "num_labels": cfg["num_labels"]}))
}
