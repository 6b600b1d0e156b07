//! One layered run configuration for train, retrain, search, run and experiment cells: built-in
//! defaults, then the task spec's schedule, then `--config FILE`, then the command line (the later
//! wins), each value remembering its layer. Options that a command would not use are refused here.
use super::run::{RunConfig, SearchSettings};
use super::types::{Method, Strategy};
use crate::data::TaskSpec;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The layer a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Default,
    Task,
    File,
    Env,
    Cli,
    /// Recorded by the run itself (what its data was read from).
    Recorded,
}

/// The command a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A manual method, or `--structure FILE`.
    Train,
    /// `--structure FILE` from scratch.
    Retrain,
    /// The search alone (writes structure.json).
    Search,
    /// Search or random structure, then retrain.
    Run,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Train => "train",
            Command::Retrain => "retrain",
            Command::Search => "search",
            Command::Run => "run",
        }
    }
}

/// Values given by the user, by config key (`lr`, `search.order`), each with its layer (file, env or
/// command line). Keys are the long option names with `_` for `-`; search settings under `search.`.
pub type Given = BTreeMap<String, (Value, Source)>;

/// The search keys of `run` that a random structure does not use (plans leave them out of such cells).
pub const SEARCH_ONLY: [&str; 5] = ["order", "alpha_lr", "beta", "search_batch_size", "search_epochs"];

/// The built-in defaults: the paper's w optimiser (AdamW lr 3e-4, clip 2.0) for every delta method,
/// transformers' usual lr 2e-5 and clip 1.0 for full fine-tuning.
fn defaults(method: Method) -> Map<String, Value> {
    let (lr, clip) = if method.is_full() { (2e-5, 1.0) } else { (3e-4, 2.0) };
    let v = json!({
        "model": "models/all-MiniLM-L6-v2", "data_dir": null, "data": null, "seed": 42, "epochs": 3, "max_steps": null,
        "batch_size": 32, "eval_batch_size": 64, "lr": lr, "weight_decay": 0.0, "warmup_ratio": 0.0,
        "clip_norm": clip, "eval_every": null, "max_length": 128, "length_buckets": 0, "pad_to_multiple": null,
        "max_train_examples": null, "max_eval_examples": null, "structure": null, "device": "auto",
        "threads": null, "checkpoint_every": null, "skip_nonfinite": false, "backbone_dtype": "fp32",
        "lora_r": null, "lora_alpha": null, "lora_dropout": null, "target_modules": null, "rank_pattern": null,
        "precision": "fp32",
    });
    v.as_object().cloned().unwrap_or_default()
}

fn search_defaults() -> Map<String, Value> {
    let v = json!({"strategy": "s3pet", "space": "mix", "budget": null, "budget_params": null, "order": 2,
                   "alpha_lr": 0.1, "beta": 1.0, "search_batch_size": null});
    v.as_object().cloned().unwrap_or_default()
}

/// The task spec's schedule as a layer; `search` takes its search epochs as `epochs`.
fn task_layer(spec: &TaskSpec, command: Command) -> Map<String, Value> {
    let mut m = Map::new();
    let epochs = if command == Command::Search { spec.search_epochs.or(spec.epochs) } else { spec.epochs };
    let put = |m: &mut Map<String, Value>, k: &str, v: Option<usize>| {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    };
    put(&mut m, "epochs", epochs);
    put(&mut m, "batch_size", spec.batch_size);
    put(&mut m, "max_length", spec.max_len);
    put(&mut m, "eval_every", spec.eval_every);
    m
}

/// Layers `defaults`, `task` and the given values (those under `prefix`) into one map, recording sources.
fn merge(
    base: Map<String, Value>,
    task: &Map<String, Value>,
    given: &Given,
    prefix: &str,
    sources: &mut BTreeMap<String, Source>,
) -> Map<String, Value> {
    let mut out = base;
    for (k, v) in task {
        out.insert(k.clone(), v.clone());
        sources.insert(format!("{prefix}{k}"), Source::Task);
    }
    for (key, (v, src)) in given {
        let k = if prefix.is_empty() {
            (!key.contains('.')).then_some(key.as_str())
        } else {
            key.strip_prefix(prefix)
        };
        if let Some(k) = k {
            out.insert(k.to_string(), v.clone());
            sources.insert(key.clone(), *src);
        }
    }
    out
}

/// Resolves a command's configuration: defaults < task schedule < `--config FILE` < command line.
/// `method` is the manual method (train) or `Structure`; `given` holds `task` and every value the user
/// gave. Refuses options the command would not use, then validates every value.
pub fn resolve(command: Command, method: Method, spec: &TaskSpec, given: &Given) -> Result<RunConfig> {
    refuse_unused(command, given)?;
    let mut sources = BTreeMap::new();
    let mut top = merge(defaults(method), &task_layer(spec, command), given, "", &mut sources);
    top.insert("method".into(), json!(method));
    if matches!(command, Command::Search | Command::Run) {
        let mut search = merge(search_defaults(), &Map::new(), given, "search.", &mut sources);
        let (epochs, from) = search_epochs(spec, given, &top, &sources);
        search.entry("search_epochs").or_insert(json!(epochs));
        sources.entry("search.search_epochs".into()).or_insert(from);
        top.insert("search".into(), Value::Object(search));
    }
    let mut cfg: RunConfig = serde_json::from_value(Value::Object(top))
        .map_err(|e| Error::config(command.name(), format!("cannot resolve the run configuration: {e}")))?;
    cfg.sources = sources;
    cfg.validate()?;
    Ok(cfg)
}

/// `run`'s search epochs when `--search-epochs` is not given: the user's `--epochs`, else the task's
/// search schedule, else the resolved epochs.
fn search_epochs(
    spec: &TaskSpec,
    given: &Given,
    top: &Map<String, Value>,
    sources: &BTreeMap<String, Source>,
) -> (usize, Source) {
    let resolved = top.get("epochs").and_then(Value::as_u64).unwrap_or(1) as usize;
    match (given.get("epochs"), spec.search_epochs.or(spec.epochs)) {
        (Some((_, src)), _) => (resolved, *src),
        (None, Some(e)) => (e, Source::Task),
        (None, None) => (resolved, sources.get("epochs").copied().unwrap_or(Source::Default)),
    }
}

/// An option the command would not use is an error naming it and the command.
fn refuse_unused(command: Command, given: &Given) -> Result<()> {
    let has = |k: &str| given.contains_key(k);
    let refuse = |opt: &str, why: &str| {
        Err(Error::config(
            format!("--{}", opt.replace('_', "-")),
            format!("not used by `s3pet {}`: {why}", command.name()),
        ))
    };
    if command == Command::Retrain && has("method") {
        return refuse("method", "retrain trains the --structure it is given");
    }
    if command == Command::Train && has("method") && has("structure") {
        return refuse("method", "with --structure the structure is trained, not a manual method");
    }
    let lora_shape = ["lora_r", "lora_alpha", "target_modules", "rank_pattern"];
    let manual = given.get("method").and_then(|(v, _)| v.as_str()).unwrap_or("lora");
    if let Some(k) = lora_shape.iter().find(|k| has(k)) {
        if has("structure") || command == Command::Retrain {
            return refuse(k, "a structure fixes its LoRA modules (only --lora-dropout applies to it)");
        }
        if manual != "lora" {
            return refuse(k, &format!("--method {manual} has no LoRA modules"));
        }
    }
    if has("lora_dropout") && !(has("structure") || command == Command::Retrain) && manual != "lora" {
        return refuse("lora_dropout", &format!("--method {manual} has no LoRA modules"));
    }
    if command == Command::Run {
        let strategy = given.get("search.strategy").and_then(|(v, _)| v.as_str()).unwrap_or("s3pet");
        if Strategy::parse(strategy)? == Strategy::Random {
            if let Some(k) = SEARCH_ONLY.iter().find(|k| has(&format!("search.{k}"))) {
                return refuse(k, "--strategy random draws its structure without a search");
            }
        }
    }
    Ok(())
}

/// `--resume` continues a run with its saved config.json: where it runs (`device`, `threads`) may
/// change; any other option given must agree with the saved value (an experiment's cells are resumed
/// with their own command line), else it is refused, naming both values.
pub fn refuse_on_resume(given: &Given, saved: &RunConfig) -> Result<()> {
    const MAY_CHANGE: [&str; 2] = ["device", "threads"];
    let saved_v = serde_json::to_value(saved).map_err(|e| Error::Msg(e.to_string()))?;
    for (key, (v, _)) in given.iter().filter(|(k, _)| !MAY_CHANGE.contains(&k.as_str())) {
        let old = match key.strip_prefix("search.") {
            Some(k) => &saved_v["search"][k],
            None => &saved_v[key.as_str()],
        };
        let same = match (v.as_f64(), old.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => v == old || (v.as_str().is_some() && v.as_str() == old.as_str()),
        };
        if !same {
            return Err(Error::config(
                format!("--{}", key.trim_start_matches("search.").replace('_', "-")),
                format!(
                    "{v} differs from the saved {old}: a resumed run keeps the configuration in its config.json \
                     (only --device and --threads may change with --resume)"
                ),
            ));
        }
    }
    Ok(())
}

impl SearchSettings {
    /// The search budget as the `budget` / `budget_params` pair of the space functions.
    pub fn budget_pair(&self) -> (Option<f64>, Option<i64>) {
        (self.budget, self.budget_params)
    }
}
