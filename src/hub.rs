//! `--model org/name`: a Hugging Face hub model, downloaded through the hf-hub crate into its local
//! cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) from `$HF_ENDPOINT` (default
//! huggingface.co). Cached files are used without a request; with `HF_HUB_OFFLINE=1` (or `--offline`)
//! nothing is requested and a file missing from the cache is an error.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The files a model directory needs.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
pub const OFFLINE_ENV: &str = "HF_HUB_OFFLINE";

/// Whether `model` names a hub repository (`org/name`) rather than a local directory: it does not
/// exist here, has exactly two non-empty parts of letters, digits, `-`, `_`, `.`, and its first part
/// is not a local directory (so a missing `models/x` stays a local path).
pub fn is_repo_id(model: &Path) -> bool {
    let Some(s) = model.to_str() else { return false };
    let parts: Vec<&str> = s.split('/').collect();
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    !model.exists() && parts.len() == 2 && parts.iter().all(|p| ok(p)) && !Path::new(parts[0]).is_dir()
}

pub fn offline() -> bool {
    std::env::var(OFFLINE_ENV)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The hub cache of this environment (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`); `None` when
/// neither HF_HOME nor HOME is set (hf-hub's default cache is under the home directory).
pub fn env_cache() -> Option<hf_hub::Cache> {
    if std::env::var_os("HF_HOME").is_none() && std::env::var_os("HOME").is_none() {
        return None;
    }
    Some(hf_hub::Cache::from_env())
}

/// The local directory of `model`: itself, or for a hub id the cache snapshot holding [`MODEL_FILES`]
/// (downloaded first when missing and not offline).
pub fn resolve(model: &Path) -> Result<PathBuf> {
    if !is_repo_id(model) {
        return Ok(model.to_path_buf());
    }
    let id = model.to_string_lossy().to_string();
    let cache = env_cache().ok_or_else(|| {
        Error::file(model, "hub model: neither HF_HOME nor HOME is set, so there is no hub cache")
    })?;
    let repo = cache.model(id.clone());
    let mut paths = Vec::new();
    if offline() {
        for f in MODEL_FILES {
            paths.push(repo.get(f).ok_or_else(|| {
                Error::file(
                    model,
                    format!(
                        "hub model: `{f}` is not in the local cache ({}) and {OFFLINE_ENV} is set; run once \
                         online, or pass --model DIR",
                        cache.path().display()
                    ),
                )
            })?);
        }
    } else {
        use std::io::IsTerminal;
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(std::io::stderr().is_terminal())
            .build()
            .map_err(|e| Error::file(model, format!("hub model: cannot set up the client: {e}")))?;
        let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
        let remote = api.model(id.clone());
        for f in MODEL_FILES {
            let p = remote.get(f).map_err(|e| {
                Error::file(
                    model,
                    format!(
                        "not a local directory, and as a hub model `{f}` could not be fetched from {endpoint}: \
                         {e} (set {OFFLINE_ENV}=1 to use only the cache, or pass --model DIR)"
                    ),
                )
            })?;
            paths.push(p);
        }
    }
    let dir = paths[0].parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(p) = paths.iter().find(|p| p.parent() != Some(dir.as_path())) {
        return Err(Error::file(
            p,
            format!(
                "hub model: cached files of `{id}` come from different revisions; remove {} and retry",
                dir.display()
            ),
        ));
    }
    tracing::info!(model = %id, dir = %dir.display(), "hub model");
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_local_paths() {
        assert!(is_repo_id(Path::new("sentence-transformers/all-MiniLM-L6-v2")));
        assert!(is_repo_id(Path::new("org/name.v2")));
        for local in ["/nonexistent/model", "a/b/c", "noslash", "./x", "org/", "/abs", "../up/x", "src/x"] {
            assert!(!is_repo_id(Path::new(local)), "{local}");
        }
    }
}
