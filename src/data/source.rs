//! Where a run's task data comes from (a data directory or the Hugging Face Hub), and the record of
//! what was read (the files with their size and sha256, and for the Hub the repo, config and commit),
//! which a run saves in its config.json so that eval and --resume read the same rows.
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::readers::read_units;
use super::rows::{read_rows, RowMapper};
use super::spec::TaskSpec;
use super::split::{apply_protocol, SplitUnits, TaskData};
use crate::error::{Error, Result};

/// Where a task's rows are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The spec's files in their original formats under a directory (`--data-dir`, `$S3PET_DATA`).
    Dir(PathBuf),
    /// The spec's `[hub]` dataset repo through the hub cache (`$HF_HOME/hub`, from `$HF_ENDPOINT`):
    /// `revision` (a branch, tag or commit) overrides the spec's; `offline` reads the cache only.
    Hub { revision: Option<String>, offline: bool },
}

impl DataSource {
    /// A run's source: `data_dir` when given (and not empty, as older runs could record it), else the
    /// Hub (offline when `HF_HUB_OFFLINE` is set), pinned to the commit a previous load recorded.
    pub fn for_run(data_dir: Option<&Path>, recorded: Option<&Provenance>) -> DataSource {
        match (data_dir.filter(|d| !d.as_os_str().is_empty()), recorded) {
            (Some(d), _) => DataSource::Dir(d.to_path_buf()),
            (None, Some(Provenance::Hub { commit, .. })) => {
                DataSource::Hub { revision: Some(commit.clone()), offline: crate::hub::offline() }
            }
            (None, _) => DataSource::Hub { revision: None, offline: crate::hub::offline() },
        }
    }
}

/// One file a task's rows came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// The spec's split it feeds: `train`, `dev` or `test`.
    pub split: String,
    /// Relative to the data directory, or to the repo root.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What a load read: saved as `data` in a run's config.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum Provenance {
    Dir {
        dir: PathBuf,
        files: Vec<DataFile>,
    },
    Hub {
        repo: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<String>,
        /// The revision asked for (`main`, a tag, or a commit).
        revision: String,
        /// The commit it resolved to: every file is from this commit.
        commit: String,
        files: Vec<DataFile>,
    },
}

impl Provenance {
    pub fn files(&self) -> &[DataFile] {
        match self {
            Provenance::Dir { files, .. } | Provenance::Hub { files, .. } => files,
        }
    }

    /// Checks a new load against a run's record: for the Hub every file must have the recorded
    /// sha256 (a commit's files never change, so a difference is a damaged cache); for a directory
    /// a changed file is only logged (the user's own data).
    pub fn check_against(&self, recorded: &Provenance) -> Result<()> {
        for f in self.files() {
            let Some(r) = recorded.files().iter().find(|r| r.path == f.path) else { continue };
            if r.sha256 == f.sha256 {
                continue;
            }
            let msg = format!(
                "sha256 {} differs from the run's record {} (config.json `data`)",
                f.sha256, r.sha256
            );
            match self {
                Provenance::Hub { repo, .. } => {
                    let hint = "the hub cache is damaged: remove the file and run `s3pet data fetch` again";
                    return Err(Error::file(&f.path, format!("dataset `{repo}`: {msg}; {hint}")));
                }
                Provenance::Dir { dir, .. } => {
                    tracing::warn!(file = %dir.join(&f.path).display(), "{msg}: the data changed since the run")
                }
            }
        }
        Ok(())
    }
}

/// Size and sha256 (hex) of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}

/// Loads a task from `source` and splits it with the protocol (see `split::apply_protocol`);
/// returns the examples and the record of the files read.
pub fn load_task_from(spec: &TaskSpec, source: &DataSource, seed: u64) -> Result<(TaskData, Provenance)> {
    spec.validate()?;
    match source {
        DataSource::Dir(dir) => load_dir(spec, dir, seed),
        DataSource::Hub { revision, offline } => load_hub(spec, revision.as_deref(), *offline, seed),
    }
}

/// A run's task data: [`DataSource::for_run`], then [`load_task_from`], checked against the run's
/// record when it has one.
pub fn load_run_data(
    spec: &TaskSpec,
    data_dir: Option<&Path>,
    recorded: Option<&Provenance>,
    seed: u64,
) -> Result<(TaskData, Provenance)> {
    let (data, provenance) = load_task_from(spec, &DataSource::for_run(data_dir, recorded), seed)?;
    if let Some(r) = recorded {
        provenance.check_against(r)?;
    }
    Ok((data, provenance))
}

fn load_dir(spec: &TaskSpec, dir: &Path, seed: u64) -> Result<(TaskData, Provenance)> {
    let (Some(train), Some(dev)) = (&spec.train, &spec.dev) else {
        let msg = "has no files for a data directory (only a [hub] table): drop --data-dir and S3PET_DATA";
        return Err(Error::config(format!("{}.train", spec.name), format!("task `{}` {msg}", spec.name)));
    };
    let named = [("train", Some(train)), ("dev", Some(dev)), ("test", spec.test.as_ref())];
    let named: Vec<(&str, &PathBuf)> = named.into_iter().filter_map(|(s, p)| p.map(|p| (s, p))).collect();
    if let Some((_, first)) = named.iter().find(|(_, p)| p.is_relative()) {
        if !dir.is_dir() {
            let msg = format!(
                "data directory not found (needed for {}; set --data-dir or S3PET_DATA, or unset both to use the Hub)",
                first.display()
            );
            return Err(Error::file(dir, msg));
        }
    }
    let mut splits = Vec::new();
    let mut files = Vec::new();
    for (split, rel) in named {
        let path = dir.join(rel);
        let units = read_units(spec, &path)?;
        let (size, sha256) = sha256_file(&path)?;
        files.push(DataFile { split: split.into(), path: rel.display().to_string(), size, sha256 });
        splits.push(SplitUnits { units, origin: path });
    }
    let data = protocol(spec, splits, seed)?;
    Ok((data, Provenance::Dir { dir: dir.to_path_buf(), files }))
}

fn load_hub(
    spec: &TaskSpec,
    revision: Option<&str>,
    offline: bool,
    seed: u64,
) -> Result<(TaskData, Provenance)> {
    let Some(hub) = &spec.hub else {
        let msg = format!(
            "task `{}` has no [hub] table, so its data must come from a directory: pass --data-dir or set S3PET_DATA",
            spec.name
        );
        return Err(Error::config(format!("{}.hub", spec.name), msg));
    };
    let fetched = super::hub::fetch(&spec.name, hub, revision, offline)?;
    let mapper = RowMapper::new(spec, hub)?;
    let mut splits = Vec::new();
    for (role, _) in hub.splits() {
        let mut units = Vec::new();
        let mut origin = PathBuf::new();
        for (file, local) in
            fetched.provenance.files().iter().zip(&fetched.local).filter(|(f, _)| f.split == role)
        {
            let rows = read_rows(local)?;
            let source = format!("hf://datasets/{}/{}", hub.repo, file.path);
            units.extend(mapper.units(&rows, local, &source)?);
            if origin.as_os_str().is_empty() {
                origin = local.clone();
            }
        }
        splits.push(SplitUnits { units, origin });
    }
    let data = protocol(spec, splits, seed)?;
    Ok((data, fetched.provenance))
}

fn protocol(spec: &TaskSpec, splits: Vec<SplitUnits>, seed: u64) -> Result<TaskData> {
    let mut it = splits.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(train), Some(dev), test) => apply_protocol(spec, train, dev, test, seed),
        _ => Err(Error::config(format!("{}.dev", spec.name), "a task needs a train and a dev split")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_round_trips_and_rejects_unknown_keys() {
        let file = DataFile {
            split: "train".into(),
            path: "rte/train.parquet".into(),
            size: 3,
            sha256: "ab".into(),
        };
        let p = Provenance::Hub {
            repo: "org/x".into(),
            config: Some("rte".into()),
            revision: "main".into(),
            commit: "c".repeat(40),
            files: vec![file.clone()],
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["source"], "hub");
        assert_eq!(serde_json::from_value::<Provenance>(v.clone()).unwrap(), p);
        let mut bad = v;
        bad["colour"] = "red".into();
        assert!(serde_json::from_value::<Provenance>(bad).unwrap_err().to_string().contains("colour"));
        let other = DataFile { sha256: "cd".into(), ..file };
        let damaged = match p.clone() {
            Provenance::Hub { repo, config, revision, commit, .. } => {
                Provenance::Hub { repo, config, revision, commit, files: vec![other] }
            }
            d => d,
        };
        let err = damaged.check_against(&p).unwrap_err().to_string();
        assert!(
            err.contains("rte/train.parquet") && err.contains("differs") && err.contains("data fetch"),
            "{err}"
        );
        assert!(p.check_against(&p).is_ok());
    }

    #[test]
    fn sources_of_a_run() {
        let dir = Path::new("/data");
        assert_eq!(DataSource::for_run(Some(dir), None), DataSource::Dir(dir.into()));
        assert!(matches!(
            DataSource::for_run(Some(Path::new("")), None),
            DataSource::Hub { revision: None, .. }
        ));
        let rec = Provenance::Hub {
            repo: "a/b".into(),
            config: None,
            revision: "main".into(),
            commit: "f".repeat(40),
            files: vec![],
        };
        match DataSource::for_run(None, Some(&rec)) {
            DataSource::Hub { revision, .. } => assert_eq!(revision, Some("f".repeat(40)), "pinned"),
            s => panic!("{s:?}"),
        }
    }
}
