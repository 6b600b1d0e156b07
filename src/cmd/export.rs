//! `s3pet export`: a finished run as PEFT adapters for transformers' BertForSequenceClassification
//! (`--format peft`), or as a self-contained copy of its own files (`--format native`, lossless).
use crate::cli::ExportArgs;
use anyhow::{bail, Context, Result};
use s3pet::config::DeviceSpec;
use s3pet::peft::{CONFIG_FILE, LN_SUBDIR, WEIGHTS_FILE};
use s3pet::pipeline::RunModel;
use s3pet::structure::Structure;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Written next to a PEFT export: the task and labels the classifier was trained for.
pub use s3pet::pipeline::import::META_FILE;

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

/// A path as written into an exported file: absolute when it exists here, else as given (a hub id).
fn portable(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

fn peft(a: &ExportArgs) -> Result<()> {
    let RunModel { cfg, md, spec, model, .. } = RunModel::open(&a.run, Some(DeviceSpec::Cpu))?;
    let structure = Structure::load(&a.run.join("structure.json"), &md.cfg)?;
    let base = portable(&cfg.model);
    let exported = match s3pet::peft::export(&model, &structure, &base)? {
        Ok(e) => e,
        Err(u) => bail!("{}: {u}", a.run.display()),
    };
    let ours: Vec<PathBuf> = [None, Some(LN_SUBDIR)]
        .iter()
        .flat_map(|sub| {
            let d = sub.map(PathBuf::from).unwrap_or_default();
            [d.join(CONFIG_FILE), d.join(WEIGHTS_FILE)]
        })
        .chain([PathBuf::from(META_FILE)])
        .collect();
    prepare_out(&a.out, a.overwrite, &ours)?;
    let mut written = Vec::new();
    for ad in &exported.adapters {
        let dir = match ad.subdir {
            Some(s) => a.out.join(s),
            None => a.out.clone(),
        };
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        s3pet::artifact::write_safetensors(&dir.join(WEIGHTS_FILE), &ad.tensors)?;
        s3pet::artifact::write_json(&dir.join(CONFIG_FILE), &ad.config)?;
        let sub = ad.subdir.unwrap_or(".");
        written.push(json!({"dir": sub, "peft_type": ad.config["peft_type"], "tensors": ad.tensors.len()}));
    }
    let meta = json!({
        "format": "peft",
        "run": portable(&a.run),
        "task": cfg.task,
        "labels": spec.labels,
        "num_labels": spec.num_labels(),
        "max_length": cfg.max_length,
        "base_model": base,
        "adapters": written,
    });
    s3pet::artifact::write_json(&a.out.join(META_FILE), &meta)?;
    println!("{}", json!({"out": a.out, "format": "peft", "adapters": written}));
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
        if let Some(p) = cfg[key].as_str().filter(|p| !p.is_empty()) {
            cfg[key] = json!(portable(Path::new(p)));
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
