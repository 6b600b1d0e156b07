//! `s3pet data export`: the exact examples a run uses (after the seeded split and cuts), as JSONL, so
//! that a reference implementation (tools/parity.py) trains and tests on the same examples.
//! `s3pet data fetch` / `data list`: a task's Hub dataset files into the hub cache, and what is cached.
use super::common::{train_config, Defaults};
use crate::cli::{DataExportArgs, DataFetchArgs, DataListArgs};
use anyhow::{Context, Result};
use s3pet::data::{hub, read_hub_examples, Example, Provenance, Target, TaskSpec};
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
    let (data, _) = load_examples(&cfg)?;
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

pub fn fetch(a: DataFetchArgs) -> Result<()> {
    let spec = TaskSpec::resolve(&a.task)?;
    let hub_spec = spec
        .hub
        .as_ref()
        .with_context(|| format!("task `{}` has no [hub] table: nothing to fetch", spec.name))?;
    let fetched = hub::fetch(&spec.name, hub_spec, a.revision.as_deref(), s3pet::hub::offline())?;
    // the rows must map to examples now, not at the first run
    let mut examples = Vec::new();
    for path in &fetched.local {
        examples.push(read_hub_examples(&spec, path)?.len());
    }
    let Provenance::Hub { repo, config, revision, commit, files } = &fetched.provenance else {
        anyhow::bail!("not a hub record");
    };
    if a.json {
        let files: Vec<_> = files
            .iter()
            .zip(&fetched.local)
            .zip(&examples)
            .map(|((f, at), n)| {
                json!({"split": f.split, "path": f.path, "size": f.size, "sha256": f.sha256,
                                       "examples": n, "cached": at})
            })
            .collect();
        let out = json!({"task": spec.name, "repo": repo, "config": config, "revision": revision,
                         "commit": commit, "files": files});
        println!("{out}");
        return Ok(());
    }
    let config = config.as_deref().map(|c| format!(", config {c}")).unwrap_or_default();
    println!("task {}: dataset {repo}{config}, revision {revision} = commit {commit}", spec.name);
    for ((f, at), n) in files.iter().zip(&fetched.local).zip(&examples) {
        println!("  {:<5} {}  {} bytes  {n} examples  sha256 {}", f.split, f.path, f.size, f.sha256);
        println!("        {}", at.display());
    }
    Ok(())
}

pub fn list(a: DataListArgs) -> Result<()> {
    let cached = s3pet::data::hub_cache::cached_datasets()?;
    if a.json {
        println!("{}", json!({"cache": hub::cache()?.path(), "datasets": cached}));
        return Ok(());
    }
    println!("hub cache: {}", hub::cache()?.path().display());
    if cached.is_empty() {
        println!("  no dataset repos (s3pet data fetch --task T)");
    }
    for d in cached {
        println!("{}  {}", d.repo, d.dir.display());
        for (name, commit) in &d.refs {
            println!("  {name} -> {commit}");
        }
        for s in &d.snapshots {
            let bytes: u64 = s.files.iter().map(|(_, n)| n).sum();
            println!("  snapshot {}: {} files, {bytes} bytes", s.commit, s.files.len());
            for (path, size) in &s.files {
                println!("    {path}  {size} bytes");
            }
        }
        for part in &d.incomplete {
            println!("  incomplete download blobs/{part} (the next fetch of that file continues it)");
        }
    }
    Ok(())
}
