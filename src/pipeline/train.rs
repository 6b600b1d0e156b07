//! Training a structure (a manual method's modules, a searched, random or given structure) into a run
//! directory: build the model, train, select on dev, test, write report.json.
use super::load::{load, open_run, Loaded, RunOpts};
use crate::backbone::Placement;
use crate::config::{Method, RunConfig};
use crate::error::{Error, Result};
use crate::model::{HeadInit, Model};
use crate::rundir::RunDir;
use crate::structure::{method_modules, Structure};
use crate::train::{train, LoopOpts};
use serde_json::{json, Value};
use std::path::Path;

/// `train` and `retrain`: the structure of `cfg` (its manual method's modules, or `cfg.structure`;
/// with `resume` the run's own structure.json) trained into `out`. Returns report.json.
pub fn train_run(cfg: &RunConfig, out: &Path, o: RunOpts) -> Result<Value> {
    crate::guard::test_out_of_memory_once();
    let l = load(cfg)?;
    let structure = if o.resume {
        Structure::load(&out.join("structure.json"), &l.md.cfg)?
    } else {
        structure_of_config(cfg, &l)?
    };
    let run = open_run(out, cfg, &l, o)?;
    structure.save(&run.path("structure.json"))?;
    train_structure(cfg, &l, &structure, &run, o)
}

/// The structure a config names: `cfg.structure`, or its manual method's modules.
fn structure_of_config(cfg: &RunConfig, l: &Loaded) -> Result<Structure> {
    let knobs = cfg.lora_knobs();
    match (&cfg.structure, cfg.method) {
        (Some(p), _) => {
            let mut s = Structure::load(p, &l.md.cfg)?;
            knobs.apply_dropout(&mut s.modules);
            Ok(s)
        }
        (None, Method::Structure) => Err(Error::config("--structure", "this command needs --structure FILE")),
        (None, m) => {
            let backbone = l.md.cfg.param_count();
            let mut modules = method_modules(m.name(), &l.md.cfg)?;
            if m == Method::Lora {
                modules = knobs.modules(&l.md.cfg, modules)?;
            }
            Structure::manual(m.name(), modules, &l.md.cfg, backbone)
        }
    }
}

/// PEFT's trainable-parameter line (`print_trainable_parameters`): PEFT counts, besides the backbone
/// and the deltas, the task head twice (the frozen original and its trained copy in modules_to_save).
/// Full fine-tuning (no PEFT) counts the model once: the backbone and the head.
pub fn trainable_line(model: &Model) -> String {
    let trainable = model.trainable_params();
    let all = match model.is_full() {
        true => model.backbone_params() + model.head_params,
        false => model.backbone_params() + model.head_params + trainable,
    };
    format!(
        "trainable params: {trainable} || all params: {all} || trainable%: {:.4} (deltas {}, head {})",
        100.0 * trainable as f64 / all as f64,
        model.delta_params,
        model.head_params
    )
}

/// Builds the model for `structure` (gates fixed at 1), trains it into `run`, writes report.json and
/// returns it.
pub fn train_structure(
    cfg: &RunConfig,
    l: &Loaded,
    structure: &Structure,
    run: &RunDir,
    o: RunOpts,
) -> Result<Value> {
    let placements: Vec<Placement> =
        structure.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
    let head = HeadInit::for_task(&l.data.spec, &l.md)?;
    let model = Model::build(&l.md.cfg, &l.weights, &placements, structure.full, head, cfg.seed)?;
    crate::gpu_mem::reset_peak(model.device);
    eprintln!("{}", trainable_line(&model));
    tracing::info!(config = %serde_json::to_string(cfg).unwrap_or_default(), "resolved config");
    let out = train(&model, &l.data, cfg, &run.dir, LoopOpts { resume: o.resume, quiet: o.quiet })?;
    let backbone = model.backbone_params();
    let report = json!({
        "task": l.data.spec.name,
        "metrics": l.data.spec.metrics,
        "method": cfg.method,
        "seed": cfg.seed,
        "lr": cfg.lr,
        "backbone_params": backbone,
        "delta_params": model.delta_params,
        "head_params": model.head_params,
        "trainable_params": model.trainable_params(),
        "delta_fraction": model.delta_params as f64 / backbone as f64,
        "train_examples": l.data.train.len(),
        "eval_examples": {"dev": l.data.dev.len(), "test": l.data.test.len()},
        "steps": out.steps,
        "best_step": out.best_step,
        "train_seconds": out.seconds,
        "attempt_seconds": out.attempt_seconds,
        "examples_per_second": out.examples_per_s,
        "train_tokens": out.tokens,
        "train_padded_tokens": out.padded_tokens,
        "cuda_graphs": out.graphs,
        "peak_rss_bytes": crate::progress::peak_rss_bytes(),
        "peak_gpu_bytes": crate::gpu_mem::peak(model.device).map(|p| p.0),
        "device": crate::config::DeviceSpec::of(model.device).name(),
        "dev": out.dev,
        "test": out.test,
    });
    crate::artifact::write_json(&run.path("report.json"), &report)?;
    Ok(report)
}
