//! `s3pet search`, `s3pet run` and `s3pet structure random`.
use super::common::{loop_opts, open_run, resolve_run, train_config, train_structure, Defaults, Loaded};
use crate::cli::{RandomArgs, RunArgs, SearchArgs, SearchOpts, SpaceArgs};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use s3pet::backbone::{ModelConfig, Placement};
use s3pet::config::SearchSettings;
use s3pet::config::TrainConfig;
use s3pet::delta::ModuleSpec;
use s3pet::model::{HeadInit, Model};
use s3pet::rundir::RunDir;
use s3pet::search::bilevel::SearchLoop;
use s3pet::search::{discretize, random_structure, search, SearchConfig, SearchOutcome, Supernet};
use s3pet::space::{budget_params, Space};
use s3pet::structure::Structure;
use s3pet::tokenize::Encoded;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// Candidates of a space on a model and the budget in parameters.
pub fn space_and_budget(a: &SpaceArgs, cfg: &ModelConfig) -> Result<(Vec<ModuleSpec>, i64)> {
    let candidates = Space::resolve(&a.space)?.candidates(cfg)?;
    let budget = budget_params(a.budget, a.budget_params, cfg.param_count(), &candidates)?;
    Ok((candidates, budget))
}

fn settings(
    strategy: &str,
    sa: &SpaceArgs,
    so: &SearchOpts,
    epochs: (Option<usize>, Option<usize>),
) -> SearchSettings {
    SearchSettings {
        strategy: strategy.into(),
        space: sa.space.clone(),
        budget: sa.budget,
        budget_params: sa.budget_params,
        order: so.order,
        alpha_lr: so.alpha_lr,
        beta: so.beta,
        search_epochs: epochs.0,
        retrain_epochs: epochs.1,
        search_batch_size: so.search_batch_size,
    }
}

fn space_args(s: &SearchSettings) -> SpaceArgs {
    SpaceArgs { space: s.space.clone(), budget: s.budget, budget_params: s.budget_params }
}

fn structure_of(
    source: &str,
    a: &SpaceArgs,
    cfg: &ModelConfig,
    cands: &[ModuleSpec],
    chosen: &[usize],
    budget: i64,
) -> Structure {
    let mut idx = chosen.to_vec();
    idx.sort_unstable(); // model order
    let modules: Vec<ModuleSpec> = idx.iter().map(|&i| cands[i].clone()).collect();
    Structure {
        budget_params: budget,
        total_params: modules.iter().filter_map(|m| m.params).sum(),
        backbone_params: cfg.param_count(),
        source: source.into(),
        space: Some(a.space.clone()),
        full: false,
        modules,
    }
}

/// Seeded halves of the training set: (D_w, D_alpha).
fn halves(train: &[Encoded], seed: u64) -> (Vec<Encoded>, Vec<Encoded>) {
    let mut idx: Vec<usize> = (0..train.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x00D1_5EC7));
    let half = train.len().div_ceil(2);
    let pick = |ids: &[usize]| ids.iter().map(|&i| train[i].clone()).collect::<Vec<_>>();
    (pick(&idx[..half]), pick(&idx[half..]))
}

fn write_candidates(path: &Path, cands: &[ModuleSpec], o: &SearchOutcome, chosen: &[usize]) -> Result<()> {
    let order = s3pet::search::discretize::order_by_p(&o.best_p);
    let mut text =
        String::from("rank\tsite\ttype\tparams\tchosen\tbest_alpha\tbest_p\tfinal_alpha\tfinal_p\n");
    for (r, &i) in order.iter().enumerate() {
        let c = &cands[i];
        text += &format!(
            "{}\t{}\t{}\t{}\t{}\t{:.6}\t{:.6}\t{:.6}\t{:.6}\n",
            r + 1,
            c.site,
            c.kind.name(),
            c.params.unwrap_or(0),
            chosen.contains(&i) as u8,
            o.best_alpha[i],
            o.best_p[i],
            o.final_alpha[i],
            o.final_p[i]
        );
    }
    Ok(s3pet::artifact::write_bytes(path, text.as_bytes())?)
}

fn search_config(cfg: &TrainConfig, o: &SearchSettings) -> SearchConfig {
    SearchConfig {
        length_buckets: cfg.length_buckets,
        order: o.order,
        w_lr: cfg.lr,
        alpha_lr: o.alpha_lr,
        clip_norm: cfg.clip_norm,
        beta: o.beta,
        epochs: cfg.epochs,
        max_steps: cfg.max_steps,
        batch_size: o.search_batch_size.unwrap_or(cfg.batch_size),
        eval_batch_size: cfg.eval_batch_size,
        eval_every: cfg.eval_every,
        seed: cfg.seed,
    }
}

/// Runs the search phase into `run`; returns the structure and a summary for the report.
fn do_search(
    cfg: &TrainConfig,
    l: &Loaded,
    so: &SearchSettings,
    run: &RunDir,
    lo: SearchLoop,
) -> Result<(Structure, Value)> {
    let sa = &space_args(so);
    let (cands, budget) = space_and_budget(sa, &l.md.cfg)?;
    let placements: Vec<Placement> =
        cands.iter().enumerate().map(|(i, c)| Placement { spec: c.clone(), gate: Some(i) }).collect();
    let head = HeadInit::for_task(&l.data.spec, &l.md)?;
    let model = Model::build(&l.md.cfg, &l.weights, &placements, false, head, cfg.seed)?;
    let candidate_params: i64 = cands.iter().filter_map(|c| c.params).sum();
    eprintln!(
        "search: {} candidates, {candidate_params} candidate parameters, budget {budget} ({:.6}% of the backbone), order {}",
        cands.len(),
        100.0 * budget as f64 / model.backbone_params() as f64,
        so.order
    );
    let (d_w, d_alpha) = halves(&l.data.train, cfg.seed);
    let mut net = Supernet::new(model, cands.clone(), budget, so.beta);
    let device = net.model.device;
    s3pet::progress::reset_peak_rss();
    s3pet::gpu_mem::reset_peak(device);
    let o =
        search(&mut net, &d_w, &d_alpha, &l.data.dev, &l.data.spec, &search_config(cfg, so), &run.dir, lo)?;
    let peak = s3pet::progress::peak_rss_bytes();
    let peak_gpu = s3pet::gpu_mem::peak(device).map(|p| p.0);
    let chosen = discretize(&o.best_p, &cands, budget);
    let structure = structure_of("s3pet", sa, &l.md.cfg, &cands, &chosen, budget);
    structure.save(&run.path("structure.json"))?;
    write_candidates(&run.path("candidates.tsv"), &cands, &o, &chosen)?;
    let p_spread = o.final_p.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        - o.final_p.iter().cloned().fold(f64::INFINITY, f64::min);
    let summary = json!({
        "order": so.order, "steps": o.steps, "best_step": o.best_step, "seconds": o.seconds,
        "peak_rss_bytes": peak, "peak_gpu_bytes": peak_gpu, "dev": o.best_dev, "candidates": cands.len(),
        "candidate_params": candidate_params, "budget_params": budget, "final_p_spread": p_spread,
        "d_w": d_w.len(), "d_alpha": d_alpha.len(),
    });
    Ok((structure, summary))
}

fn summary(s: &Structure) -> Value {
    let mut by_type = std::collections::BTreeMap::<&str, (usize, i64)>::new();
    for m in &s.modules {
        let e = by_type.entry(m.kind.name()).or_default();
        e.0 += 1;
        e.1 += m.params.unwrap_or(0);
    }
    json!({"modules": s.modules.len(), "total_params": s.total_params, "budget_params": s.budget_params,
           "by_type": by_type.into_iter().map(|(k, (n, p))| (k.to_string(), json!({"modules": n, "params": p}))).collect::<serde_json::Map<_, _>>()})
}

fn search_loop(c: &crate::cli::CommonArgs, cfg: &TrainConfig, quiet: bool) -> SearchLoop {
    SearchLoop { resume: c.resume, checkpoint_every: cfg.checkpoint_every, quiet }
}

pub fn run_search(a: SearchArgs, quiet: bool) -> Result<()> {
    let mut cfg = train_config(&a.common, &a.task, "s3pet", None, Defaults::search())?;
    cfg.search = Some(settings("s3pet", &a.space, &a.search, (None, None)));
    let (cfg, l) = resolve_run(&a.common, &a.out, cfg)?;
    let so = cfg.search.clone().context("the run's config.json has no search settings")?;
    space_and_budget(&space_args(&so), &l.md.cfg)?; // a bad space or budget fails before anything is written
    let run = open_run(&a.common, &a.out, &cfg)?;
    let (structure, s) = do_search(&cfg, &l, &so, &run, search_loop(&a.common, &cfg, quiet))?;
    let report = json!({"task": l.data.spec.name, "seed": cfg.seed, "space": so.space, "search": s, "structure": summary(&structure)});
    s3pet::artifact::write_json(&run.path("report.json"), &report)?;
    println!("{report}");
    Ok(())
}

pub fn run_all(a: RunArgs, quiet: bool) -> Result<()> {
    let method = match a.strategy.as_str() {
        "s3pet" => "s3pet",
        "random" => "random",
        s => bail!("unknown strategy `{s}` (s3pet, random)"),
    };
    let mut cfg = train_config(&a.common, &a.task, method, None, Defaults::search())?;
    cfg.search = Some(settings(method, &a.space, &a.search, (a.search_epochs, a.retrain_epochs)));
    let (mut cfg, l) = resolve_run(&a.common, &a.out, cfg)?;
    let so = cfg.search.clone().context("the run's config.json has no search settings")?;
    let sa = space_args(&so);
    space_and_budget(&sa, &l.md.cfg)?; // a bad space or budget fails before anything is written
    let run = open_run(&a.common, &a.out, &cfg)?;
    let started = Instant::now();
    let done = run.path("search.json");
    // a resumed run keeps a finished search (its structure is final) and continues one cut short
    let (structure, search_summary) = if a.common.resume && done.is_file() {
        let summary: Value = serde_json::from_str(&std::fs::read_to_string(&done)?)?;
        (Structure::load(&run.path("structure.json"), &l.md.cfg)?, summary)
    } else if so.strategy == "s3pet" {
        let mut scfg = cfg.clone();
        scfg.epochs = so.search_epochs.unwrap_or(cfg.epochs);
        do_search(&scfg, &l, &so, &run, search_loop(&a.common, &cfg, quiet))?
    } else {
        let (cands, budget) = space_and_budget(&sa, &l.md.cfg)?;
        let s = structure_of(
            "random",
            &sa,
            &l.md.cfg,
            &cands,
            &random_structure(&cands, budget, cfg.seed),
            budget,
        );
        s.save(&run.path("structure.json"))?;
        (s, json!({"strategy": "random", "seed": cfg.seed}))
    };
    s3pet::artifact::write_json(&done, &search_summary)?;
    let method = so.strategy.clone();
    cfg.epochs = so.retrain_epochs.unwrap_or(cfg.epochs);
    cfg.method = "structure".into();
    cfg.structure = Some(run.path("structure.json"));
    s3pet::progress::reset_peak_rss();
    let retrain = train_structure(&cfg, &l, &structure, &run, loop_opts(&a.common, quiet))?;
    let report = json!({
        "task": l.data.spec.name, "method": format!("{method}-{}", so.space), "strategy": method,
        "seed": cfg.seed, "space": so.space, "budget": so.budget,
        "backbone_params": retrain["backbone_params"], "delta_params": retrain["delta_params"],
        "head_params": retrain["head_params"], "structure": summary(&structure),
        "search": search_summary, "retrain": retrain.clone(),
        "dev": retrain["dev"], "test": retrain["test"], "total_seconds": started.elapsed().as_secs_f64(),
    });
    s3pet::artifact::write_json(&run.path("report.json"), &report)?;
    println!("{report}");
    Ok(())
}

pub fn run_random(a: RandomArgs) -> Result<()> {
    let cfg = ModelConfig::from_file(&s3pet::hub::resolve(&a.model)?.join("config.json"))?;
    let (cands, budget) = space_and_budget(&a.space, &cfg)?;
    let s = structure_of("random", &a.space, &cfg, &cands, &random_structure(&cands, budget, a.seed), budget);
    s.save(&a.out)?;
    println!("{}", json!({"out": a.out, "structure": summary(&s)}));
    Ok(())
}
