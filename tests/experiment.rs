//! `s3pet experiment` on the tiny model: every cell once in runs.jsonl, skipped budgets recorded, a
//! second run (or one after a kill) finishes what is missing and repeats nothing; `s3pet report` and
//! `s3pet plot` draw from what it wrote.
mod common;
use common::{task_dir, tiny_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn s3pet(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3pet"));
    c.args(args).env("S3PET_MODEL", tiny_dir());
    c
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A plan over the tiny task of a fresh task directory: `seeds`, shared `options` lines, `extra` tables,
/// and one grid of `methods` at budget 0.01. Returns the directory (kept alive), the plan and its results.
fn plan_on_task_dir(
    seeds: &str,
    options: &str,
    extra: &str,
    methods: &str,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = task_dir();
    let t = d.path().join("task.toml").display().to_string();
    let plan = d.path().join("plan.toml");
    let text = format!(
        "{seeds}\nparallel = 2\n[options]\ndata_dir = \"{}\"\nbatch_size = 8\nthreads = 1\n{options}\n{extra}\n\
         [[grid]]\ntasks = [\"{t}\"]\nmethods = [{methods}]\nbudgets = [0.01]\n",
        d.path().display()
    );
    std::fs::write(&plan, text).unwrap();
    let out = d.path().join("results");
    (d, plan, out)
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The synthetic task twice (`task.toml`, and `other.toml` named "other"): the dir and both paths.
fn two_tasks() -> (tempfile::TempDir, String, String) {
    let d = task_dir();
    let t1 = d.path().join("task.toml");
    let t2 = d.path().join("other.toml");
    let spec = std::fs::read_to_string(&t1).unwrap().replace("name = \"same\"", "name = \"other\"");
    std::fs::write(&t2, spec).unwrap();
    let (t1, t2) = (t1.display().to_string(), t2.display().to_string());
    (d, t1, t2)
}

#[test]
fn experiment_runs_resumes_and_reports() {
    let (d, t1, t2) = two_tasks();
    let plan = d.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "seeds = [1, 2]\nparallel = 2\n[options]\ndata_dir = \"{data}\"\nmax_steps = 3\nbatch_size = 8\n\
             threads = 1\n[method_options.full]\nlr = 1e-4\n\
             [[grid]]\ntasks = [\"{t1}\", \"{t2}\"]\nmethods = [\"full\", \"bitfit\"]\n\
             [[grid]]\ntasks = [\"{t1}\"]\nmethods = [\"s3pet-mix\", \"random-mix\"]\nbudgets = [0.003, 0.01, 0.02, 0.5]\n\
             [[grid]]\ntasks = [\"{t1}\"]\nmethods = [\"s3pet-mix\"]\nbudgets = [0.01]\norders = [1]\n\
             [[grid]]\ntasks = [\"{t2}\"]\nmethods = [\"transfer-mix\"]\nbudgets = [0.01]\nsources = [\"{t1}\"]\n",
            data = d.path().display()
        ),
    )
    .unwrap();
    let out = d.path().join("results");
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    // (2 tasks x 2 manual + 4 budgets x 2 searched + 1 first order + 1 transfer) x 2 seeds = 28 cells
    let dry = ok(s3pet(&["experiment", "--plan", p, "--out", o, "--dry-run"]).output().unwrap());
    assert!(dry.contains("28 cells, 0 finished, 4 to skip (budget outside the space), 24 to run"), "{dry}");
    // kill the first attempt part-way, then finish
    let mut child = s3pet(&["experiment", "--plan", p, "--out", o]).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = lines(&out.join("runs.jsonl")).len();
    assert!(partial < 28, "the kill came too late to test resumption ({partial} lines)");
    ok(s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap());
    let runs = lines(&out.join("runs.jsonl"));
    assert_eq!(runs.len(), 28);
    let mut ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 28, "every cell exactly once");
    let skipped: Vec<&Value> = runs.iter().filter(|r| r["skipped"].is_string()).collect();
    assert_eq!(skipped.len(), 4, "budget 0.5 is above the space, for both methods and seeds");
    for r in runs.iter().filter(|r| !r["skipped"].is_string()) {
        for k in ["task", "method", "seed", "test", "trainable_params", "retrain_seconds", "machine"] {
            assert!(!r[k].is_null(), "{k} missing: {r}");
        }
        assert!(r.get("budget").is_some() && r.get("order").is_some() && r.get("source_task").is_some());
    }
    let transfer = runs.iter().find(|r| r["method"] == "transfer-mix").unwrap();
    assert_eq!(transfer["source_task"], Value::String(t1.clone()));
    assert_eq!(transfer["budget"], 0.01);
    let full = runs.iter().find(|r| r["method"] == "full").unwrap();
    assert!(full["budget"].is_null());
    // nothing left: a third run changes nothing
    let again = ok(s3pet(&["experiment", "--plan", p, "--out", o, "--dry-run"]).output().unwrap());
    assert!(
        again.contains("28 cells, 28 finished, 0 to skip (budget outside the space), 0 to run"),
        "{again}"
    );
    ok(s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap());
    assert_eq!(lines(&out.join("runs.jsonl")).len(), 28);

    // the report needs neither the task files (their metrics are in runs.jsonl) nor a system font, and
    // runs from anywhere
    let hidden = d.path().join("task.toml.away");
    std::fs::rename(&t1, &hidden).unwrap();
    ok(s3pet(&["report", o]).env_remove("S3PET_FONT").current_dir("/").output().unwrap());
    std::fs::rename(&hidden, &t1).unwrap();
    let md = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    assert!(md.contains("| task (accuracy) |") && md.contains("| other (accuracy) |"), "{md}");
    assert!(md.contains("| method | seeds | accuracy | f1 |"), "a user task's own metrics: {md}");
    for want in [
        "## Main table",
        "Fine-tuning",
        "S3PET-M @ 1.000e-2",
        "## Budget sweep",
        "skipped:",
        "## Transfer",
        "## First vs second order",
    ] {
        assert!(md.contains(want), "RESULTS.md lacks `{want}`:\n{md}");
    }
    for f in ["budget-task", "structure-task", "transfer-1e-2"] {
        for ext in ["png", "svg"] {
            let path = out.join("plots").join(format!("{f}.{ext}"));
            assert!(std::fs::metadata(&path).map(|m| m.len() > 1000).unwrap_or(false), "{}", path.display());
        }
    }
    // plots of single runs
    let cell = out.join("cells/task.s3pet-mix.b1e-2.o2.s1");
    let files = ok(s3pet(&["plot", "structure", cell.to_str().unwrap()]).output().unwrap());
    assert!(files.contains("structure.png") && cell.join("structure.svg").is_file(), "{files}");
    ok(s3pet(&["plot", "curves", cell.to_str().unwrap()]).output().unwrap());
    assert!(cell.join("curves-loss.png").is_file() && cell.join("curves-metrics.svg").is_file());
    let manual = out.join("cells/task.bitfit.s1");
    ok(s3pet(&["plot", "structure", manual.to_str().unwrap()]).output().unwrap());
    // a bad option in the plan fails before anything runs, naming the cell
    std::fs::write(
        &plan,
        std::fs::read_to_string(&plan).unwrap().replace("lr = 1e-4", "learning_rate = 1e-4"),
    )
    .unwrap();
    let bad = s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("full") && err.contains("learning-rate"), "{err}");
}

/// `[lr_sweep]`: each group's seed-1 cell runs at every rate, the best dev rate is chosen, seed 1's cell
/// is that sweep cell (copied, not run again) and seed 2 runs at it; the report shows the sweep.
#[test]
fn learning_rate_sweep_chooses_on_one_seed() {
    let (_d, plan, out) = plan_on_task_dir(
        "seeds = [1, 2]",
        "max_steps = 3",
        "[lr_sweep]\nseed = 1\ngrid = [1e-3, 2e-2]\nfull = [1e-4]",
        "\"lora\", \"s3pet-mix\"",
    );
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    let dry = ok(s3pet(&["experiment", "--plan", p, "--out", o, "--dry-run"]).output().unwrap());
    assert!(dry.contains("8 cells, 0 finished, 0 to skip"), "2 methods x (2 sweep + 2 seeds): {dry}");
    ok(s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap());
    let runs = lines(&out.join("runs.jsonl"));
    assert_eq!(runs.len(), 8);
    for m in ["lora", "s3pet-mix"] {
        let of = |pred: &dyn Fn(&Value) -> bool| {
            runs.iter().filter(|r| r["method"] == m && pred(r)).cloned().collect::<Vec<_>>()
        };
        let sweep = of(&|r| r["lr_sweep"] == true);
        assert_eq!(sweep.len(), 2, "{m}");
        let best = sweep.iter().max_by(|a, b| {
            let s = |r: &Value| r["dev"]["accuracy"].as_f64().unwrap();
            s(a).partial_cmp(&s(b)).unwrap()
        });
        let chosen = best.unwrap()["lr"].as_f64().unwrap();
        let s1 = of(&|r| r["lr_sweep"] == false && r["seed"] == 1);
        assert_eq!(s1.len(), 1);
        assert_eq!(s1[0]["lr_copy_of"], best.unwrap()["id"], "seed 1's cell is the chosen sweep cell");
        let s2 = of(&|r| r["lr_sweep"] == false && r["seed"] == 2);
        assert_eq!((s2.len(), s2[0]["lr"].as_f64()), (1, Some(chosen)), "seed 2 runs at the chosen rate");
    }
    ok(s3pet(&["report", o]).output().unwrap());
    let md = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    assert!(
        md.contains("## Learning rates (chosen on one seed's dev split)")
            && md.contains("1e-3: ")
            && !md.contains("not yet (sweep running)"),
        "{md}"
    );
    // the structure heatmap averages both seeds: seed 1's run is the chosen sweep cell's directory
    assert!(md.contains("Mean over 2 seeds. Highest p:"), "{md}");
    // part-way, with only the sweep cells finished: the report says so instead of empty tables
    let sweeps: String = runs.iter().filter(|r| r["lr_sweep"] == true).map(|r| format!("{r}\n")).collect();
    std::fs::write(out.join("runs.jsonl"), sweeps).unwrap();
    ok(s3pet(&["report", o]).output().unwrap());
    let md = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    assert!(md.contains("No method has finished cells on every one of these tasks yet"), "{md}");
    assert!(md.contains("Only learning-rate sweep cells have finished here"), "{md}");
    assert!(md.contains("not yet (sweep running)"), "no rate is named chosen before the runner chose: {md}");
}

/// A transfer cell whose source is seed 1 of a swept group retrains on the structure of the chosen sweep
/// cell (seed 1's own directory is never made: its record is a copy).
#[test]
fn transfer_from_a_swept_source_reads_the_chosen_sweep_cell() {
    let (d, t1, t2) = two_tasks();
    let plan = d.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "seeds = [1]\nparallel = 2\n[options]\ndata_dir = \"{data}\"\nmax_steps = 3\nbatch_size = 8\n\
             threads = 1\n[lr_sweep]\nseed = 1\ngrid = [1e-3, 2e-2]\nfull = [1e-4]\n\
             [[grid]]\ntasks = [\"{t1}\", \"{t2}\"]\nmethods = [\"s3pet-mix\"]\nbudgets = [0.01]\n\
             [[grid]]\ntasks = [\"{t2}\"]\nmethods = [\"transfer-mix\"]\nbudgets = [0.01]\nsources = [\"{t1}\"]\n",
            data = d.path().display()
        ),
    )
    .unwrap();
    let out = d.path().join("results");
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    let ran = s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap();
    let said = String::from_utf8_lossy(&ran.stderr).to_string();
    assert!(ran.status.success(), "{said}");
    let runs = lines(&out.join("runs.jsonl"));
    let source = runs
        .iter()
        .find(|r| r["id"].as_str().unwrap().starts_with("task.s3pet-mix") && r["lr_sweep"] == false)
        .unwrap();
    let run_of = source["lr_copy_of"].as_str().expect("seed 1 of the swept source is a copy");
    assert!(!out.join("cells").join(source["id"].as_str().unwrap()).exists());
    let transfers: Vec<&Value> = runs.iter().filter(|r| r["method"] == "transfer-mix").collect();
    assert!(!transfers.is_empty(), "{said}");
    let chosen = std::fs::read_to_string(out.join("cells").join(run_of).join("structure.json")).unwrap();
    let chosen: Value = serde_json::from_str(&chosen).unwrap();
    for t in transfers {
        let dir =
            out.join("cells").join(t["lr_copy_of"].as_str().unwrap_or_else(|| t["id"].as_str().unwrap()));
        let used: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("structure.json")).unwrap()).unwrap();
        assert_eq!(used["modules"], chosen["modules"], "{}", dir.display());
    }
}

/// A transfer cell takes its rate from its task's S3PET sweep: a plan without that sweep is refused before
/// anything runs (the runner could never start the cell), and sweeping the transfer itself is accepted.
#[test]
fn transfer_without_its_rate_source_is_refused() {
    let (d, t1, t2) = two_tasks();
    let plan = d.path().join("plan.toml");
    let out = d.path().join("results");
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    for (methods, refused) in [("", true), ("methods = [\"s3pet-mix\", \"transfer-mix\"]\n", false)] {
        let text = format!(
            "seeds = [1]\n[options]\ndata_dir = \"{data}\"\nmax_steps = 3\n[lr_sweep]\nseed = 1\n\
             grid = [1e-3, 2e-2]\n{methods}[[grid]]\ntasks = [\"{t2}\"]\nmethods = [\"transfer-mix\"]\n\
             budgets = [0.01]\nsources = [\"{t1}\"]\n",
            data = d.path().display()
        );
        std::fs::write(&plan, text).unwrap();
        let ran = s3pet(&["experiment", "--plan", p, "--out", o, "--dry-run"]).output().unwrap();
        let said = String::from_utf8_lossy(&ran.stderr).to_string();
        assert_eq!(ran.status.success(), !refused, "{said}");
        if refused {
            assert!(
                said.contains("lr_sweep")
                    && said.contains("add s3pet-mix on task")
                    && said.contains("other.toml"),
                "{said}"
            );
            assert!(!out.exists(), "a refused plan writes nothing");
        }
    }
}

/// A plan's shared options reach the cells whose command uses them: search options in `[options]` go to
/// searched cells and are left out of random and manual ones (which would refuse them), and every cell runs.
#[test]
fn shared_search_options_reach_only_searched_cells() {
    let (_d, plan, out) = plan_on_task_dir(
        "seeds = [1]",
        "max_steps = 2\nsearch_batch_size = 4\nsearch_epochs = 1\nalpha_lr = 0.05",
        "",
        "\"lora\", \"s3pet-mix\", \"random-mix\"",
    );
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    let dry = ok(s3pet(&["experiment", "--plan", p, "--out", o, "--dry-run"]).output().unwrap());
    for line in dry.lines().filter(|l| l.contains("--strategy")) {
        let searched = line.contains("--strategy s3pet");
        assert_eq!(line.contains("--search-batch-size 4"), searched, "{line}");
        assert_eq!(line.contains("--alpha-lr"), searched, "{line}");
    }
    ok(s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap());
    assert_eq!(lines(&out.join("runs.jsonl")).len(), 3, "every cell ran");
    ok(s3pet(&["report", o]).output().unwrap());
    let md = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    assert!(md.contains("LoRA cells (rank; target modules): r8; query and value"), "{md}");
}

/// A cell that runs the GPU out of memory is started again (resuming) with fewer cells at once, and the
/// plan still finishes every cell (the failure is made by the S3PET_TEST_OOM_ONCE hook: no GPU here).
#[test]
fn a_cell_out_of_gpu_memory_is_retried_with_fewer_at_once() {
    let (d, plan, out) = plan_on_task_dir("seeds = [1, 2]", "max_steps = 2", "", "\"lora\"");
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    let marker = d.path().join("oom-once");
    let r =
        s3pet(&["experiment", "--plan", p, "--out", o]).env("S3PET_TEST_OOM_ONCE", &marker).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(marker.exists(), "the hook fired");
    assert!(
        err.contains("RETRY") && err.contains("the GPU ran out of memory; at most 1 cells at once"),
        "{err}"
    );
    assert_eq!(lines(&out.join("runs.jsonl")).len(), 2, "both cells finished: {err}");
}

/// A per-method option overrides the plan's: `precision = "bf16"` for every cell but full fine-tuning
/// (which refuses it); the cells record what they ran with and the report says which methods ran in bf16,
/// also for the seed-1 cells copied from a learning-rate sweep.
#[test]
fn per_method_precision_reaches_the_cells_and_the_report() {
    let (_d, plan, out) = plan_on_task_dir(
        "seeds = [1]",
        "max_steps = 2\nprecision = \"bf16\"",
        "[method_options.full]\nprecision = \"fp32\"\n[lr_sweep]\nseed = 1\ngrid = [1e-3, 2e-3]\nfull = [1e-4]",
        "\"lora\", \"full\", \"s3pet-mix\"",
    );
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    ok(s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap());
    assert_eq!(lines(&out.join("runs.jsonl")).len(), 8, "every cell ran (5 sweep cells, 3 copied)");
    ok(s3pet(&["report", o]).output().unwrap());
    let md = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    // the copied seed-1 cells have no run directory of their own: their sweep cell's config is read
    let want =
        "Precision: bf16 activations and frozen matmuls (deltas, heads, optimiser state fp32) for LoRA, \
                S3PET-M; fp32 for Fine-tuning.";
    assert!(md.contains(want), "{md}");
}

/// `--cells-end-by`: a cell whose kind (task, method, order) has finished before in more time than is
/// left does not start, a shorter kind does; the cell left out starts on the next run without the option.
#[test]
fn cells_end_by_starts_only_cells_expected_to_end_in_time() {
    let (_d, plan, out) = plan_on_task_dir("seeds = [1]", "max_steps = 2", "", "\"lora\", \"bitfit\"");
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    ok(s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap());
    // LoRA's first cell is recorded as having taken a day
    let runs = out.join("runs.jsonl");
    let mut records = lines(&runs);
    let lora = records.iter_mut().find(|r| r["method"] == "lora").unwrap();
    lora["wall_seconds"] = serde_json::json!(86_400.0);
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&runs, text).unwrap();
    std::fs::write(&plan, std::fs::read_to_string(&plan).unwrap().replace("seeds = [1]", "seeds = [1, 2]"))
        .unwrap();
    let r = s3pet(&["experiment", "--plan", p, "--out", o, "--cells-end-by", "30"]).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("1 cells finished now, 0 failed, 0 cut, 1 not started"), "{err}");
    let methods = |records: &[Value]| -> Vec<String> {
        records.iter().filter(|r| r["seed"] == 2).map(|r| r["method"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(methods(&lines(&runs)), ["bitfit"], "{err}");
    ok(s3pet(&["experiment", "--plan", p, "--out", o]).output().unwrap());
    let mut seed2 = methods(&lines(&runs));
    seed2.sort();
    assert_eq!(seed2, ["bitfit", "lora"]);
}

/// An interrupt (Ctrl-C reaches the runner's whole process group) cuts the running cell: it writes its
/// checkpoint and is reported as cut, not failed, and the runner's error says how to continue.
#[test]
fn an_interrupt_cuts_the_running_cells_and_says_so() {
    use std::os::unix::process::CommandExt;
    let (_d, plan, out) = plan_on_task_dir("seeds = [1]", "max_steps = 1000000", "", "\"lora\"");
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    let mut cmd = s3pet(&["experiment", "--plan", p, "--out", o]);
    let child = cmd.process_group(0).stderr(Stdio::piped()).spawn().unwrap();
    // the one cell's run directory once it has its config (it is training then)
    let started_cell = || {
        let dir = out.join("cells").read_dir().ok()?.next()?.ok()?.path();
        dir.join("config.json").is_file().then_some(dir)
    };
    let t0 = std::time::Instant::now();
    let cell = loop {
        if let Some(dir) = started_cell() {
            break dir;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the cell did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(1500));
    let group = format!("-{}", child.id());
    assert!(Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
    let r = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{err}");
    assert!(err.contains("CUT ") && !err.contains("FAILED"), "{err}");
    assert!(err.contains("0 failed, 1 cut, 0 not started"), "{err}");
    assert!(err.contains("interrupted with 1 cells cut"), "{err}");
    assert!(cell.join("checkpoint.safetensors").is_file(), "the cut cell wrote its checkpoint");
}

/// One finished cell's line of runs.jsonl, as `s3pet experiment` writes it (the keys the report reads).
fn run_line(task: &str, seed: u64, lr: f64, sweep: bool, test: f64) -> String {
    let id = if sweep {
        format!("{task}.random-mix.b1.39e-4.lr{lr:e}.s{seed}")
    } else {
        format!("{task}.random-mix.b1.39e-4.s{seed}")
    };
    serde_json::json!({
        "id": id, "task": task, "method": "random-mix", "budget": 0.000139, "order": null, "seed": seed,
        "source_task": null, "lr": lr, "lr_sweep": sweep, "metrics": ["accuracy"],
        "dev": {"accuracy": test}, "test": {"accuracy": test}, "delta_fraction": 0.000134,
        "delta_params": 14664, "trainable_params": 606025, "retrain_seconds": 90.0, "search_seconds": null,
        "wall_seconds": 95.0, "machine": {"cpus": 2, "device": "cpu", "host": "here"}
    })
    .to_string()
}

#[test]
fn the_main_table_leaves_out_tasks_that_have_only_sweep_cells() {
    // a plan part-way: random-M has finished its cells on copa and cb, and only a sweep cell on rte
    let d = tempfile::tempdir().unwrap();
    let mut lines = vec![];
    for task in ["copa", "cb"] {
        lines.push(run_line(task, 1, 3e-4, true, 70.0));
        for seed in [2, 3] {
            lines.push(run_line(task, seed, 3e-4, false, 60.0 + seed as f64));
        }
    }
    lines.push(run_line("rte", 1, 3e-4, true, 52.5));
    std::fs::write(d.path().join("runs.jsonl"), lines.join("\n") + "\n").unwrap();
    ok(s3pet(&["report", d.path().to_str().unwrap()]).output().unwrap());
    let md = std::fs::read_to_string(d.path().join("RESULTS.md")).unwrap();
    let main = md.split("## Main table").nth(1).unwrap().split("\n## ").next().unwrap();
    assert!(main.contains("| copa (accuracy) | cb (accuracy) |") && !main.contains("rte"), "{main}");
    assert!(main.contains("| random-M @ 1.390e-4 |"), "{main}");
}
