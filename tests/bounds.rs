//! Boundary values of every numeric option of every training command (0, -1, NaN, inf, a huge value):
//! each is refused before anything is written (the error names the option and the value), or the run
//! stops at the non-finite guard naming the step, or it finishes with every tensor and metric finite.
//! Never a run that reports a metric computed from non-finite state.
mod common;
use common::{s3pet, task_dir};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BOUNDARIES: [&str; 5] = ["0", "-1", "nan", "inf", "1000000000000"];
const FLOAT_HUGE: &str = "1e30";

/// The value-taking numeric options of `s3pet CMD --help` (those whose value name is not a path,
/// a name or a list).
fn numeric_options(cmd: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_s3pet")).args([cmd, "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .filter(|l| l.starts_with("      --") || l.starts_with("  -"))
        .filter_map(|l| {
            let mut words = l.split_whitespace().filter(|w| w.starts_with("--") || w.starts_with('<'));
            let (opt, value) = (words.next()?, words.next()?);
            s3pet::config::limits::range_of(opt).filter(|_| value.starts_with('<')).map(|_| opt.to_string())
        })
        .collect()
}

/// Every value of every safetensors file and every number of report.json under `dir` is finite.
fn all_finite(dir: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            for (k, t) in tch::Tensor::read_safetensors(&p).unwrap() {
                if t.is_floating_point() && t.isfinite().all().int64_value(&[]) != 1 {
                    return Err(format!("{}: tensor {k} is not finite", p.display()));
                }
            }
        }
    }
    let report = dir.join("report.json");
    if report.is_file() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        // serde writes a NaN as null: every reported metric must be a number
        for m in [&v["dev"], &v["test"], &v["retrain"]["dev"], &v["retrain"]["test"]] {
            if let Some(o) = m.as_object() {
                if o.values().any(|x| !x.is_number()) {
                    return Err(format!("{}: a metric is not a number: {m}", report.display()));
                }
            }
        }
    }
    Ok(())
}

fn base_args(cmd: &str, task: &str, structure: &str, out: &Path) -> Vec<(String, Option<String>)> {
    let mut v: Vec<(String, Option<String>)> = [
        ("--task", Some(task)),
        ("--max-steps", Some("2")),
        ("--batch-size", Some("4")),
        ("--max-train-examples", Some("16")),
        ("--max-eval-examples", Some("4")),
        ("--threads", Some("1")),
        ("--eval-every", Some("1")),
        ("--lr", Some("5e-3")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(String::from)))
    .collect();
    v.push(("--out".into(), Some(out.display().to_string())));
    match cmd {
        "retrain" => v.push(("--structure".into(), Some(structure.into()))),
        "search" | "run" => v.push(("--budget-params".into(), Some("500".into()))),
        _ => {}
    }
    v
}

fn check(cmd: &str) {
    let d = task_dir();
    let task = d.path().join("task.toml").display().to_string();
    let structure = d.path().join("s.json").display().to_string();
    let mk = ["structure", "random", "--budget-params", "600", "--out", &structure].map(String::from);
    assert!(s3pet(&mk, d.path()).status.success());
    let opts = numeric_options(cmd);
    assert!(opts.len() >= 15, "{cmd}: numeric options from --help: {opts:?}");
    for opt in &opts {
        let huge = if s3pet::config::limits::range_of(opt).is_some_and(|r| {
            matches!(r, s3pet::config::limits::Range::AtLeast(_) | s3pet::config::limits::Range::Between(..))
        }) {
            BOUNDARIES[4]
        } else {
            FLOAT_HUGE
        };
        for value in BOUNDARIES[..4].iter().copied().chain([huge]) {
            let out = d.path().join(format!("{cmd}{opt}{value}").replace(['-', '.'], "_"));
            let mut args: Vec<(String, Option<String>)> = base_args(cmd, &task, &structure, &out);
            if opt == "--budget" {
                args.retain(|(k, _)| k != "--budget-params");
            }
            if opt == "--retrain-epochs" {
                args.retain(|(k, _)| k != "--epochs");
            }
            args.retain(|(k, _)| k != opt);
            args.push((opt.clone(), Some(value.into())));
            let mut argv = vec!["-q".to_string(), cmd.to_string()];
            for (k, v) in args {
                argv.push(k);
                argv.extend(v);
            }
            let o = s3pet(&argv, d.path());
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            let what = format!("s3pet {cmd} {opt} {value}");
            if o.status.success() {
                all_finite(&out).unwrap_or_else(|e| panic!("{what}: a run with non-finite state: {e}"));
            } else if err.contains("non-finite") || err.contains("at search step") {
                assert!(err.contains("step"), "{what}: the guard's message names the step:\n{err}");
                assert!(!out.join("report.json").exists(), "{what}: a stopped run wrote report.json");
                all_finite(&out).unwrap_or_else(|e| panic!("{what}: kept non-finite files: {e}"));
            } else {
                let why = err.contains(value) || err.contains("not used by");
                assert!(
                    err.contains(opt.as_str()) && why,
                    "{what}: the error names neither option nor value:\n{err}"
                );
                assert!(!out.exists(), "{what}: a refused value wrote its run directory");
            }
        }
    }
}

#[test]
fn train_bounds() {
    check("train");
}

#[test]
fn retrain_bounds() {
    check("retrain");
}

#[test]
fn search_bounds() {
    check("search");
}

#[test]
fn run_bounds() {
    check("run");
}

/// A learning rate of 1e30 (after a warm-up step at rate 0) blows the model up: the run stops at the
/// guard naming the step, with the step-1 checkpoint and best weights intact and finite, and no report.
#[test]
fn huge_learning_rate_stops_at_the_guard_keeping_the_checkpoint() {
    let d = task_dir();
    let out = d.path().join("blowup");
    let args = [
        "train",
        "--task",
        &d.path().join("task.toml").display().to_string(),
        "--out",
        &out.display().to_string(),
    ]
    .into_iter()
    .map(String::from)
    .chain(
        [
            "--lr",
            "1e30",
            "--warmup-ratio",
            "0.5",
            "--max-steps",
            "8",
            "--eval-every",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "1",
        ]
        .map(String::from),
    )
    .collect::<Vec<_>>();
    let o = s3pet(&args, d.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("non-finite") && err.contains("step") && err.contains("checkpoint"), "{err}");
    assert!(!out.join("report.json").exists());
    let ckpt = tch::Tensor::read_safetensors(out.join("checkpoint.safetensors")).unwrap();
    let step = ckpt.iter().find(|(k, _)| k == "meta.step").unwrap().1.double_value(&[0]);
    assert!(step >= 1.0, "the checkpoint of the good steps is kept (step {step})");
    all_finite(&out).unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(!metrics.contains("NaN") && !metrics.contains("\"test\""), "{metrics}");
}
