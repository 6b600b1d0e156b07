//! `s3pet export`: a finished run as PEFT adapters for transformers' BertForSequenceClassification
//! (`--format peft`), or as a self-contained copy of its own files (`--format native`, lossless).
use crate::cli::ExportArgs;
use anyhow::{bail, Context, Result};
use s3pet::config::DeviceSpec;
use s3pet::peft::LN_SUBDIR;
use s3pet::rundir::portable;
use s3pet::rundir::RunModel;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub fn run(a: ExportArgs) -> Result<()> {
    match a.format.as_str() {
        "peft" => peft(&a),
        "native" => native(&a),
        f => bail!("unknown --format `{f}` (peft, native)"),
    }
}

/// `--out` must be empty or absent; with --overwrite the files an export writes are removed first.
fn prepare_out(out: &Path, overwrite: bool, ours: &[PathBuf]) -> Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        if !overwrite {
            bail!("{}: exists and is not empty (pass --overwrite)", out.display());
        }
        for f in ours {
            let _ = std::fs::remove_file(out.join(f));
        }
        let _ = std::fs::remove_dir(out.join(LN_SUBDIR));
    }
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    Ok(())
}

fn peft(a: &ExportArgs) -> Result<()> {
    let written = s3pet::peft::export_run(&a.run, &a.out, a.overwrite)?;
    println!("{}", json!({"out": written.out, "format": "peft", "adapters": written.adapters}));
    Ok(())
}

fn native(a: &ExportArgs) -> Result<()> {
    // the run must load (config, structure and weights agree) before anything is written
    RunModel::open(&a.run, Some(DeviceSpec::Cpu))?;
    let files = ["config.json", "structure.json", "weights.safetensors", "report.json"];
    prepare_out(&a.out, a.overwrite, &files.map(PathBuf::from))?;
    let src = a.run.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&src)?).with_context(|| src.display().to_string())?;
    // paths made absolute so that the copy works from anywhere
    for key in ["model", "data_dir", "structure"] {
        // config.json holds {"value": ..., "from": ...} per key (older runs: the plain value)
        let slot = if cfg[key]["value"].is_null() && !cfg[key].is_object() {
            &mut cfg[key]
        } else {
            &mut cfg[key]["value"]
        };
        if let Some(p) = slot.as_str().filter(|p| !p.is_empty()).map(str::to_string) {
            *slot = json!(portable(Path::new(&p)));
        }
    }
    s3pet::artifact::write_json(&a.out.join("config.json"), &cfg)?;
    let mut copied = vec!["config.json"];
    for f in &files[1..] {
        let p = a.run.join(f);
        if p.is_file() {
            let bytes = std::fs::read(&p).with_context(|| p.display().to_string())?;
            s3pet::artifact::write_bytes(&a.out.join(f), &bytes)?;
            copied.push(f);
        }
    }
    println!("{}", json!({"out": a.out, "format": "native", "files": copied}));
    Ok(())
}
