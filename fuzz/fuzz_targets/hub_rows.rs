//! The rows of a Hub dataset file on arbitrary bytes, as parquet (the Apache `parquet` crate's record
//! API), CSV and JSONL, mapped through the builtin `[hub]` tables of RTE, STS-B (float labels), COPA
//! (choices), MultiRC (struct fields, groups, units) and WiC: an error or examples, never a panic
//! that escapes s3pet. The `parquet` crate panics on some corrupt pages; s3pet catches those and
//! reports an error naming the file, so they are kept from libFuzzer's aborting panic hook (as the
//! binary keeps them from the default one); any other panic still aborts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3pet::data::{read_hub_examples, TaskSpec};

static QUIET: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(s3pet::data::quiet_parquet_panics);
    let dir = std::env::temp_dir();
    for ext in ["parquet", "csv", "jsonl"] {
        let path = dir.join(format!("s3pet-fuzz-hub-rows-{}.{ext}", std::process::id()));
        if std::fs::write(&path, data).is_err() {
            return;
        }
        for task in ["rte", "stsb", "copa", "multirc", "wic"] {
            if let Some(spec) = TaskSpec::builtin(task) {
                let _ = read_hub_examples(&spec, &path);
            }
        }
    }
});
