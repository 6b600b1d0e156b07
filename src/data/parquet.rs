//! Rows of a parquet file through the Apache `parquet` crate's record API (no Arrow): each row one
//! JSON object (strings, numbers, booleans; structs as objects, lists as arrays), in file order,
//! row group after row group. Errors name the file (and the row, counted from 1).
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use serde_json::Value;

use crate::error::{Error, Result};

/// What a parse failure most likely means, for the message.
const HINT: &str = "a truncated or corrupt parquet file (an interrupted download or copy?)";

/// Reads every row. The `parquet` crate panics on some corrupt footers (it documents negative column
/// offsets as a panic): those are checked first, and any other panic of the crate is caught and
/// becomes an error naming the file.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<Value>> {
    match std::panic::catch_unwind(|| read_all(path)) {
        Ok(rows) => rows,
        Err(panic) => {
            let what = crate::guard::panic_message(panic.as_ref());
            Err(Error::file(path, format!("cannot read parquet: the reader failed ({what}) ({HINT})")))
        }
    }
}

/// Keeps the panic hook from printing the `parquet` crate's panics, which [`read_rows`] catches and
/// reports as an error naming the file; every other panic goes to the hook installed before (for the
/// binary the default one, for a fuzz target libFuzzer's abort). Call once, early.
pub fn quiet_parquet_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_parquet = info.location().is_some_and(|l| l.file().replace('\\', "/").contains("/parquet-"));
        if !in_parquet {
            previous(info);
        }
    }));
}

/// Column chunks must lie inside the file (the crate asserts non-negative offsets and sizes).
fn check_chunks(path: &Path, reader: &SerializedFileReader<std::fs::File>, file_len: u64) -> Result<()> {
    for (g, group) in reader.metadata().row_groups().iter().enumerate() {
        for c in group.columns() {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let len = c.compressed_size();
            let end =
                u64::try_from(start).ok().zip(u64::try_from(len).ok()).and_then(|(s, l)| s.checked_add(l));
            if end.is_none_or(|e| e > file_len) {
                let msg = format!(
                    "cannot read parquet: row group {g}, column `{}`: bytes {start}..+{len} are not inside the \
                     file's {file_len} bytes ({HINT})",
                    c.column_path().string()
                );
                return Err(Error::file(path, msg));
            }
        }
    }
    Ok(())
}

fn read_all(path: &Path) -> Result<Vec<Value>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let reader = SerializedFileReader::new(file)
        .map_err(|e| Error::file(path, format!("cannot read parquet: {e} ({HINT})")))?;
    check_chunks(path, &reader, file_len)?;
    let mut rows = Vec::new();
    for g in 0..reader.num_row_groups() {
        let at = |e: parquet::errors::ParquetError| {
            Error::file(path, format!("cannot read parquet row group {g}: {e} ({HINT})"))
        };
        let group = reader.get_row_group(g).map_err(at)?;
        for row in RowIter::from_row_group(None, group.as_ref()).map_err(at)? {
            let row = row.map_err(|e| {
                Error::parse(path, rows.len() + 1, format!("cannot read parquet row: {e} ({HINT})"))
            })?;
            rows.push(row.to_json_value());
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hub/datasets").join(rel)
    }

    #[test]
    fn reads_the_hub_layout_fixtures() {
        let rows = read_rows(&fixture("nyu-mll/glue/rte/train-00000-of-00001.parquet")).unwrap();
        assert_eq!(rows.len(), 200, "several row groups of 64");
        assert_eq!(rows[0]["idx"], 0);
        assert!(rows[0]["sentence1"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(rows.iter().all(|r| matches!(r["label"].as_i64(), Some(0 | 1))));
        let multirc =
            read_rows(&fixture("aps/super_glue/multirc/validation-00000-of-00001.parquet")).unwrap();
        assert!(multirc[0]["idx"]["question"].is_i64(), "structs become objects: {}", multirc[0]);
        let stsb = read_rows(&fixture("nyu-mll/glue/stsb/train-00000-of-00001.parquet")).unwrap();
        assert!(stsb[0]["label"].is_f64());
    }

    /// Fuzz finds that made the crate panic: a column chunk at a negative offset (an assert in the
    /// crate's metadata), a dictionary-encoded page with no dictionary (an `expect` in its decoder).
    fn malformed(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/malformed").join(name))
            .unwrap()
    }

    #[test]
    fn truncated_and_corrupt_files_name_the_file() {
        let src = std::fs::read(fixture("nyu-mll/glue/rte/validation-00000-of-00001.parquet")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut corrupt = src.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid..mid + 64].fill(0xff);
        for (name, bytes) in [
            ("empty.parquet", vec![]),
            ("short.parquet", src[..7].to_vec()),
            ("half.parquet", src[..src.len() / 2].to_vec()),
            ("one_short.parquet", src[..src.len() - 1].to_vec()),
            ("not_parquet.parquet", b"index\tsentence1\n0\ta\n".to_vec()),
            ("corrupt.parquet", corrupt),
            ("negative_offset.parquet", malformed("parquet_negative_offset.parquet")),
            ("no_dictionary.parquet", malformed("parquet_no_dictionary.parquet")),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = read_rows(&path).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("parquet"), "{name}: {err}");
        }
    }
}
