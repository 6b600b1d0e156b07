//! TSV and JSONL readers on arbitrary bytes: an error or examples, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3pet::data::{read_examples, TaskSpec};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("s3pet-fuzz-reader-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    for task in ["rte", "cola", "stsb", "copa", "multirc", "wsc"] {
        if let Some(spec) = TaskSpec::builtin(task) {
            let _ = read_examples(&spec, &path);
        }
    }
});
