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

/// A hidden sibling of `dir`: `.NAME.TAG-PID`.
fn sibling(dir: &Path, tag: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::file(dir, "needs a directory name to be written as a whole"))?
        .to_string_lossy();
    Ok(dir.with_file_name(format!(".{name}.{tag}-{}", std::process::id())))
}

/// The first entry under `dir` (relative to the top, `rel`) that is not one of `ours` nor a folder
/// holding one of them.
fn foreign_entry(dir: &Path, rel: &Path, ours: &[&str]) -> Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = rel.join(entry.file_name());
        let is_dir = entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_dir();
        let known = ours.iter().map(Path::new);
        if is_dir {
            if !known.clone().any(|o| o.starts_with(&path) && o != path) {
                return Ok(Some(path));
            }
            if let Some(f) = foreign_entry(&entry.path(), &path, ours)? {
                return Ok(Some(f));
            }
        } else if !known.clone().any(|o| o == path) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Puts the finished `tmp` in place of `out` (moved aside first when it exists, removed after).
fn swap_in(tmp: &Path, out: &Path) -> Result<()> {
    if !out.exists() {
        return std::fs::rename(tmp, out).map_err(|e| Error::io(out, e));
    }
    let old = sibling(out, "old")?;
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
    if let Err(e) = std::fs::rename(tmp, out) {
        let _ = std::fs::rename(&old, out);
        return Err(Error::io(out, e));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Writes a whole directory atomically: `fill` writes into a hidden temporary sibling
/// (`.NAME.partial-PID`) that is then renamed to `out`, so `out` never holds a half-written set of
/// files. An existing non-empty `out` is refused unless `overwrite`, and even then when it holds a file
/// that is not one of `ours` (paths relative to `out`: the files such a directory has); it is then
/// replaced whole.
pub fn write_dir<T>(
    out: &Path,
    overwrite: bool,
    ours: &[&str],
    fill: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    if out.exists() {
        if !out.is_dir() {
            return Err(Error::file(out, "exists and is not a directory"));
        }
        let busy = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.next().is_some();
        if busy && !overwrite {
            return Err(Error::file(out, "exists and is not empty (pass --overwrite to replace it)"));
        }
        if let Some(f) = foreign_entry(out, Path::new(""), ours)? {
            return Err(Error::file(
                out,
                format!("holds `{}`, which is not written here: not replaced (move it away)", f.display()),
            ));
        }
    }
    let tmp = sibling(out, "partial")?;
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let done = fill(&tmp).and_then(|v| swap_in(&tmp, out).map(|_| v));
    if done.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    sync_dir(out);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(dir: &Path, text: &str) -> Result<()> {
        std::fs::create_dir_all(dir.join("sub")).map_err(|e| Error::io(dir, e))?;
        write_bytes(&dir.join("a.txt"), text.as_bytes())?;
        write_bytes(&dir.join("sub/b.txt"), text.as_bytes())
    }

    #[test]
    fn write_dir_replaces_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let ours = ["a.txt", "sub/b.txt"];
        write_dir(&out, false, &ours, |t| fill(t, "one")).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("sub/b.txt")).unwrap(), "one");
        let refused = write_dir(&out, false, &ours, |t| fill(t, "two")).unwrap_err().to_string();
        assert!(refused.contains("--overwrite"), "{refused}");
        // a failing fill leaves the old directory as it was and no temporary behind
        let failed = write_dir(&out, true, &ours, |t| {
            fill(t, "half")?;
            Err::<(), _>(Error::Msg("disk full".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "one");
        write_dir(&out, true, &ours, |t| fill(t, "three")).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("sub/b.txt")).unwrap(), "three");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["out"], "no temporary or old directory is left");
        // a file it does not write is never deleted
        std::fs::write(out.join("notes.md"), "mine").unwrap();
        let kept = write_dir(&out, true, &ours, |t| fill(t, "four")).unwrap_err().to_string();
        assert!(kept.contains("notes.md"), "{kept}");
        assert_eq!(std::fs::read_to_string(out.join("notes.md")).unwrap(), "mine");
    }
}
