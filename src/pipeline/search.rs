//! The search phase (the D_w / D_alpha halves, the supernet, discretisation, candidates.tsv), the random
//! baseline, and `run`: search (or draw) a structure, then retrain it from scratch and test.
use super::load::{load, open_run, Loaded, RunOpts};
use super::train::{train_structure, trainable_line};
use crate::backbone::{ModelConfig, Placement};
use crate::config::{Method, RunConfig, SearchSettings, Strategy};
use crate::delta::ModuleSpec;
use crate::error::{Error, Result};
use crate::model::{HeadInit, Model};
use crate::rundir::RunDir;
use crate::search::bilevel::{SearchData, SearchLoop};
use crate::search::{discretize, random_structure, search, SearchConfig, SearchOutcome, Supernet};
use crate::space::{budget_params, Space};
use crate::structure::Structure;
use crate::tokenize::Encoded;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// Candidates of a space on a model and the budget in parameters.
pub fn space_and_budget(s: &SearchSettings, cfg: &ModelConfig) -> Result<(Vec<ModuleSpec>, i64)> {
    let candidates = Space::resolve(&s.space)?.candidates(cfg)?;
    let budget = budget_params(s.budget, s.budget_params, cfg.param_count(), &candidates)?;
    Ok((candidates, budget))
}

/// The structure of the `chosen` candidates (in model order) at `budget`.
pub fn structure_of(
    source: &str,
    space: &str,
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
        space: Some(space.into()),
        full: false,
        modules,
    }
}

/// Seeded halves of the training set: (D_w, D_alpha).
pub fn halves(train: &[Encoded], seed: u64) -> (Vec<Encoded>, Vec<Encoded>) {
    let mut idx: Vec<usize> = (0..train.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x00D1_5EC7));
    let half = train.len().div_ceil(2);
    let pick = |ids: &[usize]| ids.iter().map(|&i| train[i].clone()).collect::<Vec<_>>();
    (pick(&idx[..half]), pick(&idx[half..]))
}

/// candidates.tsv: every candidate ranked by its best-dev p, with alpha and p at the best and last step.
fn write_candidates(path: &Path, cands: &[ModuleSpec], o: &SearchOutcome, chosen: &[usize]) -> Result<()> {
    let order = crate::search::discretize::order_by_p(&o.best_p);
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
    crate::artifact::write_bytes(path, text.as_bytes())
}

/// The bi-level optimiser's settings: the run's w optimiser (lr, weight decay, warm-up, clip) and the
/// search's own (order, alpha lr, beta, batch size); `epochs` search epochs.
pub fn search_config(cfg: &RunConfig, s: &SearchSettings, epochs: usize) -> SearchConfig {
    SearchConfig {
        length_buckets: cfg.length_buckets,
        pad_to_multiple: cfg.pad_to_multiple,
        max_length: cfg.max_length,
        order: s.order,
        w_lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        warmup_ratio: cfg.warmup_ratio,
        skip_nonfinite: cfg.skip_nonfinite,
        alpha_lr: s.alpha_lr,
        clip_norm: cfg.clip_norm,
        beta: s.beta,
        epochs,
        max_steps: cfg.max_steps,
        batch_size: s.search_batch_size.unwrap_or(cfg.batch_size),
        eval_batch_size: cfg.eval_batch_size,
        eval_every: cfg.eval_every,
        seed: cfg.seed,
    }
}

fn settings(cfg: &RunConfig) -> Result<&SearchSettings> {
    cfg.search.as_ref().ok_or_else(|| Error::config("search", "the run's config.json has no search settings"))
}

/// Runs the search phase into `run` for `epochs` epochs; returns the structure and a summary for the
/// report.
fn search_phase(
    cfg: &RunConfig,
    l: &Loaded,
    epochs: usize,
    run: &RunDir,
    o: RunOpts,
) -> Result<(Structure, Value)> {
    let s = settings(cfg)?;
    let (cands, budget) = space_and_budget(s, &l.md.cfg)?;
    let placements: Vec<Placement> =
        cands.iter().enumerate().map(|(i, c)| Placement { spec: c.clone(), gate: Some(i) }).collect();
    let head = HeadInit::for_task(&l.data.spec, &l.md)?;
    let model = Model::build(&l.md.cfg, &l.weights, &placements, false, head, cfg.seed)?;
    let candidate_params: i64 = cands.iter().filter_map(|c| c.params).sum();
    eprintln!("{} (every candidate of the space, gated)", trainable_line(&model));
    eprintln!(
        "search: {} candidates, {candidate_params} candidate parameters, budget {budget} ({:.6}% of the backbone), order {}",
        cands.len(),
        100.0 * budget as f64 / model.backbone_params() as f64,
        s.order
    );
    let (d_w, d_alpha) = halves(&l.data.train, cfg.seed);
    let mut net = Supernet::new(model, cands.clone(), budget, s.beta);
    let device = net.model.device;
    crate::progress::reset_peak_rss();
    crate::gpu_mem::reset_peak(device);
    let lo = SearchLoop { resume: o.resume, checkpoint_every: cfg.checkpoint_every, quiet: o.quiet };
    let sc = search_config(cfg, s, epochs);
    let data = SearchData { d_w: &d_w, d_alpha: &d_alpha, dev: &l.data.dev, spec: &l.data.spec };
    let out = search(&mut net, &data, &sc, &run.dir, lo)?;
    let chosen = discretize(&out.best_p, &cands, budget);
    let structure = structure_of(Strategy::S3pet.name(), &s.space, &l.md.cfg, &cands, &chosen, budget);
    structure.save(&run.path("structure.json"))?;
    write_candidates(&run.path("candidates.tsv"), &cands, &out, &chosen)?;
    let p_spread = out.final_p.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        - out.final_p.iter().cloned().fold(f64::INFINITY, f64::min);
    let summary = json!({
        "order": s.order, "steps": out.steps, "best_step": out.best_step, "seconds": out.seconds,
        "attempt_seconds": out.attempt_seconds,
        "peak_rss_bytes": crate::progress::peak_rss_bytes(), "peak_gpu_bytes": crate::gpu_mem::peak(device).map(|p| p.0),
        "dev": out.best_dev, "candidates": cands.len(), "candidate_params": candidate_params, "budget_params": budget,
        "final_p_spread": p_spread, "d_w": d_w.len(), "d_alpha": d_alpha.len(), "dev_examples": l.data.dev.len(),
        "cuda_graphs": out.graphs,
    });
    Ok((structure, summary))
}

/// Module counts and parameters of a structure by delta type.
pub fn summary(s: &Structure) -> Value {
    let mut by_type = std::collections::BTreeMap::<&str, (usize, i64)>::new();
    for m in &s.modules {
        let e = by_type.entry(m.kind.name()).or_default();
        e.0 += 1;
        e.1 += m.params.unwrap_or(0);
    }
    let by_type: serde_json::Map<String, Value> =
        by_type.into_iter().map(|(k, (n, p))| (k.to_string(), json!({"modules": n, "params": p}))).collect();
    json!({"modules": s.modules.len(), "total_params": s.total_params, "budget_params": s.budget_params, "by_type": by_type})
}

/// `s3pet search`: the search alone into `out` (structure.json, candidates.tsv, alphas.jsonl,
/// report.json). Returns report.json.
pub fn search_only(cfg: &RunConfig, out: &Path, o: RunOpts) -> Result<Value> {
    let l = load(cfg)?;
    let s = settings(cfg)?;
    space_and_budget(s, &l.md.cfg)?; // a bad space or budget fails before anything is written
    let run = open_run(out, cfg, &l, o)?;
    let (structure, summary_) = search_phase(cfg, &l, cfg.epochs, &run, o)?;
    let report = json!({"task": l.data.spec.name, "seed": cfg.seed, "space": s.space, "search": summary_,
                        "structure": summary(&structure)});
    crate::artifact::write_json(&run.path("report.json"), &report)?;
    Ok(report)
}

/// The structure of `run`: kept from a finished search phase on resume, else searched or drawn.
fn structure_phase(cfg: &RunConfig, l: &Loaded, run: &RunDir, o: RunOpts) -> Result<(Structure, Value)> {
    let s = settings(cfg)?;
    let done = run.path("search.json");
    if o.resume && done.is_file() {
        let text = std::fs::read_to_string(&done).map_err(|e| Error::io(&done, e))?;
        let summary: Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(&done, e.line(), e.to_string()))?;
        return Ok((Structure::load(&run.path("structure.json"), &l.md.cfg)?, summary));
    }
    let (structure, summary) = match s.strategy {
        Strategy::S3pet => search_phase(cfg, l, s.search_epochs, run, o)?,
        Strategy::Random => {
            let (cands, budget) = space_and_budget(s, &l.md.cfg)?;
            let chosen = random_structure(&cands, budget, cfg.seed);
            let st = structure_of(Strategy::Random.name(), &s.space, &l.md.cfg, &cands, &chosen, budget);
            st.save(&run.path("structure.json"))?;
            (st, json!({"strategy": "random", "seed": cfg.seed}))
        }
    };
    crate::artifact::write_json(&done, &summary)?;
    Ok((structure, summary))
}

/// `s3pet run`: a searched (or random) structure, retrained from scratch on the full training set and
/// tested, into `out`. Returns report.json.
pub fn search_then_retrain(cfg: &RunConfig, out: &Path, o: RunOpts) -> Result<Value> {
    let l = load(cfg)?;
    let s = settings(cfg)?.clone();
    space_and_budget(&s, &l.md.cfg)?; // a bad space or budget fails before anything is written
    let run = open_run(out, cfg, &l, o)?;
    let started = Instant::now();
    let (structure, search_summary) = structure_phase(cfg, &l, &run, o)?;
    let retrain_cfg =
        RunConfig { method: Method::Structure, structure: Some(run.path("structure.json")), ..cfg.clone() };
    crate::progress::reset_peak_rss();
    let retrain = train_structure(&retrain_cfg, &l, &structure, &run, o)?;
    let report = json!({
        "task": l.data.spec.name, "metrics": l.data.spec.metrics,
        "method": format!("{}-{}", s.strategy.name(), s.space), "strategy": s.strategy,
        "seed": cfg.seed, "space": s.space, "budget": s.budget,
        "backbone_params": retrain["backbone_params"], "delta_params": retrain["delta_params"],
        "head_params": retrain["head_params"], "trainable_params": retrain["trainable_params"],
        "structure": summary(&structure), "search": search_summary, "retrain": retrain.clone(),
        "dev": retrain["dev"], "test": retrain["test"], "total_seconds": started.elapsed().as_secs_f64(),
    });
    crate::artifact::write_json(&run.path("report.json"), &report)?;
    Ok(report)
}

/// Refuses `run --export peft` up front when some structure of the run's space could not be exported
/// (a low-rank or Houlsby adapter, or a family PEFT export does not cover).
pub fn check_peft_space(cfg: &RunConfig) -> Result<()> {
    let s = settings(cfg)?;
    let mcfg = ModelConfig::from_file(&crate::hub::resolve(&cfg.model)?.join("config.json"))?;
    let cands = Space::resolve(&s.space)?.candidates(&mcfg)?;
    match crate::peft::unrepresentable(&cands, false, &mcfg)? {
        None => Ok(()),
        Some(u) => Err(Error::config(
            "--export",
            format!("space `{}` can yield structures PEFT cannot hold ({u}); use --space mix-peft", s.space),
        )),
    }
}

/// `s3pet structure random`: a random structure of `s`'s space and budget on the model in `model`,
/// written to `out`.
pub fn random_structure_file(model: &Path, s: &SearchSettings, seed: u64, out: &Path) -> Result<Value> {
    let cfg = ModelConfig::from_file(&crate::hub::resolve(model)?.join("config.json"))?;
    let (cands, budget) = space_and_budget(s, &cfg)?;
    let chosen = random_structure(&cands, budget, seed);
    let st = structure_of(Strategy::Random.name(), &s.space, &cfg, &cands, &chosen, budget);
    st.save(out)?;
    Ok(json!({"out": out, "structure": summary(&st)}))
}
