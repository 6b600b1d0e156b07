//! What every training command does first: its configuration (fresh or resumed), the model directory,
//! the weights and the tokenised task. Nothing is written yet, so bad input fails first.
use crate::backbone::Weights;
use crate::config::{layers, Given, RunConfig};
use crate::error::Result;
use crate::model::ModelDir;
use crate::rundir::RunDir;
use crate::train::{prepare_model, Prepared};
use std::path::Path;

/// How a pipeline function starts and reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOpts {
    /// Continue the run in the output directory from its checkpoint.
    pub resume: bool,
    /// Replace an existing run directory.
    pub overwrite: bool,
    /// No progress bars.
    pub quiet: bool,
}

/// Model directory, weights and tokenised task of a config.
pub struct Loaded {
    pub md: ModelDir,
    pub weights: Weights,
    pub data: Prepared,
}

/// Loads what `cfg` names: the model (weights checked against its config), then the task's splits.
pub fn load(cfg: &RunConfig) -> Result<Loaded> {
    if let Some(n) = cfg.threads {
        tch::set_num_threads(n as i32);
    }
    let device = cfg.device()?;
    let md = ModelDir::open(&cfg.model)?;
    let mut weights = md.load_weights(device)?;
    weights.set_frozen_kind(cfg.backbone_dtype.kind());
    weights.set_precision(cfg.precision);
    let data = prepare_model(cfg, &md)?;
    tracing::info!(
        task = %data.spec.name, train = data.train.len(), dev = data.dev.len(), test = data.test.len(),
        "data ready"
    );
    Ok(Loaded { md, weights, data })
}

/// The saved config of the run in `out`, with the device and threads the user gave now; any other
/// option given with `--resume` must agree with the saved one.
pub fn resume_config(out: &Path, given: &Given) -> Result<RunConfig> {
    let mut cfg = RunConfig::load(&RunDir::open(out)?.path("config.json"))?;
    layers::refuse_on_resume(given, &cfg)?;
    if let Some((v, src)) = given.get("device") {
        cfg.device =
            serde_json::from_value(v.clone()).map_err(|e| crate::Error::config("--device", e.to_string()))?;
        cfg.sources.insert("device".into(), *src);
    }
    if let Some((v, src)) = given.get("threads") {
        cfg.threads = v.as_u64().map(|n| n as usize);
        cfg.sources.insert("threads".into(), *src);
    }
    Ok(cfg)
}

/// The config with the record of the data it read (what eval and --resume read again).
pub fn with_provenance(cfg: &RunConfig, l: &Loaded) -> RunConfig {
    let mut cfg = cfg.clone();
    cfg.data = Some(l.data.provenance.clone());
    cfg.sources.insert("data".into(), crate::config::Source::Recorded);
    cfg
}

/// The run directory: opened with `resume`, else created (refusing a non-empty one without
/// `overwrite`) with the resolved config (and the record of its data) saved in it.
pub fn open_run(out: &Path, cfg: &RunConfig, l: &Loaded, o: RunOpts) -> Result<RunDir> {
    if o.resume {
        RunDir::open(out)
    } else {
        let run = RunDir::create(out, o.overwrite)?;
        with_provenance(cfg, l).save(&run.path("config.json"))?;
        Ok(run)
    }
}
