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
}
