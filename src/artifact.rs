//! Atomic artifact writes: a file appears whole or not at all (temporary file, fsync, rename).
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Tensor;

fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(f) = std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            let _ = f.sync_all();
        }
    }
}

pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(path);
    Ok(())
}

pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::file(path, e.to_string()))?;
    text.push('\n');
    write_bytes(path, text.as_bytes())
}

pub fn write_safetensors<S: AsRef<str>>(path: &Path, named: &[(S, Tensor)]) -> Result<()> {
    let tmp = tmp_path(path);
    let res = Tensor::write_safetensors(named, &tmp)
        .map_err(|e| Error::safetensors(path, "write", &e))
        .and_then(|_| {
            let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res?;
    sync_dir(path);
    Ok(())
}

/// Appends one line (JSONL) and syncs it.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").and_then(|_| f.sync_data()).map_err(|e| Error::io(path, e))
}

/// Writes a whole directory atomically: `fill` writes into a temporary sibling (`.NAME.partial<pid>`),
/// which is renamed to `out` only when it has finished; a killed or failed write leaves `out` as it was
/// (absent, or the previous complete directory). An existing non-empty `out` is replaced only with
/// `overwrite`.
pub fn write_dir(out: &Path, overwrite: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let busy = out.is_dir() && std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.next().is_some();
    if busy && !overwrite {
        return Err(Error::file(out, "exists and is not empty (pass --overwrite)"));
    }
    if out.exists() && !out.is_dir() {
        return Err(Error::file(out, "exists and is not a directory"));
    }
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(".{name}.partial{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old{}", std::process::id()));
    if out.exists() {
        std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    let _ = std::fs::remove_dir_all(&old);
    sync_dir(out);
    Ok(())
}
