//! Runs an experiment's cells: each one a child `s3pet` process writing its own run directory under
//! `cells/`; finished cells are one line each of `runs.jsonl` and are skipped when the plan runs again
//! (here or on another machine); a cell cut short resumes from its checkpoint.
use super::durations::{ends_in_time, Durations};
use super::plan::Cell;
use crate::error::{Error, Result};
use crate::guard::OUT_OF_MEMORY;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one finished cell adds to runs.jsonl: what it is, its metrics (with the task's metric names),
/// its parameter counts (`trainable_params` = deltas + head, as in report.json) and its costs.
pub fn record(cell: &Cell, report: &Value, wall: f64, peak_gpu_mib: Option<u64>, machine: &Value) -> Value {
    let retrain = if report.get("retrain").is_some() { &report["retrain"] } else { report };
    json!({
        "id": cell.id, "task": cell.task, "method": cell.method, "budget": cell.budget, "seed": cell.seed,
        "order": cell.order, "source_task": cell.source_task, "metrics": report["metrics"],
        "lr": retrain["lr"], "lr_sweep": cell.lr.rate.is_some(),
        "lr_selected_from": if cell.lr.from.is_empty() { Value::Null } else { json!(cell.lr.from) },
        "dev": report["dev"], "test": report["test"],
        "trainable_params": retrain["trainable_params"], "delta_params": retrain["delta_params"],
        "head_params": retrain["head_params"], "backbone_params": retrain["backbone_params"],
        "delta_fraction": retrain["delta_fraction"],
        "search_seconds": report["search"]["seconds"], "search_attempt_seconds": report["search"]["attempt_seconds"],
        "retrain_seconds": retrain["train_seconds"], "retrain_attempt_seconds": retrain["attempt_seconds"],
        "wall_seconds": wall,
        "peak_rss_bytes": retrain["peak_rss_bytes"], "search_peak_rss_bytes": report["search"]["peak_rss_bytes"],
        "peak_gpu_memory_mib": peak_gpu_mib, "peak_gpu_bytes": retrain["peak_gpu_bytes"],
        "search_peak_gpu_bytes": report["search"]["peak_gpu_bytes"], "structure": report["structure"],
        "machine": machine,
    })
}

/// The machine the cells ran on: host, CPUs, device and GPU name.
pub fn machine(device: &str) -> Value {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).ok();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).ok();
    let gpu = if device != "cpu" {
        Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim().to_string()))
            .filter(|g| !g.is_empty())
    } else {
        None
    };
    json!({"host": host, "cpus": cpus, "device": device, "gpu": gpu})
}

/// Peak GPU memory per process id, sampled from nvidia-smi once a second while cells run.
fn gpu_sampler(stop: Arc<Mutex<bool>>, peaks: Arc<Mutex<HashMap<u32, u64>>>) {
    std::thread::spawn(move || loop {
        if stop.lock().map(|s| *s).unwrap_or(true) {
            return;
        }
        let query = ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"];
        if let (Ok(o), Ok(mut p)) = (Command::new("nvidia-smi").args(query).output(), peaks.lock()) {
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
    Ok(read_records(runs)?.into_keys().collect())
}

/// The records of runs.jsonl by id (none when it does not exist yet).
fn read_records(runs: &Path) -> Result<HashMap<String, Value>> {
    let text = match std::fs::read_to_string(runs) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Error::io(runs, e)),
    };
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| Error::parse(runs, i + 1, e.to_string()))?;
        let id = v["id"].as_str().ok_or_else(|| Error::parse(runs, i + 1, "no `id`"))?.to_string();
        out.insert(id, v);
    }
    Ok(out)
}

/// Where and how cells run.
pub struct Schedule {
    pub exe: PathBuf,
    pub out: PathBuf,
    pub parallel: usize,
    pub device: String,
    /// Start no new cell after this instant (running ones finish).
    pub deadline: Option<Instant>,
    /// `--cells-end-by`: start a cell only when one of its kind is expected to end before this instant
    /// (super::durations).
    pub end_by: Option<Instant>,
    /// `--gpus`: each cell alone on one of these, by free memory (super::gpus).
    pub gpus: Option<Vec<usize>>,
}

/// A cell started this recently may not have reached its peak memory yet.
const RAMP: Duration = Duration::from_secs(90);
/// How often the free memory is read again while cells are held back.
const HOLD_RECHECK: Duration = Duration::from_secs(3);

/// A cell after its learning rate is chosen: to run, or already done (the chosen sweep cell's record).
enum Chosen {
    Run(Box<Cell>),
    Copied(String),
}

struct Running {
    cell: Cell,
    child: Child,
    started: Instant,
    gpu: Option<usize>,
    /// Started from a checkpoint of an earlier attempt.
    resumed: bool,
}

/// How often one cell is started again after running the GPU out of memory.
const OOM_RETRIES: usize = 2;

/// Whether one of the last lines of a cell's log is the error that begins with `what`.
fn log_ends_with_error(log: &Path, what: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| {
        t.lines().rev().take(5).any(|l| l.strip_prefix("error: ").is_some_and(|m| m.starts_with(what)))
    })
}

/// Whether a cell's log ends with s3pet's out-of-memory error (src/guard.rs).
fn ran_out_of_memory(log: &Path) -> bool {
    log_ends_with_error(log, OUT_OF_MEMORY)
}

/// The cells `cell` waits for that are not done: its transfer source, the sweep cells of its rate.
fn waits_for(cell: &Cell, done: &HashSet<String>) -> Vec<String> {
    cell.needs.iter().chain(&cell.lr.from).filter(|n| !done.contains(*n)).cloned().collect()
}

/// What a schedule did.
#[derive(Debug, Default)]
pub struct Ran {
    pub finished: usize,
    pub failed: Vec<String>,
    /// Stopped by an interrupt after writing their checkpoints: they resume when the plan runs again.
    pub cut: Vec<String>,
    pub not_started: usize,
    /// The cells not started, each with the cells it still waited for.
    pub waiting: Vec<(String, Vec<String>)>,
}

impl Schedule {
    fn cells_dir(&self) -> PathBuf {
        self.out.join("cells")
    }

    fn log(&self, id: &str) -> PathBuf {
        self.out.join("logs").join(format!("{id}.log"))
    }

    /// The finished records of runs.jsonl by id.
    fn records(&self) -> Result<HashMap<String, Value>> {
        read_records(&self.out.join("runs.jsonl"))
    }

    /// A transfer cell reads its source's structure.json from the directory of the source's run: when the
    /// source is seed 1 of a swept group, that is the chosen sweep cell's (the source ran nothing itself).
    fn with_source_run_dir(&self, mut cell: Cell, records: &HashMap<String, Value>) -> Cell {
        let Some(run_of) = cell.needs.as_ref().and_then(|n| records.get(n)).and_then(crate::results::copy_of)
        else {
            return cell;
        };
        let structure = self.cells_dir().join(run_of).join("structure.json").display().to_string();
        let path_at = cell.args.iter().position(|a| a == "--structure").map(|i| i + 1);
        if let Some(path) = path_at.and_then(|i| cell.args.get_mut(i)) {
            *path = structure;
        }
        cell
    }

    /// A swept group's cell takes the rate whose sweep cell has the best dev score: the choosing seed's
    /// cell is that sweep cell (its record is copied under the cell's id), the others run at that rate.
    fn choose_rate(&self, mut cell: Cell, records: &HashMap<String, Value>) -> Result<Chosen> {
        if cell.lr.from.is_empty() {
            return Ok(Chosen::Run(Box::new(cell)));
        }
        let (chosen, rate) = super::sweep::best(&cell.lr.from, records)?;
        if cell.lr.copy {
            let mut rec = chosen.clone();
            rec["lr_copy_of"] = rec["id"].clone();
            rec["id"] = json!(cell.id);
            rec["lr_sweep"] = json!(false);
            rec["lr_selected_from"] = json!(cell.lr.from);
            crate::artifact::append_line(&self.out.join("runs.jsonl"), &rec.to_string())?;
            eprintln!(
                "{} = {} (learning rate {rate:e} chosen on dev)",
                cell.id,
                rec["lr_copy_of"].as_str().unwrap_or("")
            );
            return Ok(Chosen::Copied(cell.id));
        }
        cell.args = super::sweep::with_rate(&cell.args, rate);
        Ok(Chosen::Run(Box::new(cell)))
    }

    /// On one GPU that the cells share (a CUDA device, no `--gpus`): whether its free memory holds one
    /// more cell as large as the largest so far (super::gpus::room_for_one_more). `held`: the last
    /// refusal of the hold now in force (said when the hold begins; the memory is read again at most
    /// every [`HOLD_RECHECK`]).
    fn shared_gpu_has_room(
        &self,
        running: &[Running],
        peaks: &Mutex<HashMap<u32, u64>>,
        held: &mut Option<Instant>,
    ) -> bool {
        if self.device == "cpu" || self.gpus.is_some() || running.is_empty() {
            return true;
        }
        if held.is_some_and(|t| t.elapsed() < HOLD_RECHECK) {
            return false;
        }
        let Some(free) = super::gpus::free_mib_of_visible() else { return true };
        let largest = peaks.lock().map(|p| p.values().copied().max().unwrap_or(0)).unwrap_or(0);
        let ramping = running.iter().filter(|r| r.started.elapsed() < RAMP).count();
        if super::gpus::room_for_one_more(free, running.len(), ramping, largest) {
            *held = None;
            return true;
        }
        if held.is_none() {
            eprintln!(
                "holding further cells: {free} MiB of GPU memory free, the largest cell so far took {largest} MiB \
                 ({} running, {ramping} still starting)",
                running.len()
            );
        }
        *held = Some(Instant::now());
        false
    }

    /// The durations of the cells finished so far (runs.jsonl), when `--cells-end-by` asks for them.
    fn durations(&self) -> Result<Durations> {
        if self.end_by.is_none() {
            return Ok(Durations::default());
        }
        Ok(Durations::from_records(self.records()?.values()))
    }

    /// Whether `cell` is expected to end before `--cells-end-by` (always without it; a cell whose
    /// record a sweep copies costs nothing).
    fn ends_in_time(&self, cell: &Cell, durations: &Durations) -> bool {
        let Some(end) = self.end_by else { return true };
        let left = end.saturating_duration_since(Instant::now()).as_secs_f64();
        (cell.lr.copy && !cell.lr.from.is_empty()) || ends_in_time(durations.expected(cell), Some(left))
    }

    /// The GPU the next cell starts on (`Some(None)`: no `--gpus`, any cell may start; `None`: every
    /// listed GPU is busy).
    fn next_gpu(&self, running: &[Running]) -> Result<Option<Option<usize>>> {
        let Some(gpus) = &self.gpus else { return Ok(Some(None)) };
        let busy: Vec<usize> = running.iter().filter_map(|r| r.gpu).collect();
        if busy.len() >= gpus.len() {
            return Ok(None);
        }
        Ok(super::gpus::pick(gpus, &busy, &super::gpus::free_mib()?).map(Some))
    }

    /// Starts `cell` as a child process (resuming it when its run directory was started before), alone
    /// on `gpu` when given (its only visible device).
    fn start(&self, cell: Cell, gpu: Option<usize>) -> Result<Running> {
        let dir = self.cells_dir().join(&cell.id);
        let mut args = cell.args.clone();
        args.extend(["--out".into(), dir.display().to_string()]);
        let resumed = dir.join("config.json").is_file();
        args.push(if resumed { "--resume" } else { "--overwrite" }.into());
        let log_path = self.log(&cell.id);
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(&args).stdout(Stdio::from(log)).stderr(Stdio::from(err));
        if let Some(g) = gpu {
            cmd.env("CUDA_VISIBLE_DEVICES", g.to_string());
            eprintln!("{} on GPU {g}", cell.id);
        }
        let child = cmd.spawn().map_err(|e| Error::Msg(format!("cannot start cell {}: {e}", cell.id)))?;
        Ok(Running { cell, child, started: Instant::now(), gpu, resumed })
    }

    /// Appends a finished cell's record to runs.jsonl; false when it failed.
    fn collect(
        &self,
        r: Running,
        ok: bool,
        peaks: &Mutex<HashMap<u32, u64>>,
        machine: &Value,
    ) -> Result<bool> {
        let wall = r.started.elapsed().as_secs_f64();
        let report = self.cells_dir().join(&r.cell.id).join("report.json");
        if !(ok && report.is_file()) {
            eprintln!("FAILED {} (see {})", r.cell.id, self.log(&r.cell.id).display());
            return Ok(false);
        }
        let text = std::fs::read_to_string(&report).map_err(|e| Error::io(&report, e))?;
        let rep: Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(&report, e.line(), e.to_string()))?;
        let peak = peaks.lock().ok().and_then(|p| p.get(&r.child.id()).copied());
        let mut line = record(&r.cell, &rep, wall, peak, machine);
        if let Some(g) = r.gpu {
            line["gpu"] = json!(g);
        }
        let line = line.to_string();
        crate::artifact::append_line(&self.out.join("runs.jsonl"), &line)?;
        eprintln!("{} ({wall:.0} s)", r.cell.id);
        Ok(true)
    }

    /// A cell that failed because the GPU ran out of memory goes back to the queue (at most
    /// [`OOM_RETRIES`] times; it resumes from its checkpoint) and fewer cells run at once from then on:
    /// the new limit, or `None` for any other failure.
    fn requeue_out_of_memory(
        &self,
        id: &str,
        still_running: usize,
        retries: &mut HashMap<String, usize>,
    ) -> Option<usize> {
        let tries = retries.entry(id.to_string()).or_insert(0);
        if *tries >= OOM_RETRIES || !ran_out_of_memory(&self.log(id)) {
            return None;
        }
        *tries += 1;
        let limit = still_running.max(1);
        eprintln!("RETRY {id}: {OUT_OF_MEMORY}; at most {limit} cells at once from now on");
        Some(limit)
    }

    /// Runs `todo` (cells whose `needs` are in `done` start first), `parallel` at a time.
    pub fn run(&self, mut todo: Vec<Cell>, done: &mut HashSet<String>) -> Result<Ran> {
        for d in [self.cells_dir(), self.out.join("logs")] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let machine = machine(&self.device);
        let (stop, peaks) = (Arc::new(Mutex::new(false)), Arc::new(Mutex::new(HashMap::new())));
        if self.device != "cpu" {
            gpu_sampler(stop.clone(), peaks.clone());
        }
        let (mut running, mut ran) = (Vec::<Running>::new(), Ran::default());
        let (mut limit, mut retries) = (self.parallel.max(1), HashMap::new());
        let mut held = None;
        let mut durations = self.durations()?;
        loop {
            let out_of_time = self.deadline.is_some_and(|d| Instant::now() >= d);
            while running.len() < limit
                && !out_of_time
                && !crate::checkpoint::interrupted()
                && self.shared_gpu_has_room(&running, &peaks, &mut held)
            {
                let ready = |c: &Cell| {
                    c.needs.as_ref().is_none_or(|n| done.contains(n))
                        && c.lr.from.iter().all(|n| done.contains(n))
                        && self.ends_in_time(c, &durations)
                };
                let (Some(pos), Some(gpu)) = (todo.iter().position(ready), self.next_gpu(&running)?) else {
                    break;
                };
                // what has finished so far: where a transfer's source ran, which sweep cell won
                let records = self.records()?;
                let cell = self.with_source_run_dir(todo.remove(pos), &records);
                match self.choose_rate(cell, &records)? {
                    Chosen::Run(cell) => running.push(self.start(*cell, gpu)?),
                    Chosen::Copied(id) => {
                        done.insert(id);
                        ran.finished += 1;
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            let mut i = 0;
            while i < running.len() {
                let Some(status) = running[i].child.try_wait().map_err(|e| Error::Msg(e.to_string()))? else {
                    i += 1;
                    continue;
                };
                let r = running.swap_remove(i);
                if !status.success() {
                    if let Some(l) = self.requeue_out_of_memory(&r.cell.id, running.len(), &mut retries) {
                        limit = l;
                        todo.insert(0, r.cell);
                        continue;
                    }
                    if crate::checkpoint::interrupted()
                        && log_ends_with_error(&self.log(&r.cell.id), "interrupted")
                    {
                        eprintln!(
                            "CUT {} (interrupted; it resumes from its checkpoint when the plan runs again)",
                            r.cell.id
                        );
                        ran.cut.push(r.cell.id);
                        continue;
                    }
                }
                let (id, cell, wall, resumed) =
                    (r.cell.id.clone(), r.cell.clone(), r.started.elapsed().as_secs_f64(), r.resumed);
                if self.collect(r, status.success(), &peaks, &machine)? {
                    if !resumed {
                        durations.note(&cell, wall);
                    }
                    done.insert(id);
                    ran.finished += 1;
                } else {
                    ran.failed.push(id);
                }
            }
        }
        if let Ok(mut s) = stop.lock() {
            *s = true;
        }
        ran.not_started = todo.len();
        ran.waiting = todo.iter().map(|c| (c.id.clone(), waits_for(c, done))).collect();
        Ok(ran)
    }
}
