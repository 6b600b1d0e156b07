//! `s3pet experiment --plan plans/x.toml --out results/`: the plan's cells, each a child `s3pet`
//! process (the library's plan expander and scheduler, src/pipeline/plan.rs and schedule.rs).
use crate::cli::ExperimentArgs;
use anyhow::{bail, Context, Result};
use s3pet::pipeline::plan::{Cell, Plan};
use s3pet::pipeline::schedule::{finished, Schedule};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Every cell's command line must parse (a bad option fails before anything runs).
fn check_cells(a: &ExperimentArgs, cells: &[Cell]) -> Result<()> {
    for c in cells {
        let mut argv = vec!["s3pet".to_string()];
        argv.extend(c.args.iter().cloned());
        argv.extend(["--out".into(), a.out.join("cells").join(&c.id).display().to_string()]);
        if let Err(e) = crate::cli::parse(&argv) {
            bail!("{}: cell {} does not parse: {}", a.plan.display(), c.id, e.render());
        }
    }
    Ok(())
}

fn dry_run(cells: &[Cell], done: &HashSet<String>) {
    let todo: Vec<&Cell> = cells.iter().filter(|c| !done.contains(&c.id) && c.skip.is_none()).collect();
    let skipped = cells.iter().filter(|c| !done.contains(&c.id) && c.skip.is_some()).count();
    let copies: HashSet<&str> = cells.iter().filter(|c| c.lr.copy).map(|c| c.id.as_str()).collect();
    for c in &todo {
        let note = match c.needs.as_deref().filter(|n| copies.contains(n)) {
            Some(n) => format!("\t(--structure: that of the sweep cell chosen for {n})"),
            None => String::new(),
        };
        println!("{}\ts3pet {}{note}", c.id, c.args.join(" "));
    }
    println!(
        "{} cells, {} finished, {skipped} to skip (budget outside the space), {} to run",
        cells.len(),
        cells.len() - todo.len() - skipped,
        todo.len()
    );
}

/// Cells whose budget lies outside the space get a `skipped` line in runs.jsonl.
fn record_skips(a: &ExperimentArgs, cells: &[Cell], done: &mut HashSet<String>) -> Result<()> {
    let skips: Vec<&Cell> = cells.iter().filter(|c| c.skip.is_some() && !done.contains(&c.id)).collect();
    for c in skips {
        let line = json!({"id": c.id, "task": c.task, "method": c.method, "budget": c.budget, "seed": c.seed,
                          "order": c.order, "source_task": c.source_task, "skipped": c.skip});
        s3pet::artifact::append_line(&a.out.join("runs.jsonl"), &line.to_string())?;
        done.insert(c.id.clone());
    }
    Ok(())
}

pub fn run(a: ExperimentArgs) -> Result<()> {
    if let Some(g) = &a.gpus {
        s3pet::pipeline::gpus::check(g)?;
    }
    let plan = Plan::load(&a.plan)?;
    if a.gpus.is_some() && plan.device() == "cpu" {
        bail!(
            "config key `--gpus`: the plan's cells run on the CPU (device = \"cpu\" in {})",
            a.plan.display()
        );
    }
    let cells = plan.cells(&a.out.join("cells"))?;
    check_cells(&a, &cells)?;
    let mut done = finished(&a.out.join("runs.jsonl"))?;
    if a.dry_run {
        dry_run(&cells, &done);
        return Ok(());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    let plan_text = std::fs::read(&a.plan).with_context(|| format!("{}: cannot read", a.plan.display()))?;
    s3pet::artifact::write_bytes(&a.out.join("plan.toml"), &plan_text)?;
    record_skips(&a, &cells, &mut done)?;
    let todo: Vec<Cell> = cells.iter().filter(|c| !done.contains(&c.id)).cloned().collect();
    let schedule = Schedule {
        exe: std::env::current_exe().context("cannot find the s3pet executable")?,
        out: a.out.clone(),
        parallel: a.parallel.or(a.gpus.as_ref().map(|g| g.len())).unwrap_or(plan.parallel).max(1),
        device: plan.device(),
        deadline: a.max_minutes.map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0)),
        end_by: a.cells_end_by.map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0)),
        gpus: a.gpus.clone(),
    };
    eprintln!(
        "experiment: {} cells, {} finished, {} to run, {} at a time",
        cells.len(),
        done.len(),
        todo.len(),
        schedule.parallel
    );
    let ran = schedule.run(todo, &mut done)?;
    eprintln!(
        "experiment: {} cells finished now, {} failed, {} cut, {} not started",
        ran.finished,
        ran.failed.len(),
        ran.cut.len(),
        ran.not_started
    );
    if !ran.failed.is_empty() {
        bail!(
            "{} cells failed: {} (logs in {})",
            ran.failed.len(),
            ran.failed.join(", "),
            a.out.join("logs").display()
        );
    }
    let timed = a.max_minutes.is_some() || a.cells_end_by.is_some();
    if ran.not_started > 0 && !timed && !s3pet::checkpoint::interrupted() {
        let waiting: Vec<String> =
            ran.waiting.iter().map(|(id, on)| format!("{id} (waits for {})", on.join(", "))).collect();
        bail!("{} cells could not start: {}", waiting.len(), waiting.join("; "));
    }
    if (ran.not_started > 0 || !ran.cut.is_empty()) && s3pet::checkpoint::interrupted() {
        bail!(
            "interrupted with {} cells cut (each wrote its checkpoint) and {} not started; run the same \
             command again to continue",
            ran.cut.len(),
            ran.not_started
        );
    }
    Ok(())
}
