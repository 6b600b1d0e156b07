//! Model loading from bytes: arbitrary bytes as model.safetensors next to the tiny fixture's config.json
//! and tokenizer.json; loading and building the model return an error or a model, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("s3pet-fuzz-model-{}", std::process::id()));
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_bert");
    if !dir.is_dir() {
        let _ = std::fs::create_dir_all(&dir);
        for f in ["config.json", "tokenizer.json"] {
            let _ = std::fs::copy(fixture.join(f), dir.join(f));
        }
    }
    if std::fs::write(dir.join("model.safetensors"), data).is_err() {
        return;
    }
    let Ok(md) = s3pet::model::ModelDir::open(&dir) else { return };
    if let Ok(w) = md.load_weights(tch::Device::Cpu) {
        let head = s3pet::model::HeadInit::Fresh { num_labels: 2 };
        let _ = s3pet::model::Model::build(&md.cfg, &w, &[], false, head, 0);
    }
});
