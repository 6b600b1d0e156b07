//! PEFT adapters and s3pet run directories: a finished run exported as a PEFT adapter directory
//! (written atomically), and an imported adapter built into an s3pet model.
use super::{export, Exported, Imported, CONFIG_FILE, META_FILE, WEIGHTS_FILE};
use crate::backbone::{ModelConfig, Placement, Weights};
use crate::config::DeviceSpec;
use crate::error::{Error, Result};
use crate::model::{HeadInit, Model};
use crate::rundir::{portable, RunModel};
use crate::structure::Structure;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// One adapter written by [`export_run`].
#[derive(Debug, Clone, Serialize)]
pub struct WrittenAdapter {
    /// `.` for the export directory itself, else the subdirectory (`ln_tuning`).
    pub dir: String,
    pub peft_type: String,
    pub tensors: usize,
}

/// What [`export_run`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PeftExport {
    pub out: PathBuf,
    pub adapters: Vec<WrittenAdapter>,
}

/// Every file an export may write, relative to its directory (what `--overwrite` may replace).
pub const EXPORT_FILES: [&str; 5] = [
    CONFIG_FILE,
    WEIGHTS_FILE,
    META_FILE,
    "ln_tuning/adapter_config.json",
    "ln_tuning/adapter_model.safetensors",
];

/// Exports the finished run in `run_dir` (an encoder family) as PEFT adapters into `out`
/// (`s3pet export --format peft`): the adapters of [`export`], then `s3pet_export.json` with the task,
/// labels and base model. Written into a temporary sibling directory renamed to `out` at the end, so
/// `out` is complete or absent. An existing non-empty `out` is replaced only with `overwrite`, and only
/// when it holds nothing but the files an export writes. A structure PEFT cannot hold (low-rank or
/// Houlsby adapters, full fine-tuning) is an error naming each module; nothing is written then.
pub fn export_run(run_dir: &Path, out: &Path, overwrite: bool) -> Result<PeftExport> {
    let RunModel { cfg, md, spec, model, .. } = RunModel::open(run_dir, Some(DeviceSpec::Cpu))?;
    let structure = Structure::load(&run_dir.join("structure.json"), &md.cfg)?;
    let base = portable(&cfg.model);
    let exported = export(&model, &structure, &base)?.map_err(|u| Error::file(run_dir, u.to_string()))?;
    let adapters: Vec<WrittenAdapter> = exported
        .adapters
        .iter()
        .map(|ad| WrittenAdapter {
            dir: ad.subdir.unwrap_or(".").to_string(),
            peft_type: ad.config["peft_type"].as_str().unwrap_or_default().to_string(),
            tensors: ad.tensors.len(),
        })
        .collect();
    let words = model.causal().map(|(_, p)| json!({"words": p.words, "word_ids": p.word_ids}));
    let meta = json!({
        "format": "peft",
        "prompt": words,
        "run": portable(run_dir),
        "task": cfg.task,
        "labels": spec.labels,
        "num_labels": spec.num_labels(),
        "max_length": cfg.max_length,
        "base_model": base,
        "adapters": adapters,
    });
    crate::artifact::write_dir(out, overwrite, &EXPORT_FILES, |dir| {
        write_adapters(&exported, dir)?;
        crate::artifact::write_json(&dir.join(META_FILE), &meta)
    })?;
    Ok(PeftExport { out: out.to_path_buf(), adapters })
}

/// Writes each adapter's adapter_config.json and adapter_model.safetensors under `dir` (the first at
/// the top, a second one in its subdirectory), the layout `PeftModel.from_pretrained` reads.
pub fn write_adapters(exported: &Exported, dir: &Path) -> Result<()> {
    for ad in &exported.adapters {
        let sub = ad.subdir.map(|s| dir.join(s)).unwrap_or_else(|| dir.to_path_buf());
        std::fs::create_dir_all(&sub).map_err(|e| Error::io(&sub, e))?;
        crate::artifact::write_safetensors(&sub.join(WEIGHTS_FILE), &ad.tensors)?;
        crate::artifact::write_json(&sub.join(CONFIG_FILE), &ad.config)?;
    }
    Ok(())
}

/// The model an imported adapter describes: its modules placed on the base `weights` (gates at 1),
/// their values and the classifier set from the adapter; with the structure it makes (source `peft`).
pub fn imported_model<C: Clone + Into<ModelConfig>>(
    imported: &Imported,
    cfg: &C,
    weights: &Weights,
    seed: u64,
) -> Result<(Structure, Model)> {
    imported_model_with(imported, cfg, weights, HeadInit::Fresh { num_labels: imported.num_labels }, seed)
}

/// [`imported_model`] with the head given (a decoder's or T5's task words: [`HeadInit::for_task`]).
pub fn imported_model_with<C: Clone + Into<ModelConfig>>(
    imported: &Imported,
    cfg: &C,
    weights: &Weights,
    head: HeadInit,
    seed: u64,
) -> Result<(Structure, Model)> {
    let cfg: ModelConfig = cfg.clone().into();
    let structure = Structure::manual("peft", imported.modules.clone(), &cfg, cfg.param_count())?;
    let placements: Vec<Placement> =
        structure.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
    let model = Model::build(&cfg, weights, &placements, false, head, seed)?;
    if model.store.len() != imported.tensors.len() {
        return Err(Error::Msg(format!(
            "{} tensors imported for {} parameters",
            imported.tensors.len(),
            model.store.len()
        )));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, t) in &imported.tensors {
            let p = model
                .store
                .get(name)
                .ok_or_else(|| Error::Tensor { key: name.clone(), msg: "no such parameter".into() })?;
            if p.size() != t.size() {
                return Err(Error::Tensor {
                    key: name.clone(),
                    msg: format!("shape {:?}, expected {:?}", t.size(), p.size()),
                });
            }
            p.shallow_clone().copy_(&t.to_device(model.device));
        }
        Ok(())
    })?;
    Ok((structure, model))
}

#[cfg(test)]
mod tests {
    use super::super::LN_SUBDIR;
    use super::*;

    #[test]
    fn export_files_name_the_sub_adapter() {
        assert_eq!(EXPORT_FILES[3], format!("{LN_SUBDIR}/{CONFIG_FILE}"));
        assert_eq!(EXPORT_FILES[4], format!("{LN_SUBDIR}/{WEIGHTS_FILE}"));
    }
}
