//! `s3pet search`, `s3pet run` and `s3pet structure random`.
use super::given::ArgSources;
use crate::cli::{RandomArgs, RunArgs, SearchArgs};
use anyhow::Result;
use s3pet::config::{resolve, Command, Given, Method, RunConfig, SearchSettings, Strategy};
use s3pet::data::TaskSpec;
use s3pet::pipeline::search::check_peft_space;
use s3pet::pipeline::{random_structure_file, resume_config, search_only, search_then_retrain, RunOpts};
use serde_json::json;
use std::path::Path;

fn config(task: &str, out: &Path, resume: bool, given: &Given, command: Command) -> Result<RunConfig> {
    if resume {
        return Ok(resume_config(out, given)?);
    }
    Ok(resolve(command, Method::Structure, &TaskSpec::resolve(task)?, given)?)
}

pub fn search(a: SearchArgs, src: &ArgSources, quiet: bool) -> Result<()> {
    let given = src.given(&a.task, &a.common, Some((&a.space, &a.search)), &[]);
    let cfg = config(&a.task, &a.out, a.common.resume, &given, Command::Search)?;
    let o = RunOpts { resume: a.common.resume, overwrite: a.common.overwrite, quiet };
    println!("{}", search_only(&cfg, &a.out, o)?);
    Ok(())
}

pub fn run(a: RunArgs, src: &ArgSources, quiet: bool) -> Result<()> {
    let extra = [
        ("search.strategy", "strategy", a.strategy.as_ref().map(|s| json!(s))),
        ("search.search_epochs", "search-epochs", a.search_epochs.map(|e| json!(e))),
        ("epochs", "retrain-epochs", a.retrain_epochs.map(|e| json!(e))),
    ];
    let given = src.given(&a.task, &a.common, Some((&a.space, &a.search)), &extra);
    let cfg = config(&a.task, &a.out, a.common.resume, &given, Command::Run)?;
    let export = match a.export.as_deref() {
        Some([format, dir]) if format == "peft" => {
            check_peft_space(&cfg)?;
            Some(std::path::PathBuf::from(dir))
        }
        Some([format, _]) => {
            anyhow::bail!("--export {format}: only `peft` (a native copy: s3pet export --format native)")
        }
        _ => None,
    };
    let o = RunOpts { resume: a.common.resume, overwrite: a.common.overwrite, quiet };
    let mut report = search_then_retrain(&cfg, &a.out, o)?;
    if let Some(dir) = export {
        let written = s3pet::peft::export_run(&a.out, &dir, a.common.overwrite)?;
        report["export"] = serde_json::to_value(&written)?;
    }
    println!("{report}");
    Ok(())
}

pub fn random(a: RandomArgs) -> Result<()> {
    let s = SearchSettings {
        strategy: Strategy::Random,
        space: a.space.space.clone().unwrap_or_else(|| "mix".into()),
        budget: a.space.budget,
        budget_params: a.space.budget_params,
        order: 2,
        alpha_lr: 0.1,
        beta: 1.0,
        search_epochs: 1,
        search_batch_size: None,
    };
    println!("{}", random_structure_file(&a.model, &s, a.seed, &a.out)?);
    Ok(())
}
