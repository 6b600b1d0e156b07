//! `s3pet import-peft`: a PEFT LoRA / LN_TUNING adapter directory becomes an s3pet run directory
//! (config.json, structure.json, weights.safetensors) for eval, predict, merge, export or retrain.
use crate::config::RunConfig;
use crate::data::TaskSpec;
use crate::error::{Error, Result};
use crate::model::ModelDir;
use serde_json::{json, Value};
use std::path::Path;

pub use crate::peft::META_FILE;

/// The task of an adapter: `task` when given, else the one an s3pet export recorded next to it.
pub fn adapter_task(dir: &Path, task: Option<&str>) -> Result<String> {
    if let Some(t) = task {
        return Ok(t.to_string());
    }
    let meta = dir.join(META_FILE);
    let text = std::fs::read_to_string(&meta).map_err(|e| {
        Error::file(&meta, format!("no --task given and no {META_FILE} to read it from ({e})"))
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::parse(&meta, e.line(), e.to_string()))?;
    v["task"].as_str().map(str::to_string).ok_or_else(|| Error::file(&meta, "no string `task`"))
}

/// Reads the adapter in `dir` onto `cfg.model` for `cfg.task` and writes the run directory `out`.
pub fn import_peft(dir: &Path, out: &Path, cfg: &RunConfig, overwrite: bool) -> Result<Value> {
    let spec = TaskSpec::resolve(&cfg.task)?;
    let md = ModelDir::open(&cfg.model)?;
    let weights = md.load_weights(cfg.device()?)?;
    let imp = crate::peft::import(dir, &weights, &md.cfg)?;
    let encoder = !md.cfg.is_t5() && !md.cfg.is_causal_lm();
    if encoder && imp.num_labels != spec.num_labels() as i64 {
        let msg = format!(
            "the adapter's classifier has {} labels but task `{}` has {}",
            imp.num_labels,
            spec.name,
            spec.num_labels()
        );
        return Err(Error::file(dir, msg));
    }
    if let Some(b) = &imp.base_model {
        tracing::info!(base_model_name_or_path = %b, model = %cfg.model.display(), "adapter base model");
    }
    let head = match encoder {
        true => crate::model::HeadInit::Fresh { num_labels: imp.num_labels },
        false => crate::model::HeadInit::for_task(&spec, &md)?,
    };
    let (structure, model) = crate::peft::imported_model_with(&imp, &md.cfg, &weights, head, cfg.seed)
        .map_err(|e| Error::file(dir, e.to_string()))?;
    // the run directory appears whole or not at all
    crate::artifact::write_dir(
        out,
        overwrite,
        &["config.json", "structure.json", "weights.safetensors"],
        |dir| {
            cfg.save(&dir.join("config.json"))?;
            structure.save(&dir.join("structure.json"))?;
            model.store.save(&dir.join("weights.safetensors"))
        },
    )?;
    Ok(json!({"out": out, "task": spec.name, "adapters": imp.adapters, "modules": structure.modules.len(),
              "delta_params": structure.total_params, "num_labels": imp.num_labels}))
}
