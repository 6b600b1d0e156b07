//! Rank 0 alone writes into `--out`. Every other rank runs the same code against a private copy: its run
//! directory is `$S3PET_DIST_SCRATCH/rank<R>/<name>` (the launcher makes and removes that directory), so
//! the ranks stay identical (each reloads its own best weights, resumes from its own checkpoint) while
//! the run directory holds one rank's artifacts. With `--resume` the copy starts as a copy of `--out`:
//! the checkpoint holds no world size, so a run resumes on any number of ranks.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The directory the launcher gives the ranks for their private copies.
pub const SCRATCH_ENV: &str = "S3PET_DIST_SCRATCH";

/// Where this rank writes what a command would write into `out` (`out` itself on rank 0 and without a
/// launcher). With `resume`, another rank's copy starts as a copy of `out`.
pub fn rank_dir(out: &Path, resume: bool) -> Result<PathBuf> {
    let w = super::current();
    if w.rank == 0 {
        return Ok(out.to_path_buf());
    }
    let scratch = std::env::var_os(SCRATCH_ENV).ok_or_else(|| {
        Error::Msg(format!(
            "distributed: rank {} has no {SCRATCH_ENV} (start it with `s3pet launch`)",
            w.rank
        ))
    })?;
    let name = out.file_name().map_or_else(|| "run".into(), |n| n.to_os_string());
    let dir = PathBuf::from(scratch).join(format!("rank{}", w.rank)).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    if resume && out.is_dir() {
        copy_tree(out, &dir)?;
    }
    Ok(dir)
}

/// Copies the directory `from` to `to` (files and sub-directories).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        }
    }
    Ok(())
}
