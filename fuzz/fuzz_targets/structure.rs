//! structure.json and a run's config.json parsers (and structure validation) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = s3pet::bench::shape_config("minilm").expect("builtin shape");
    if let Ok(s) = serde_json::from_slice::<s3pet::structure::Structure>(data) {
        let _ = s.validate(&cfg);
    }
    let _ = serde_json::from_slice::<s3pet::config::TrainConfig>(data);
    let _ = serde_json::from_slice::<s3pet::backbone::BertConfig>(data);
});
