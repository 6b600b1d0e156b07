//! Task data from a Hugging Face Hub dataset repo, through the hf-hub crate, into the hub cache that
//! Python's `huggingface_hub` / `datasets` use (`$HF_HOME/hub/datasets--org--name/{blobs,snapshots,refs}`).
//!
//! Online: the revision API (`/api/datasets/{repo}/revision/{rev}?blobs=true`) gives the commit and
//! every file's size and LFS sha256; the split files are downloaded at that commit (hf-hub writes
//! `blobs/<etag>.part` and renames it when complete, so a killed download never leaves a complete-
//! looking file; a resumed one continues the `.part`), then checked against the size and sha256 the
//! Hub gave: a mismatch removes the file again. `refs/<revision>` records the commit. Offline
//! (`HF_HUB_OFFLINE=1`, `--offline`): no request; the commit comes from `refs/<revision>` and the files
//! from its snapshot.
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use super::hub_cache::walk;
use super::hub_spec::HubSpec;
use super::rows::ROW_FILE_EXTENSIONS;
use super::source::{sha256_file, DataFile, Provenance};
use crate::error::{Error, Result};
use crate::hub::OFFLINE_ENV;

/// The files of a load: the record (repo, commit, files) and each file's path in the cache.
pub struct Fetched {
    pub provenance: Provenance,
    /// In the order of `provenance.files()`.
    pub local: Vec<PathBuf>,
}

/// One repo file as the revision API lists it.
#[derive(Debug, Clone, Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Debug, Clone, Deserialize)]
struct Lfs {
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct Listing {
    sha: String,
    siblings: Vec<Sibling>,
}

/// A dataset repo at a revision, for requests and messages.
struct Target<'a> {
    task: &'a str,
    hub: &'a HubSpec,
    revision: String,
    cache: Cache,
}

impl Target<'_> {
    fn describe(&self) -> String {
        let config = self.hub.config.as_deref().map(|c| format!("config `{c}`, ")).unwrap_or_default();
        format!("dataset `{}` ({config}revision `{}`)", self.hub.repo, self.revision)
    }
    fn repo_dir(&self) -> PathBuf {
        self.cache.path().join(Repo::new(self.hub.repo.clone(), RepoType::Dataset).folder_name())
    }
    /// Where split files are looked for: `dir`, else the config's folder, else the repo root and
    /// then `data/` (where `datasets`' push_to_hub puts them).
    fn dirs(&self) -> Vec<&str> {
        match self.hub.dir.as_deref().or(self.hub.config.as_deref()) {
            Some(d) => vec![d],
            None => vec!["", "data"],
        }
    }
    /// The files of `split` among `names`: those of the first folder of [`Self::dirs`] that has any.
    fn split_files(&self, names: &[&str], split: &str) -> Vec<String> {
        self.dirs()
            .into_iter()
            .map(|d| split_files(names.iter().copied(), d, split))
            .find(|f| !f.is_empty())
            .unwrap_or_default()
    }
    fn repo_at(&self, revision: &str) -> Repo {
        Repo::with_revision(self.hub.repo.clone(), RepoType::Dataset, revision.to_string())
    }
    fn snapshot(&self, commit: &str) -> PathBuf {
        self.repo_dir().join("snapshots").join(commit)
    }
    fn fetched(&self, commit: String, files: Vec<DataFile>, local: Vec<PathBuf>) -> Fetched {
        let h = self.hub;
        let revision = self.revision.clone();
        let provenance =
            Provenance::Hub { repo: h.repo.clone(), config: h.config.clone(), revision, commit, files };
        Fetched { provenance, local }
    }
}

/// The hub cache of this environment (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
pub fn cache() -> Result<Cache> {
    crate::hub::env_cache().ok_or_else(|| {
        Error::Msg("neither HF_HOME nor HOME is set, so there is no hub cache for task data".into())
    })
}

/// The files of the splits `hub.splits()` of `task` (online: fetched as needed; offline: from the
/// cache only). `revision` overrides the spec's (default `main`).
pub fn fetch(task: &str, hub: &HubSpec, revision: Option<&str>, offline: bool) -> Result<Fetched> {
    let revision = revision.or(hub.revision.as_deref()).unwrap_or("main").to_string();
    let t = Target { task, hub, revision, cache: cache()? };
    if offline {
        fetch_offline(&t)
    } else {
        fetch_online(&t)
    }
}

/// The repo files of split `split` under `dir`: named `split.<ext>` or `split-*.<ext>`, or in a
/// folder `split/`, with a row-file extension; sorted (shard order).
pub fn split_files<'a>(paths: impl IntoIterator<Item = &'a str>, dir: &str, split: &str) -> Vec<String> {
    let prefix = if dir.is_empty() { String::new() } else { format!("{}/", dir.trim_end_matches('/')) };
    let mut out: Vec<String> = paths
        .into_iter()
        .filter(|p| {
            let Some(rest) = p.strip_prefix(&prefix) else { return false };
            let Some((stem, ext)) = rest.rsplit_once('.') else { return false };
            let in_folder =
                rest.strip_prefix(split).is_some_and(|r| r.starts_with('/') && !r[1..].contains('/'));
            let named = !rest.contains('/') && (stem == split || stem.starts_with(&format!("{split}-")));
            ROW_FILE_EXTENSIONS.contains(&ext) && (named || in_folder)
        })
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

fn no_files(t: &Target, split: &str, commit: &str, listed: &[&str]) -> Error {
    let dirs = t.dirs();
    let shown: Vec<&str> =
        listed.iter().copied().filter(|p| dirs.iter().any(|d| p.starts_with(d))).take(12).collect();
    let dirs: Vec<String> =
        dirs.iter().map(|d| if d.is_empty() { "the repo root".into() } else { format!("`{d}/`") }).collect();
    Error::Msg(format!(
        "task `{}`: {} at commit {commit} has no files for split `{split}` in {} (.parquet, .jsonl or .csv \
         named `{split}-*`, `{split}.<ext>` or in `{split}/`; `dir` in [hub] names another folder); files there: {}",
        t.task,
        t.describe(),
        dirs.join(" or "),
        if shown.is_empty() { "none".to_string() } else { shown.join(", ") }
    ))
}

fn fetch_online(t: &Target) -> Result<Fetched> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_cache_dir(t.cache.path().clone());
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .with_progress(false)
        .build()
        .map_err(|e| Error::Msg(format!("task `{}`: cannot set up the hub client: {e}", t.task)))?;
    let listing = list_remote(&api, t)?;
    let commit = listing.sha.clone();
    let names: Vec<&str> = listing.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let mut files = Vec::new();
    let mut local = Vec::new();
    for (role, split) in t.hub.splits() {
        let chosen = t.split_files(&names, split);
        if chosen.is_empty() {
            return Err(no_files(t, split, &commit, &names));
        }
        for path in chosen {
            let sibling = listing.siblings.iter().find(|s| s.rfilename == path).cloned();
            let sibling = sibling.ok_or_else(|| Error::Msg(format!("{path}: not in the listing")))?;
            let (file, at) = cached_or_download(&api, t, &commit, &sibling)?;
            files.push(DataFile { split: role.into(), ..file });
            local.push(at);
        }
    }
    record_ref(t, &commit)?;
    Ok(t.fetched(commit, files, local))
}

fn list_remote(api: &hf_hub::api::sync::Api, t: &Target) -> Result<Listing> {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let request = api.repo(t.repo_at(&t.revision)).info_request().query("blobs", "true");
    let fail = |why: String| {
        Error::Msg(format!(
            "task `{}`: cannot list {} at {endpoint}: {why} (offline: set {OFFLINE_ENV}=1 to use the hub cache \
             only, or pass --data-dir with the task's files)",
            t.task,
            t.describe()
        ))
    };
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let kind = r.header("x-error-code").map(str::to_string).unwrap_or_default();
            let body = r.into_string().unwrap_or_default();
            let said = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            let what = match kind.as_str() {
                "RepoNotFound" => {
                    "no such dataset repo (or a private one: set HF_TOKEN or put a token in $HF_HOME/token)"
                }
                "RevisionNotFound" => "no such revision",
                _ => "the Hub refused",
            };
            return Err(fail(format!("HTTP {code}: {what}: {}", said.trim())));
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    let text = response.into_string().map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(format!("unexpected answer ({e})")))
}

/// The file from the cache when complete and intact, else downloaded at `commit` and checked.
fn cached_or_download(
    api: &hf_hub::api::sync::Api,
    t: &Target,
    commit: &str,
    s: &Sibling,
) -> Result<(DataFile, PathBuf)> {
    let expect = |size: u64, sha: &str| {
        s.size.is_none_or(|n| n == size) && s.lfs.as_ref().is_none_or(|l| l.sha256.eq_ignore_ascii_case(sha))
    };
    let pointer = t.snapshot(commit).join(&s.rfilename);
    if pointer.is_file() {
        let (size, sha256) = sha256_file(&pointer)?;
        if expect(size, &sha256) {
            return Ok((DataFile { split: String::new(), path: s.rfilename.clone(), size, sha256 }, pointer));
        }
        tracing::warn!(file = %pointer.display(), "cached file differs from the Hub's size/sha256: downloading again");
        remove_cached(&pointer);
    }
    tracing::info!(repo = %t.hub.repo, file = %s.rfilename, commit, "downloading");
    let bar = crate::progress::DownloadBar::new();
    let at = match api.repo(t.repo_at(commit)).download_with_progress(&s.rfilename, bar) {
        Ok(at) => at,
        // another s3pet (an experiment's parallel cell) is downloading the same file: wait for it
        Err(hf_hub::api::sync::ApiError::LockAcquisition(lock)) => wait_for(&pointer, &lock)?,
        Err(e) => {
            let msg =
                format!("task `{}`: cannot download `{}` of {}: {e}", t.task, s.rfilename, t.describe());
            return Err(Error::Msg(msg));
        }
    };
    let (size, sha256) = sha256_file(&at)?;
    if !expect(size, &sha256) {
        remove_cached(&at);
        let want = format!(
            "{} bytes, sha256 {}",
            s.size.map_or("?".into(), |n| n.to_string()),
            s.lfs.as_ref().map_or("?", |l| l.sha256.as_str())
        );
        let msg = format!(
            "download of `{}` of {} is incomplete or corrupt: got {size} bytes, sha256 {sha256}; the Hub lists \
             {want}. Removed it from the cache; run again",
            s.rfilename,
            t.describe()
        );
        return Err(Error::file(&at, msg));
    }
    Ok((DataFile { split: String::new(), path: s.rfilename.clone(), size, sha256 }, at))
}

/// Waits (up to 30 minutes) for another process's download of `pointer`, which holds `lock`.
fn wait_for(pointer: &Path, lock: &Path) -> Result<PathBuf> {
    tracing::info!(lock = %lock.display(), "another process is downloading this file: waiting");
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(1800) {
        if pointer.is_file() {
            return Ok(pointer.to_path_buf());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Err(Error::file(
        lock,
        "another process has held this download lock for 30 minutes; remove the lock file if none runs",
    ))
}

/// Removes a snapshot pointer and the blob it links to.
fn remove_cached(pointer: &Path) {
    if let Ok(blob) = std::fs::canonicalize(pointer) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(pointer);
}

/// `refs/<revision>` = commit, as huggingface_hub keeps it (no ref named by its own commit).
fn record_ref(t: &Target, commit: &str) -> Result<()> {
    let refs = t.repo_dir().join("refs");
    if t.revision != commit {
        t.cache
            .repo(t.repo_at(&t.revision))
            .create_ref(commit)
            .map_err(|e| Error::io(refs.join(&t.revision), e))?;
    }
    let own = refs.join(commit);
    if std::fs::read_to_string(&own).is_ok_and(|c| c.trim() == commit) {
        let _ = std::fs::remove_file(own);
    }
    Ok(())
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

fn fetch_offline(t: &Target) -> Result<Fetched> {
    let not_cached = || {
        Error::file(
            t.repo_dir(),
            format!(
                "task `{}`: {} is not in the hub cache and offline mode is on ({OFFLINE_ENV}=1 or --offline): \
                 run `s3pet data fetch --task {}` once online, or pass --data-dir with the task's files",
                t.task,
                t.describe(),
                t.task
            ),
        )
    };
    let commit = if is_commit(&t.revision) {
        t.revision.clone()
    } else {
        let r =
            std::fs::read_to_string(t.repo_dir().join("refs").join(&t.revision)).map_err(|_| not_cached())?;
        r.trim().to_string()
    };
    let snapshot = t.snapshot(&commit);
    if !snapshot.is_dir() {
        return Err(not_cached());
    }
    let cached = walk(&snapshot, &snapshot);
    let names: Vec<&str> = cached.iter().map(String::as_str).collect();
    let (mut files, mut local) = (Vec::new(), Vec::new());
    for (role, split) in t.hub.splits() {
        let chosen = t.split_files(&names, split);
        if chosen.is_empty() {
            let e = no_files(t, split, &commit, &names);
            return Err(Error::Msg(format!(
                "{e} (offline: only the cache was searched; `s3pet data fetch --task {}`)",
                t.task
            )));
        }
        for path in chosen {
            let at = snapshot.join(&path);
            let (size, sha256) = sha256_file(&at)?;
            check_blob_name(&at, &sha256)?;
            files.push(DataFile { split: role.into(), path, size, sha256 });
            local.push(at);
        }
    }
    Ok(t.fetched(commit, files, local))
}

/// An LFS blob is named by its sha256: a cached file whose content no longer has that hash is damaged.
fn check_blob_name(pointer: &Path, sha256: &str) -> Result<()> {
    let blob = std::fs::read_link(pointer).ok();
    let name = blob.as_ref().and_then(|b| b.file_name()).and_then(|n| n.to_str()).unwrap_or("");
    if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) && !name.eq_ignore_ascii_case(sha256) {
        return Err(Error::file(
            pointer,
            format!("cached file is damaged: sha256 {sha256}, its blob is named {name}; remove it and run `s3pet data fetch`"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_files_follow_the_hub_naming() {
        let files = [
            "README.md",
            "rte/train-00001-of-00002.parquet",
            "rte/train-00000-of-00002.parquet",
            "rte/validation-00000-of-00001.parquet",
            "mnli/validation_matched-00000-of-00001.parquet",
            "mnli/validation_mismatched-00000-of-00001.parquet",
            "plain/train.csv",
            "plain/train_extra.csv",
            "plain/test/0000.parquet",
            "plain/test/deeper/x.parquet",
            "plain/validation.txt",
            "train.jsonl",
        ];
        let f = |dir: &str, split: &str| split_files(files, dir, split);
        assert_eq!(
            f("rte", "train"),
            ["rte/train-00000-of-00002.parquet", "rte/train-00001-of-00002.parquet"]
        );
        assert_eq!(f("mnli", "validation"), Vec::<String>::new(), "validation_matched is another split");
        assert_eq!(f("mnli", "validation_matched"), ["mnli/validation_matched-00000-of-00001.parquet"]);
        assert_eq!(f("plain", "train"), ["plain/train.csv"]);
        assert_eq!(f("plain", "test"), ["plain/test/0000.parquet"]);
        assert_eq!(f("plain", "validation"), Vec::<String>::new(), ".txt is no row file");
        assert_eq!(f("", "train"), ["train.jsonl"]);
        assert_eq!(f("rte/", "validation"), ["rte/validation-00000-of-00001.parquet"]);
    }

    #[test]
    fn commits_are_forty_hex_digits() {
        assert!(is_commit(&"0a".repeat(20)));
        assert!(!is_commit("main"));
        assert!(!is_commit(&"g".repeat(40)));
    }
}
