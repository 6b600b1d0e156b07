//! `s3pet experiment --plan plans/x.toml --out results/`: a grid of tasks x methods x budgets x seeds,
//! each cell one child `s3pet` process writing its own run directory under `results/cells/`; finished
//! cells are one line each of `results/runs.jsonl` and are skipped when the plan runs again (here or on
//! another machine); a cell cut short resumes from its checkpoint.
use crate::cli::{Cli, ExperimentArgs};
use anyhow::{bail, Context, Result};
use clap::Parser;
use s3pet::backbone::ModelConfig;
use s3pet::results::slug;
use s3pet::space::{budget_params, Space};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MANUAL: [&str; 6] = ["full", "lora", "adapter", "bitfit", "lnfit", "lra"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub seeds: Vec<u64>,
    /// Cells run at once (child processes).
    #[serde(default = "one")]
    pub parallel: usize,
    /// Options (long names of the subcommands) given to every cell.
    #[serde(default)]
    pub options: toml::Table,
    /// Options per task (e.g. its schedule and batch size).
    #[serde(default)]
    pub task_options: BTreeMap<String, toml::Table>,
    /// Options per method (e.g. the learning rate of full fine-tuning).
    #[serde(default)]
    pub method_options: BTreeMap<String, toml::Table>,
    pub grid: Vec<Grid>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub tasks: Vec<String>,
    /// Manual methods (full, lora, adapter, bitfit, lnfit, lra), `s3pet-<space>`, `random-<space>`
    /// or `transfer-<space>` (the structure searched on each of `sources`, retrained on the task).
    pub methods: Vec<String>,
    /// Budgets (fractions of the backbone) of the searched, random and transfer methods.
    #[serde(default)]
    pub budgets: Vec<f64>,
    /// Search orders of the s3pet methods (default [2]).
    #[serde(default)]
    pub orders: Vec<u8>,
    /// Source tasks of the transfer methods.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// One cell of the plan: what it is, and the command that makes it.
#[derive(Debug, Clone)]
pub struct Cell {
    pub id: String,
    pub task: String,
    pub method: String,
    pub budget: Option<f64>,
    pub seed: u64,
    pub order: Option<u8>,
    pub source_task: Option<String>,
    /// The s3pet cell whose structure this one retrains (transfer).
    pub needs: Option<String>,
    /// Why the cell is not run (budget outside the space), if so.
    pub skip: Option<String>,
    /// Arguments after `s3pet` (the `--out` is added when it runs).
    pub args: Vec<String>,
}

fn fmt_budget(b: f64) -> String {
    format!("{b:e}")
}

fn cell_id(
    task: &str,
    method: &str,
    budget: Option<f64>,
    order: Option<u8>,
    seed: u64,
    src: Option<&str>,
) -> String {
    let mut id = format!("{}.{method}", slug(task));
    if let Some(b) = budget {
        id += &format!(".b{}", fmt_budget(b));
    }
    if let Some(o) = order {
        id += &format!(".o{o}");
    }
    if let Some(s) = src {
        id += &format!(".from-{}", slug(s));
    }
    id + &format!(".s{seed}")
}

fn push_options(args: &mut Vec<String>, t: &toml::Table, skip: &[&str]) -> Result<()> {
    for (k, v) in t {
        let long = k.replace('_', "-");
        if skip.contains(&long.as_str()) {
            continue;
        }
        match v {
            toml::Value::Boolean(true) => args.push(format!("--{long}")),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => args.extend([format!("--{long}"), s.clone()]),
            toml::Value::Integer(i) => args.extend([format!("--{long}"), i.to_string()]),
            toml::Value::Float(f) => args.extend([format!("--{long}"), format!("{f:e}")]),
            other => bail!("option `{k}` must be a string, number or boolean, not {}", other.type_str()),
        }
    }
    Ok(())
}

/// Options that only `run` knows (left out of train / retrain cells).
const RUN_ONLY: [&str; 3] = ["search-epochs", "retrain-epochs", "search-batch-size"];

impl Plan {
    pub fn load(path: &Path) -> Result<Plan> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let plan: Plan = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))?;
        if plan.seeds.is_empty() || plan.grid.is_empty() {
            bail!("{}: a plan needs `seeds` and at least one [[grid]]", path.display());
        }
        Ok(plan)
    }

    fn model_dir(&self) -> PathBuf {
        match self.options.get("model").and_then(|v| v.as_str()) {
            Some(m) => PathBuf::from(m),
            None => std::env::var_os("S3PET_MODEL")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("models/all-MiniLM-L6-v2")),
        }
    }

    /// Every cell, sources of transfers included (once each), in plan order; each cell's command line
    /// is checked by the CLI parser now, so a bad option fails before anything runs.
    pub fn cells(&self, cells_dir: &Path) -> Result<Vec<Cell>> {
        let cfg = ModelConfig::from_file(&s3pet::hub::resolve(&self.model_dir())?.join("config.json"))?;
        let backbone = cfg.param_count();
        let mut out: Vec<Cell> = Vec::new();
        let mut seen = HashSet::new();
        let mut spaces: HashMap<String, Vec<s3pet::delta::ModuleSpec>> = HashMap::new();
        for g in &self.grid {
            for task in &g.tasks {
                for method in &g.methods {
                    for &seed in &self.seeds {
                        for cell in
                            self.expand(g, task, method, seed, &cfg, backbone, &mut spaces, cells_dir)?
                        {
                            if seen.insert(cell.id.clone()) {
                                out.push(cell);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn expand(
        &self,
        g: &Grid,
        task: &str,
        method: &str,
        seed: u64,
        cfg: &ModelConfig,
        backbone: i64,
        spaces: &mut HashMap<String, Vec<s3pet::delta::ModuleSpec>>,
        cells_dir: &Path,
    ) -> Result<Vec<Cell>> {
        let base = |sub: &str| -> Result<Vec<String>> {
            let mut a =
                vec!["-q".to_string(), sub.to_string(), "--task".into(), task.into(), "--seed".into()];
            a.push(seed.to_string());
            let skip: &[&str] = if sub == "run" { &[] } else { &RUN_ONLY };
            // plan-wide options, then the task's, then the method's: the later wins
            let mut merged = self.options.clone();
            for t in [self.task_options.get(task), self.method_options.get(method)].into_iter().flatten() {
                merged.extend(t.clone());
            }
            push_options(&mut a, &merged, skip)?;
            Ok(a)
        };
        if MANUAL.contains(&method) {
            let mut args = base("train")?;
            args.extend(["--method".into(), method.into()]);
            let id = cell_id(task, method, None, None, seed, None);
            return Ok(vec![Cell {
                id,
                task: task.into(),
                method: method.into(),
                budget: None,
                seed,
                order: None,
                source_task: None,
                needs: None,
                skip: None,
                args,
            }]);
        }
        let Some((kind, space)) = method.split_once('-') else {
            bail!("unknown method `{method}` (full, lora, adapter, bitfit, lnfit, lra, s3pet-<space>, random-<space>, transfer-<space>)");
        };
        if !["s3pet", "random", "transfer"].contains(&kind) {
            bail!("unknown method `{method}`");
        }
        if g.budgets.is_empty() {
            bail!("method `{method}` needs `budgets` in its [[grid]]");
        }
        if !spaces.contains_key(space) {
            spaces.insert(space.to_string(), Space::resolve(space)?.candidates(cfg)?);
        }
        let cands = &spaces[space].clone();
        let orders: Vec<Option<u8>> = match kind {
            "random" => vec![None],
            _ if g.orders.is_empty() => vec![Some(2)],
            _ => g.orders.iter().map(|&o| Some(o)).collect(),
        };
        let mut out = Vec::new();
        for &b in &g.budgets {
            let skip = budget_params(Some(b), None, backbone, cands).err().map(|e| e.to_string());
            for &order in &orders {
                let search_cell = || -> Result<Cell> {
                    let strategy = if kind == "random" { "random" } else { "s3pet" };
                    let m = format!("{strategy}-{space}");
                    let mut args = base("run")?;
                    args.extend(["--strategy".into(), strategy.into(), "--space".into(), space.into()]);
                    args.extend(["--budget".into(), fmt_budget(b)]);
                    if let Some(o) = order {
                        args.extend(["--order".into(), o.to_string()]);
                    }
                    Ok(Cell {
                        id: cell_id(task, &m, Some(b), order, seed, None),
                        task: task.into(),
                        method: m,
                        budget: Some(b),
                        seed,
                        order,
                        source_task: None,
                        needs: None,
                        skip: skip.clone(),
                        args,
                    })
                };
                if kind != "transfer" {
                    out.push(search_cell()?);
                    continue;
                }
                if g.sources.is_empty() {
                    bail!("method `{method}` needs `sources` in its [[grid]]");
                }
                for src in g.sources.iter().filter(|s| s.as_str() != task) {
                    // the source's search cell (with the source task's own options)
                    let mut source = self.expand(
                        &Grid {
                            tasks: vec![src.clone()],
                            methods: vec![format!("s3pet-{space}")],
                            budgets: vec![b],
                            orders: order.into_iter().collect(),
                            sources: vec![],
                        },
                        src,
                        &format!("s3pet-{space}"),
                        seed,
                        cfg,
                        backbone,
                        spaces,
                        cells_dir,
                    )?;
                    let source = source.remove(0);
                    let mut args = base("retrain")?;
                    let st = cells_dir.join(&source.id).join("structure.json");
                    args.extend(["--structure".into(), st.display().to_string()]);
                    out.push(Cell {
                        id: cell_id(task, method, Some(b), order, seed, Some(src)),
                        task: task.into(),
                        method: method.into(),
                        budget: Some(b),
                        seed,
                        order,
                        source_task: Some(src.clone()),
                        needs: Some(source.id.clone()),
                        skip: skip.clone(),
                        args,
                    });
                    out.push(source);
                }
            }
        }
        Ok(out)
    }
}

/// What one finished cell adds to runs.jsonl.
fn record(cell: &Cell, report: &Value, wall: f64, peak_gpu_mib: Option<u64>, machine: &Value) -> Value {
    let retrain = if report.get("retrain").is_some() { &report["retrain"] } else { report };
    let search_s = report["search"]["seconds"].as_f64();
    json!({
        "id": cell.id, "task": cell.task, "method": cell.method, "budget": cell.budget, "seed": cell.seed,
        "order": cell.order, "source_task": cell.source_task,
        "dev": report["dev"], "test": report["test"],
        "trainable_params": retrain["delta_params"], "head_params": retrain["head_params"],
        "backbone_params": retrain["backbone_params"], "delta_fraction": retrain["delta_fraction"],
        "search_seconds": search_s, "retrain_seconds": retrain["train_seconds"], "wall_seconds": wall,
        "peak_rss_bytes": retrain["peak_rss_bytes"], "search_peak_rss_bytes": report["search"]["peak_rss_bytes"],
        "peak_gpu_memory_mib": peak_gpu_mib, "peak_gpu_bytes": retrain["peak_gpu_bytes"],
        "search_peak_gpu_bytes": report["search"]["peak_gpu_bytes"], "structure": report["structure"],
        "machine": machine,
    })
}

fn machine(device: &str) -> Value {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let gpu = if device.starts_with("cuda") {
        Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
    } else {
        None
    };
    json!({"host": host, "cpus": cpus, "device": device, "gpu": gpu})
}

/// Peak GPU memory per process id, sampled from nvidia-smi once a second while cells run.
fn gpu_sampler(stop: Arc<Mutex<bool>>, peaks: Arc<Mutex<HashMap<u32, u64>>>) {
    std::thread::spawn(move || loop {
        if *stop.lock().unwrap() {
            return;
        }
        if let Ok(o) = Command::new("nvidia-smi")
            .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
            .output()
        {
            let mut p = peaks.lock().unwrap();
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let mut it = line.split(',').map(str::trim);
                if let (Some(Ok(pid)), Some(Ok(mib))) = (it.next().map(str::parse), it.next().map(str::parse))
                {
                    let e = p.entry(pid).or_insert(0);
                    *e = (*e).max(mib);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1000));
    });
}

/// The ids already in runs.jsonl.
pub fn finished(runs: &Path) -> Result<HashSet<String>> {
    let text = match std::fs::read_to_string(runs) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", runs.display())),
    };
    let mut done = HashSet::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", runs.display(), i + 1))?;
        let id = v["id"].as_str().with_context(|| format!("{}:{}: no `id`", runs.display(), i + 1))?;
        done.insert(id.to_string());
    }
    Ok(done)
}

struct Running {
    cell: Cell,
    child: Child,
    started: Instant,
}

pub fn run(a: ExperimentArgs) -> Result<()> {
    let plan = Plan::load(&a.plan)?;
    let cells_dir = a.out.join("cells");
    let logs = a.out.join("logs");
    let cells = plan.cells(&cells_dir)?;
    for c in &cells {
        let mut argv = vec!["s3pet".to_string()];
        argv.extend(c.args.iter().cloned());
        argv.extend(["--out".into(), cells_dir.join(&c.id).display().to_string()]);
        if let Err(e) = Cli::try_parse_from(&argv) {
            bail!("{}: cell {} does not parse: {}", a.plan.display(), c.id, e.render());
        }
    }
    let runs = a.out.join("runs.jsonl");
    let mut done = finished(&runs)?;
    if a.dry_run {
        let todo: Vec<&Cell> = cells.iter().filter(|c| !done.contains(&c.id) && c.skip.is_none()).collect();
        let skipped = cells.iter().filter(|c| !done.contains(&c.id) && c.skip.is_some()).count();
        for c in &todo {
            println!("{}\ts3pet {}", c.id, c.args.join(" "));
        }
        println!(
            "{} cells, {} finished, {skipped} to skip (budget outside the space), {} to run",
            cells.len(),
            cells.len() - todo.len() - skipped,
            todo.len()
        );
        return Ok(());
    }
    std::fs::create_dir_all(&cells_dir).with_context(|| format!("{}: cannot create", cells_dir.display()))?;
    std::fs::create_dir_all(&logs).with_context(|| format!("{}: cannot create", logs.display()))?;
    let plan_text = std::fs::read(&a.plan).with_context(|| format!("{}: cannot read", a.plan.display()))?;
    s3pet::artifact::write_bytes(&a.out.join("plan.toml"), &plan_text)?;
    let to_skip: Vec<&Cell> = cells.iter().filter(|c| c.skip.is_some() && !done.contains(&c.id)).collect();
    for c in to_skip {
        let line = json!({"id": c.id, "task": c.task, "method": c.method, "budget": c.budget, "seed": c.seed,
                          "order": c.order, "source_task": c.source_task, "skipped": c.skip});
        s3pet::artifact::append_line(&runs, &line.to_string())?;
        done.insert(c.id.clone());
    }
    let mut todo: Vec<Cell> = cells.iter().filter(|c| !done.contains(&c.id)).cloned().collect();
    let parallel = a.parallel.unwrap_or(plan.parallel).max(1);
    let device = plan.options.get("device").and_then(|v| v.as_str()).unwrap_or("cpu").to_string();
    let machine = machine(&device);
    let (stop, peaks) = (Arc::new(Mutex::new(false)), Arc::new(Mutex::new(HashMap::new())));
    if device.starts_with("cuda") {
        gpu_sampler(stop.clone(), peaks.clone());
    }
    let exe = std::env::current_exe().context("cannot find the s3pet executable")?;
    eprintln!(
        "experiment: {} cells, {} finished, {} to run, {parallel} at a time",
        cells.len(),
        done.len(),
        todo.len()
    );
    let (mut running, mut failed): (Vec<Running>, Vec<String>) = (Vec::new(), Vec::new());
    let total = todo.len();
    let mut finished_now = 0usize;
    let deadline = a.max_minutes.map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    loop {
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        // start what is ready
        while running.len() < parallel && !out_of_time && !s3pet::checkpoint::interrupted() {
            let Some(pos) = todo.iter().position(|c| c.needs.as_ref().is_none_or(|n| done.contains(n)))
            else {
                break;
            };
            let cell = todo.remove(pos);
            let dir = cells_dir.join(&cell.id);
            let mut args = cell.args.clone();
            args.extend(["--out".into(), dir.display().to_string()]);
            if dir.join("config.json").is_file() {
                args.push("--resume".into()); // cut short earlier: continue from its checkpoint
            } else {
                args.push("--overwrite".into());
            }
            let log = std::fs::File::create(logs.join(format!("{}.log", cell.id)))?;
            let child = Command::new(&exe)
                .args(&args)
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .with_context(|| format!("cannot start cell {}", cell.id))?;
            running.push(Running { cell, child, started: Instant::now() });
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].child.try_wait()? else {
                i += 1;
                continue;
            };
            let r = running.swap_remove(i);
            let pid = r.child.id();
            let wall = r.started.elapsed().as_secs_f64();
            let report = cells_dir.join(&r.cell.id).join("report.json");
            if status.success() && report.is_file() {
                let rep: Value = serde_json::from_str(&std::fs::read_to_string(&report)?)
                    .with_context(|| format!("{}: not JSON", report.display()))?;
                let peak = peaks.lock().unwrap().get(&pid).copied();
                s3pet::artifact::append_line(
                    &runs,
                    &record(&r.cell, &rep, wall, peak, &machine).to_string(),
                )?;
                done.insert(r.cell.id.clone());
                finished_now += 1;
                eprintln!("[{finished_now}/{total}] {} ({wall:.0} s)", r.cell.id);
            } else {
                eprintln!("FAILED {} (see {})", r.cell.id, logs.join(format!("{}.log", r.cell.id)).display());
                failed.push(r.cell.id.clone());
            }
        }
    }
    *stop.lock().unwrap() = true;
    let left = todo.len();
    eprintln!("experiment: {finished_now} cells finished now, {} failed, {left} not started", failed.len());
    if !failed.is_empty() {
        bail!("{} cells failed: {} (logs in {})", failed.len(), failed.join(", "), logs.display());
    }
    if left > 0 && s3pet::checkpoint::interrupted() {
        bail!("interrupted with {left} cells not started; run the same command again to continue");
    }
    Ok(())
}
