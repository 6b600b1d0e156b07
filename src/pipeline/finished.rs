//! Evaluating a finished run directory on one of its splits.
use crate::config::DeviceSpec;
use crate::delta::Ctx;
use crate::error::{Error, Result};
pub use crate::rundir::RunModel;
use crate::train::{evaluate, prepare_model};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

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
        cfg.data = None; // the run's record is of another source
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
