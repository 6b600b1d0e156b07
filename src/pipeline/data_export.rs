//! `s3pet data export`: the exact examples a run uses (after the seeded split and cuts), as JSONL, so
//! that a reference implementation (tools/parity.py) trains and tests on the same examples.
use crate::config::RunConfig;
use crate::data::{Example, Target};
use crate::error::Result;
use crate::train::load_examples;
use serde_json::{json, Value};
use std::path::Path;

fn line(e: &Example) -> String {
    let mut v = json!({"texts": e.texts, "group": e.group, "source": e.source});
    match e.target {
        Target::Class(c) => v["label"] = json!(c),
        Target::Score(s) => v["score"] = json!(s),
    }
    v.to_string()
}

/// Writes train/dev/test.jsonl and spec.json of `cfg`'s task into `out`; returns spec.json.
pub fn export_examples(cfg: &RunConfig, out: &Path) -> Result<Value> {
    let (data, _) = load_examples(cfg)?;
    std::fs::create_dir_all(out).map_err(|e| crate::Error::io(out, e))?;
    for (name, split) in [("train", &data.train), ("dev", &data.dev), ("test", &data.test)] {
        let text: String = split.iter().map(|e| line(e) + "\n").collect();
        crate::artifact::write_bytes(&out.join(format!("{name}.jsonl")), text.as_bytes())?;
    }
    let spec = json!({"task": data.spec.name, "kind": data.spec.kind, "num_labels": data.spec.num_labels(),
                      "metrics": data.spec.metrics, "seed": cfg.seed,
                      "sizes": {"train": data.train.len(), "dev": data.dev.len(), "test": data.test.len()}});
    crate::artifact::write_json(&out.join("spec.json"), &spec)?;
    Ok(spec)
}
