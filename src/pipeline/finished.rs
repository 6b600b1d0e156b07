//! A finished run directory as a model again: its config, model directory, task and trained weights
//! (for eval, predict, export and merge).
use crate::backbone::Placement;
use crate::config::{DeviceSpec, RunConfig};
use crate::data::TaskSpec;
use crate::delta::Ctx;
use crate::error::{Error, Result};
use crate::model::{HeadInit, Model, ModelDir};
use crate::rundir::RunDir;
use crate::structure::Structure;
use crate::train::{evaluate, prepare_model};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub struct RunModel {
    pub cfg: RunConfig,
    pub md: ModelDir,
    pub spec: TaskSpec,
    pub structure: Structure,
    pub model: Model,
}

impl RunModel {
    /// Rebuilds the run in `dir` (on `device` when given, else the device it ran on).
    pub fn open(dir: &Path, device: Option<DeviceSpec>) -> Result<RunModel> {
        let run = RunDir::open(dir)?;
        let mut cfg = RunConfig::load(&run.path("config.json"))?;
        if let Some(d) = device {
            cfg.device = d;
        }
        let md = ModelDir::open(&cfg.model)?;
        let spec = TaskSpec::resolve(&cfg.task)?;
        let structure = Structure::load(&run.path("structure.json"), &md.cfg)?;
        let mut weights = md.load_weights(cfg.device()?)?;
        weights.set_frozen_kind(cfg.backbone_dtype.kind());
        let placements: Vec<Placement> =
            structure.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
        let head = HeadInit::for_task(&spec, &md)?;
        let model = Model::build(&md.cfg, &weights, &placements, structure.full, head, cfg.seed)?;
        model.store.load(&run.path("weights.safetensors"))?;
        Ok(RunModel { cfg, md, spec, structure, model })
    }
}

/// `s3pet eval`: the metrics of the run in `dir` on `split` (dev, test or train), with its data read
/// from `data_dir` when given.
pub fn evaluate_run(
    dir: &Path,
    split: &str,
    data_dir: Option<PathBuf>,
    device: Option<DeviceSpec>,
) -> Result<Value> {
    let RunModel { mut cfg, md, model, .. } = RunModel::open(dir, device)?;
    if data_dir.is_some() {
        cfg.data_dir = data_dir;
    }
    let data = prepare_model(&cfg, &md)?;
    let examples = match split {
        "dev" => &data.dev,
        "test" => &data.test,
        "train" => &data.train,
        s => return Err(Error::config("--split", format!("unknown split `{s}` (dev, test, train)"))),
    };
    let metrics = evaluate(&model, examples, &data.spec, cfg.eval_batch_size, &Ctx::eval())?;
    Ok(json!({"task": data.spec.name, "split": split, "examples": examples.len(), "metrics": metrics}))
}
