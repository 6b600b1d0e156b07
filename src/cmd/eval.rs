//! `s3pet eval`: rebuild a finished run's model from its files and evaluate a split.
use crate::cli::EvalArgs;
use anyhow::{bail, Result};
use s3pet::delta::Ctx;
use s3pet::train::{evaluate, prepare_model};
use serde_json::json;

pub use s3pet::rundir::{load_run_model, RunModel};

pub fn run(a: EvalArgs) -> Result<()> {
    let RunModel { mut cfg, md, model, .. } = load_run_model(&a.run, a.device)?;
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
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
