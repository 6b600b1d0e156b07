//! The library's error type: every variant names the file, line, tensor key or site it is about.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    Parse { path: PathBuf, line: usize, msg: String },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("tensor `{key}`: {msg}")]
    Tensor { key: String, msg: String },
    #[error("site `{site}`: {msg}")]
    Site { site: String, msg: String },
    #[error("config key `{key}`: {msg}")]
    Config { key: String, msg: String },
    #[error("budget: {0}")]
    Budget(String),
    #[error("training: {0}")]
    Train(String),
    #[error("interrupted: {0}")]
    Interrupted(String),
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), err: source }
    }
    pub fn parse(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::Parse { path: path.into(), line, msg: msg.into() }
    }
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File { path: path.into(), msg: msg.into() }
    }
    pub fn site(site: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Site { site: site.into(), msg: msg.into() }
    }
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { key: key.into(), msg: msg.into() }
    }

    /// A safetensors file that cannot be read or written (`doing`: "read", "write"), with the likely
    /// cause in words: truncated, corrupt header, or the OS error (e.g. no space left on device).
    pub fn safetensors(path: impl Into<PathBuf>, doing: &str, e: &tch::TchError) -> Self {
        let raw = match e {
            tch::TchError::SafeTensorError { err, .. } => format!("{err:?}"),
            e => e.to_string(),
        };
        let starts = |keys: &[&str]| keys.iter().any(|k| raw.starts_with(k));
        let cause = if starts(&["HeaderTooSmall", "InvalidHeaderLength", "MetadataIncompleteBuffer"]) {
            format!("the file is truncated or its size does not match its header (an interrupted download or copy?) [{raw}]")
        } else if starts(&[
            "InvalidHeader",
            "InvalidOffset",
            "HeaderTooLarge",
            "JsonError",
            "TensorInvalidInfo",
            "ValidationOverflow",
        ]) {
            format!("the header is corrupt (not a safetensors file?) [{raw}]")
        } else if let Some(msg) = raw.split("message: \"").nth(1).and_then(|m| m.split('"').next()) {
            msg.to_string() // an OS error, e.g. "No space left on device"
        } else {
            raw
        };
        Error::file(path, format!("cannot {doing} safetensors: {cause}"))
    }
}
