//! What the hub cache holds (`s3pet data list`): the dataset repos under `$HF_HOME/hub`, their refs,
//! snapshots and interrupted downloads.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::hub::cache;
use crate::error::Result;

/// One cached dataset repo, for `s3pet data list`.
#[derive(Debug, Clone, Serialize)]
pub struct CachedDataset {
    pub repo: String,
    pub dir: PathBuf,
    /// Revision name -> commit.
    pub refs: BTreeMap<String, String>,
    pub snapshots: Vec<CachedSnapshot>,
    /// Downloads cut short (`blobs/*.part`): the next fetch of that file continues them.
    pub incomplete: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachedSnapshot {
    pub commit: String,
    /// (repo path, size in bytes)
    pub files: Vec<(String, u64)>,
}

/// The dataset repos in the hub cache.
pub fn cached_datasets() -> Result<Vec<CachedDataset>> {
    let cache = cache()?;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(cache.path()) else { return Ok(out) };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("datasets--"))
        else {
            continue;
        };
        let refs_dir = dir.join("refs");
        let refs = walk(&refs_dir, &refs_dir)
            .into_iter()
            .filter_map(|r| {
                std::fs::read_to_string(refs_dir.join(&r)).ok().map(|c| (r, c.trim().to_string()))
            })
            .collect();
        let snapshots_dir = dir.join("snapshots");
        let mut snapshots = Vec::new();
        for commit in std::fs::read_dir(&snapshots_dir).into_iter().flatten().flatten() {
            let at = commit.path();
            let files = walk(&at, &at)
                .into_iter()
                .map(|f| {
                    let size = std::fs::metadata(at.join(&f)).map(|m| m.len()).unwrap_or(0);
                    (f, size)
                })
                .collect();
            snapshots.push(CachedSnapshot { commit: commit.file_name().to_string_lossy().into(), files });
        }
        snapshots.sort_by(|a, b| a.commit.cmp(&b.commit));
        let blobs = dir.join("blobs");
        let incomplete = walk(&blobs, &blobs).into_iter().filter(|b| b.ends_with(".part")).collect();
        out.push(CachedDataset { repo: name.replacen("--", "/", 1), dir, refs, snapshots, incomplete });
    }
    Ok(out)
}

/// Files below `dir` (through links), as `/`-separated paths relative to `root`, sorted.
pub(crate) fn walk(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(root, &path));
        } else if path.is_file() {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(
                    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
                );
            }
        }
    }
    out.sort();
    out
}
