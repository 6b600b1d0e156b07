//! A run directory, the unit of reproducibility: config.json (resolved), structure.json,
//! weights.safetensors (deltas + head), metrics.jsonl, report.json.
use crate::backbone::Placement;
use crate::config::{DeviceSpec, RunConfig};
use crate::data::TaskSpec;
use crate::error::{Error, Result};
use crate::model::{HeadInit, Model, ModelDir};
use crate::structure::Structure;
use std::path::{Path, PathBuf};

/// Every file a run writes (removed by --overwrite).
pub const ARTIFACTS: [&str; 10] = [
    "metrics.jsonl",
    "report.json",
    "weights.safetensors",
    "structure.json",
    "config.json",
    "checkpoint.safetensors",
    "alphas.jsonl",
    "candidates.tsv",
    "search.json",
    "search_checkpoint.safetensors",
];

pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    /// Creates `dir`; an existing non-empty directory is refused unless `overwrite`, then emptied of
    /// the files a run writes.
    pub fn create(dir: &Path, overwrite: bool) -> Result<Self> {
        let busy = dir.is_dir() && std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.next().is_some();
        if busy && !overwrite {
            return Err(Error::file(
                dir,
                "run directory exists and is not empty (pass --overwrite to replace it)",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let run = RunDir { dir: dir.to_path_buf() };
        if busy {
            for f in ARTIFACTS {
                let _ = std::fs::remove_file(run.dir.join(f));
            }
        }
        Ok(run)
    }

    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("config.json").is_file() {
            return Err(Error::file(dir, "not a run directory (no config.json)"));
        }
        Ok(RunDir { dir: dir.to_path_buf() })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A finished run directory as a model again: its config, model directory, task, structure and trained
/// weights (for eval, predict, export and merge).
pub struct RunModel {
    pub cfg: RunConfig,
    pub md: ModelDir,
    pub spec: TaskSpec,
    pub structure: Structure,
    pub model: Model,
}

impl RunModel {
    /// Rebuilds the run in `dir` from config.json, structure.json and weights.safetensors, on `device`
    /// when given (e.g. the CPU to export a GPU run), else the device it ran on.
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
        weights.set_precision(cfg.precision);
        let placements: Vec<Placement> =
            structure.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
        let head = HeadInit::for_task(&spec, &md)?;
        let model = Model::build(&md.cfg, &weights, &placements, structure.full, head, cfg.seed)?;
        model.store.load(&run.path("weights.safetensors"))?;
        Ok(RunModel { cfg, md, spec, structure, model })
    }
}

/// A path as written into an exported file: absolute when it exists here, else as given (a hub id).
pub fn portable(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}
