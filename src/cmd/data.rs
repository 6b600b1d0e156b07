//! `s3pet data export`: the exact examples a run uses (after the seeded split and cuts), as JSONL, so
//! that a reference implementation (tools/parity.py) trains and tests on the same examples.
use super::common::{train_config, Defaults};
use crate::cli::DataExportArgs;
use anyhow::Result;
use s3pet::data::{Example, Target};
use s3pet::train::load_examples;
use serde_json::json;

fn line(e: &Example) -> String {
    let target = match e.target {
        Target::Class(c) => json!({"label": c}),
        Target::Score(s) => json!({"score": s}),
    };
    let mut v = json!({"texts": e.texts, "group": e.group, "source": e.source});
    if let (Some(o), Some(t)) = (v.as_object_mut(), target.as_object()) {
        o.extend(t.clone());
    }
    v.to_string()
}

pub fn export(a: DataExportArgs) -> Result<()> {
    let cfg = train_config(&a.common, &a.task, "export", None, Defaults::search())?;
    let data = load_examples(&cfg)?;
    std::fs::create_dir_all(&a.out)?;
    for (name, split) in [("train", &data.train), ("dev", &data.dev), ("test", &data.test)] {
        let text: String = split.iter().map(|e| line(e) + "\n").collect();
        s3pet::artifact::write_bytes(&a.out.join(format!("{name}.jsonl")), text.as_bytes())?;
    }
    let spec = json!({"task": data.spec.name, "kind": data.spec.kind, "num_labels": data.spec.num_labels(),
                      "metrics": data.spec.metrics, "seed": cfg.seed,
                      "sizes": {"train": data.train.len(), "dev": data.dev.len(), "test": data.test.len()}});
    s3pet::artifact::write_json(&a.out.join("spec.json"), &spec)?;
    println!("{spec}");
    Ok(())
}
