//! A run directory, the unit of reproducibility: config.json (resolved), structure.json,
//! weights.safetensors (deltas + head), metrics.jsonl, report.json.
use crate::error::{Error, Result};
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
