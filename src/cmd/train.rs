//! `s3pet train`: a manual method or a structure on a task.
use super::common::{loop_opts, open_run, resolve_run, train_config, train_structure, Defaults};
use crate::cli::TrainArgs;
use anyhow::Result;
use s3pet::structure::{method_modules, Structure};

pub fn run(a: TrainArgs, quiet: bool) -> Result<()> {
    let method = if a.structure.is_some() { "structure" } else { a.method.as_str() };
    let cfg = train_config(&a.common, &a.task, method, a.structure.clone(), Defaults::train(method))?;
    let (cfg, l) = resolve_run(&a.common, &a.out, cfg)?;
    let backbone = l.md.cfg.param_count();
    let structure = if a.common.resume {
        Structure::load(&a.out.join("structure.json"), &l.md.cfg)?
    } else {
        match &a.structure {
            Some(p) => Structure::load(p, &l.md.cfg)?,
            None => Structure::manual(method, method_modules(method, &l.md.cfg)?, &l.md.cfg, backbone)?,
        }
    };
    let run = open_run(&a.common, &a.out, &cfg)?;
    structure.save(&run.path("structure.json"))?;
    let report = train_structure(&cfg, &l, &structure, &run, loop_opts(&a.common, quiet))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `s3pet retrain`: a structure from scratch (fresh deltas, gates at 1) on the full training set.
pub fn retrain(a: TrainArgs, quiet: bool) -> Result<()> {
    let Some(path) = a.structure.clone() else {
        anyhow::bail!("retrain needs --structure FILE");
    };
    let cfg = train_config(&a.common, &a.task, "structure", Some(path.clone()), Defaults::search())?;
    let (cfg, l) = resolve_run(&a.common, &a.out, cfg)?;
    let from = if a.common.resume { a.out.join("structure.json") } else { path };
    let structure = Structure::load(&from, &l.md.cfg)?;
    let run = open_run(&a.common, &a.out, &cfg)?;
    structure.save(&run.path("structure.json"))?;
    let report = train_structure(&cfg, &l, &structure, &run, loop_opts(&a.common, quiet))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
