//! `s3pet train` (a manual method or a structure) and `s3pet retrain` (a structure from scratch).
use super::given::ArgSources;
use crate::cli::TrainArgs;
use anyhow::Result;
use s3pet::config::{resolve, Command, Method, RunConfig};
use s3pet::data::TaskSpec;
use s3pet::pipeline::{resume_config, train_run, RunOpts};
use serde_json::json;

/// The run configuration of a train / retrain command line (the saved one with --resume).
fn config(a: &TrainArgs, src: &ArgSources, command: Command) -> Result<RunConfig> {
    let extra = [
        ("method", "method", a.method.as_ref().map(|m| json!(m))),
        ("structure", "structure", a.structure.as_ref().map(|p| json!(p))),
    ];
    let mut given = src.given(&a.task, &a.common, None, &extra);
    src.collect(&a.lora, "", &mut given);
    if a.common.resume {
        return Ok(resume_config(&a.out, &given)?);
    }
    let method = match (&a.structure, command) {
        (Some(_), _) | (None, Command::Retrain) => Method::Structure,
        (None, _) => Method::parse_manual(a.method.as_deref().unwrap_or("lora"))?,
    };
    Ok(resolve(command, method, &TaskSpec::resolve(&a.task)?, &given)?)
}

fn opts(a: &TrainArgs, quiet: bool) -> RunOpts {
    RunOpts { resume: a.common.resume, overwrite: a.common.overwrite, quiet }
}

pub fn run(a: TrainArgs, src: &ArgSources, quiet: bool) -> Result<()> {
    let cfg = config(&a, src, Command::Train)?;
    println!("{}", train_run(&cfg, &a.out, opts(&a, quiet))?);
    Ok(())
}

pub fn retrain(a: TrainArgs, src: &ArgSources, quiet: bool) -> Result<()> {
    if a.structure.is_none() && !a.common.resume {
        anyhow::bail!("retrain needs --structure FILE");
    }
    let cfg = config(&a, src, Command::Retrain)?;
    println!("{}", train_run(&cfg, &a.out, opts(&a, quiet))?);
    Ok(())
}
