//! `s3pet eval`: rebuild a finished run's model from its files and evaluate a split.
use crate::cli::EvalArgs;
use anyhow::{bail, Result};
use s3pet::backbone::Placement;
use s3pet::config::TrainConfig;
use s3pet::delta::Ctx;
use s3pet::model::{HeadInit, Model, ModelDir};
use s3pet::rundir::RunDir;
use s3pet::structure::Structure;
use s3pet::train::{evaluate, prepare};
use serde_json::json;

pub fn run(a: EvalArgs) -> Result<()> {
    let run = RunDir::open(&a.run)?;
    let mut cfg = TrainConfig::load(&run.path("config.json"))?;
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    if let Some(d) = a.device {
        cfg.device = d;
    }
    let md = ModelDir::open(&cfg.model)?;
    let structure = Structure::load(&run.path("structure.json"), &md.cfg)?;
    let weights = md.load_weights(cfg.device()?)?;
    let data = prepare(&cfg, &md.tokenizer_path())?;
    let placements: Vec<Placement> =
        structure.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
    let head = HeadInit::Fresh { num_labels: data.spec.num_labels() as i64 };
    let model = Model::build(&md.cfg, &weights, &placements, structure.full, head, cfg.seed)?;
    model.store.load(&run.path("weights.safetensors"))?;
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
