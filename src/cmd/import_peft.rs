//! `s3pet import-peft`: a PEFT LoRA / LN_TUNING adapter directory becomes an s3pet run directory
//! (config.json, structure.json, weights.safetensors) for eval, predict, merge, export or retrain.
use super::common::{train_config, Defaults};
use super::export::META_FILE;
use crate::cli::ImportPeftArgs;
use anyhow::{bail, Context, Result};
use s3pet::backbone::Placement;
use s3pet::data::TaskSpec;
use s3pet::model::{HeadInit, Model, ModelDir};
use s3pet::rundir::RunDir;
use s3pet::structure::Structure;
use serde_json::{json, Value};

/// The task: --task, else the one an s3pet export recorded next to the adapter.
fn task(a: &ImportPeftArgs) -> Result<String> {
    if let Some(t) = &a.task {
        return Ok(t.clone());
    }
    let meta = a.dir.join(META_FILE);
    let text = std::fs::read_to_string(&meta)
        .with_context(|| format!("no --task given and no {} to read it from", meta.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| meta.display().to_string())?;
    v["task"].as_str().map(str::to_string).with_context(|| format!("{}: no string `task`", meta.display()))
}

pub fn run(a: ImportPeftArgs) -> Result<()> {
    let task = task(&a)?;
    // importing reads no task data; the data directory (none: the Hub) is recorded for later eval / retrain
    let common = &a.common;
    let cfg = train_config(common, &task, "structure", None, Defaults::train("lora"))?;
    let spec = TaskSpec::resolve(&task)?;
    let md = ModelDir::open(&cfg.model)?;
    let weights = md.load_weights(cfg.device()?)?;
    let s3pet::backbone::ModelConfig::Bert(bert_cfg) = &md.cfg else {
        bail!(
            "{}: PEFT import is for BERT-family models; {} is not one",
            a.dir.display(),
            cfg.model.display()
        );
    };
    let imp = s3pet::peft::import(&a.dir, &weights, bert_cfg)?;
    if imp.num_labels != spec.num_labels() as i64 {
        bail!(
            "{}: the adapter's classifier has {} labels but task `{}` has {}",
            a.dir.display(),
            imp.num_labels,
            spec.name,
            spec.num_labels()
        );
    }
    if let Some(b) = &imp.base_model {
        tracing::info!(base_model_name_or_path = %b, model = %cfg.model.display(), "adapter base model");
    }
    let backbone = md.cfg.param_count();
    let structure = Structure::manual("peft", imp.modules.clone(), &md.cfg, backbone)?;
    let placements: Vec<Placement> =
        structure.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
    let head = HeadInit::Fresh { num_labels: imp.num_labels };
    let model = Model::build(&md.cfg, &weights, &placements, false, head, cfg.seed)?;
    if model.store.len() != imp.tensors.len() {
        bail!(
            "{}: {} tensors imported for {} parameters",
            a.dir.display(),
            imp.tensors.len(),
            model.store.len()
        );
    }
    tch::no_grad(|| -> Result<()> {
        for (name, t) in &imp.tensors {
            let p = model.store.get(name).with_context(|| format!("tensor `{name}`: no such parameter"))?;
            if p.size() != t.size() {
                bail!("tensor `{name}`: shape {:?}, expected {:?}", t.size(), p.size());
            }
            p.shallow_clone().copy_(&t.to_device(model.device));
        }
        Ok(())
    })?;
    let run = RunDir::create(&a.out, common.overwrite)?;
    cfg.save(&run.path("config.json"))?;
    structure.save(&run.path("structure.json"))?;
    model.store.save(&run.path("weights.safetensors"))?;
    println!(
        "{}",
        json!({
            "out": a.out,
            "task": spec.name,
            "adapters": imp.adapters,
            "modules": structure.modules.len(),
            "delta_params": structure.total_params,
            "num_labels": imp.num_labels,
        })
    );
    Ok(())
}
