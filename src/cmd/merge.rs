//! `s3pet merge`: a plain Hugging Face BertForSequenceClassification directory with the linear deltas
//! (LoRA, BitFit, LNFit) folded into the weights. LRA and adapters cannot be folded: a clear error.
use super::eval::{load_run_model, RunModel};
use crate::cli::MergeArgs;
use anyhow::{bail, Context, Result};
use s3pet::data::TaskKind;
use serde_json::{json, Value};

pub fn run(a: MergeArgs) -> Result<()> {
    let RunModel { md, spec, model, .. } = load_run_model(&a.run, Some("cpu".into()))?;
    let (Some(bert), Some(head)) = (model.bert(), model.head()) else {
        bail!(
            "merge writes a BertForSequenceClassification; a T5 run keeps its deltas in weights.safetensors"
        );
    };
    let folded = match bert.folded_tensors() {
        Ok(t) => t,
        Err(site) => bail!(
            "site `{site}` holds a low-rank adapter or Houlsby adapter, which cannot be folded into the \
             weights; use the run's own weights.safetensors (s3pet eval / predict) instead"
        ),
    };
    if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() && !a.overwrite {
        bail!("{}: exists and is not empty (pass --overwrite)", a.out.display());
    }
    std::fs::create_dir_all(&a.out)?;
    let mut named: Vec<(String, tch::Tensor)> =
        folded.into_iter().map(|(k, t)| (format!("bert.{k}"), t.to_device(tch::Device::Cpu))).collect();
    named.push(("classifier.weight".into(), head.weight.detach().to_device(tch::Device::Cpu)));
    named.push(("classifier.bias".into(), head.bias.detach().to_device(tch::Device::Cpu)));
    s3pet::artifact::write_safetensors(&a.out.join("model.safetensors"), &named)?;
    let src = md.dir.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&src)?).with_context(|| src.display().to_string())?;
    let labels: Vec<String> =
        if spec.kind == TaskKind::Regression { vec!["score".into()] } else { spec.labels.clone() };
    cfg["architectures"] = json!(["BertForSequenceClassification"]);
    cfg["num_labels"] = json!(labels.len());
    cfg["id2label"] = labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    cfg["label2id"] = labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
    cfg["problem_type"] =
        json!(if spec.kind == TaskKind::Regression { "regression" } else { "single_label_classification" });
    s3pet::artifact::write_json(&a.out.join("config.json"), &cfg)?;
    std::fs::copy(md.tokenizer_path(), a.out.join("tokenizer.json"))?;
    println!("{}", json!({"out": a.out, "tensors": named.len(), "num_labels": labels.len()}));
    Ok(())
}
