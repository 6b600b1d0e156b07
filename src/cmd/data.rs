//! `s3pet data export`: the split and cut examples of a task as a run sees them.
//! `s3pet data fetch` / `data list`: a task's Hub dataset files into the hub cache, and what is cached.
use super::given::ArgSources;
use crate::cli::{DataExportArgs, DataFetchArgs, DataListArgs};
use anyhow::{Context, Result};
use s3pet::config::{resolve, Command, Method};
use s3pet::data::{hub, read_hub_examples, Provenance, TaskSpec};
use serde_json::json;

pub fn export(a: DataExportArgs, src: &ArgSources) -> Result<()> {
    let given = src.given(&a.task, &a.common, None, &[]);
    let cfg = resolve(Command::Train, Method::Structure, &TaskSpec::resolve(&a.task)?, &given)?;
    println!("{}", s3pet::pipeline::data_export::export_examples(&cfg, &a.out)?);
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
