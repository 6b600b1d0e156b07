//! `s3pet eval`: rebuild a finished run's model from its files and evaluate a split.
use crate::cli::EvalArgs;
use anyhow::{bail, Result};
use s3pet::backbone::Placement;
use s3pet::config::TrainConfig;
use s3pet::data::TaskSpec;
use s3pet::delta::Ctx;
use s3pet::model::{HeadInit, Model, ModelDir};
use s3pet::rundir::RunDir;
use s3pet::structure::Structure;
use s3pet::train::{evaluate, prepare_model};
use serde_json::json;
use std::path::Path;

/// A finished run's model: its config, model directory, task spec and trained weights.
pub struct RunModel {
    pub cfg: TrainConfig,
    pub md: ModelDir,
    pub spec: TaskSpec,
    pub model: Model,
}

pub fn load_run_model(dir: &Path, device: Option<String>) -> Result<RunModel> {
    let run = RunDir::open(dir)?;
    let mut cfg = TrainConfig::load(&run.path("config.json"))?;
    if let Some(d) = device {
        cfg.device = d;
    }
    let md = ModelDir::open(&cfg.model)?;
    let spec = TaskSpec::resolve(&cfg.task)?;
    let structure = Structure::load(&run.path("structure.json"), &md.cfg)?;
    let mut weights = md.load_weights(cfg.device()?)?;
    weights.set_frozen_kind(s3pet::config::frozen_kind(&cfg.backbone_dtype)?);
    let placements: Vec<Placement> =
        structure.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
    let head = HeadInit::for_task(&spec, &md)?;
    let model = Model::build(&md.cfg, &weights, &placements, structure.full, head, cfg.seed)?;
    model.store.load(&run.path("weights.safetensors"))?;
    Ok(RunModel { cfg, md, spec, model })
}

pub fn run(a: EvalArgs) -> Result<()> {
    let RunModel { mut cfg, md, model, .. } = load_run_model(&a.run, a.device)?;
    if let Some(d) = a.data_dir {
        cfg.data_dir = Some(d);
        cfg.data = None; // the run's record is of another source
    }
    let data = prepare_model(&cfg, &md)?;
    let split = match a.split.as_str() {
        "dev" => &data.dev,
        "test" => &data.test,
        "train" => &data.train,
        s => bail!("unknown split `{s}` (dev, test, train)"),
    };
    let metrics = evaluate(&model, split, &data.spec, cfg.eval_batch_size, &Ctx::eval())?;
    println!(
        "{}",
        json!({"task": data.spec.name, "split": a.split, "examples": split.len(), "metrics": metrics})
    );
    Ok(())
}
