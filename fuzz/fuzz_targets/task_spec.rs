//! Task-spec TOML and search-space TOML parsers (and validation) on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3pet::data::TaskSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = TaskSpec::from_toml_str(text, "fuzz") {
        let _ = spec.validate();
        let _ = spec.num_labels();
    }
    if let Ok(space) = toml::from_str::<s3pet::space::Space>(text) {
        let cfg = s3pet::bench::shape_config("minilm").expect("builtin shape");
        let _ = space.candidates(&cfg);
    }
});
