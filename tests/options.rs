//! No option is silently ignored: every option of every training command (enumerated from its --help)
//! is either honoured (config.json records it from the command line, and the run's outcome changes
//! where the option is meant to change it) or refused with a message naming it. A new option without an
//! entry here fails the test.
mod common;
use common::{s3pet, task_dir, tiny_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What an option should do against the command's baseline run.
#[derive(Clone, Copy, Debug)]
enum Effect {
    /// The trained weights (search: the searched alphas) differ.
    Outcome,
    /// The value at this JSON pointer of report.json differs.
    Report(&'static str),
    /// The number of dev evaluations (metrics.jsonl or alphas.jsonl lines) differs.
    Evals,
    /// Only where it runs or how it is saved changes: config.json records it.
    Recorded,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Honoured(&'static [&'static str], Effect),
    /// Refused (with these arguments): the error names the option.
    Refused(&'static [&'static str]),
    /// Not a configuration value (output, logging, task, resume, help): tested elsewhere.
    Control,
}

const CONTROL: [&str; 10] = [
    "--export",
    "--task",
    "--out",
    "--verbose",
    "--quiet",
    "--offline",
    "--help",
    "--overwrite",
    "--resume",
    "--data-dir",
];

/// The expected behaviour of `opt` in `cmd`.
fn expect(cmd: &str, opt: &str) -> Option<Expect> {
    use Effect::*;
    use Expect::*;
    let steps = match cmd {
        "search" => "/search/steps",
        "run" => "/retrain/steps",
        _ => "/steps",
    };
    let evals = if cmd == "search" {
        "/search/dev_examples"
    } else if cmd == "run" {
        "/retrain/eval_examples"
    } else {
        "/eval_examples"
    };
    if CONTROL.contains(&opt) {
        return Some(Control);
    }
    Some(match opt {
        "--model" => Honoured(&["--model", "MODEL"], Recorded),
        "--seed" => Honoured(&["--seed", "7"], Outcome),
        "--epochs" => Honoured(&["--epochs", "3"], Report(steps)),
        "--max-steps" => Honoured(&["--max-steps", "3"], Report(steps)),
        "--max-train-examples" => Honoured(&["--max-train-examples", "20"], Outcome),
        "--max-eval-examples" => Honoured(&["--max-eval-examples", "5"], Report(evals)),
        "--batch-size" => Honoured(&["--batch-size", "4"], Outcome),
        "--eval-batch-size" => Honoured(&["--eval-batch-size", "3"], Recorded),
        "--lr" => Honoured(&["--lr", "2e-2"], Outcome),
        "--weight-decay" => Honoured(&["--weight-decay", "50"], Outcome),
        "--warmup-ratio" => Honoured(&["--warmup-ratio", "0.9"], Outcome),
        "--clip-norm" => Honoured(&["--clip-norm", "1e-4"], Outcome),
        "--eval-every" => Honoured(&["--eval-every", "1"], Evals),
        "--max-length" => Honoured(&["--max-length", "6"], Outcome),
        "--length-buckets" => Honoured(&["--length-buckets", "2"], Outcome),
        // padding moves the tiny model's dropout draws (tests/padding.rs: without dropout, the same run)
        "--pad-to-multiple" => Honoured(&["--pad-to-multiple", "64"], Outcome),
        "--device" => Honoured(&["--device", "cpu"], Recorded),
        "--threads" => Honoured(&["--threads", "2"], Recorded),
        "--backbone-dtype" => Honoured(&["--backbone-dtype", "bf16"], Outcome),
        "--precision" => Honoured(&["--precision", "bf16"], Outcome),
        "--checkpoint-every" => Honoured(&["--checkpoint-every", "1"], Recorded),
        "--skip-nonfinite" => Honoured(&["--skip-nonfinite"], Recorded),
        "--method" if cmd == "retrain" => Refused(&["--method", "bitfit"]),
        "--method" => Honoured(&["--method", "bitfit"], Report("/delta_params")),
        "--structure" if cmd == "train" => Refused(&["--structure", "STRUCTURE", "--method", "bitfit"]),
        "--structure" => Honoured(&["--structure", "STRUCTURE2"], Report("/delta_params")),
        "--lora-r" | "--lora-alpha" | "--target-modules" | "--rank-pattern" if cmd == "retrain" => {
            Refused(match opt {
                "--lora-r" => &["--lora-r", "2"],
                "--lora-alpha" => &["--lora-alpha", "4"],
                "--target-modules" => &["--target-modules", "key"],
                _ => &["--rank-pattern", "query=2"],
            })
        }
        "--lora-r" => Honoured(&["--lora-r", "2"], Report("/delta_params")),
        "--lora-alpha" => Honoured(&["--lora-alpha", "64"], Outcome),
        "--lora-dropout" => Honoured(&["--lora-dropout", "0.5"], Outcome),
        "--target-modules" => Honoured(&["--target-modules", "re:.*\\.(key|dense)"], Report("/delta_params")),
        "--rank-pattern" => Honoured(&["--rank-pattern", "value=2"], Report("/delta_params")),
        "--space" => Honoured(&["--space", "lora"], Report("/structure/by_type")),
        "--budget" => Honoured(&["--budget", "1.5e-2"], Report("/structure/budget_params")),
        "--budget-params" => Honoured(&["--budget-params", "900"], Report("/structure/budget_params")),
        "--order" => Honoured(&["--order", "1"], Outcome),
        "--alpha-lr" => Honoured(&["--alpha-lr", "0.5"], Outcome),
        "--beta" => Honoured(&["--beta", "3"], Outcome),
        "--search-batch-size" => Honoured(&["--search-batch-size", "4"], Outcome),
        "--strategy" => Honoured(&["--strategy", "random"], Report("/search")),
        "--search-epochs" => Honoured(&["--search-epochs", "3"], Report("/search/steps")),
        "--retrain-epochs" => Honoured(&["--retrain-epochs", "2"], Report("/retrain/steps")),
        _ => return None,
    })
}

/// Long options of `s3pet CMD --help`.
fn options(cmd: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_s3pet")).args([cmd, "--help"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("  -") || l.starts_with("      --"))
        .filter_map(|l| {
            l.trim_start()
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .map(|w| w.trim_end_matches(".").to_string())
        })
        .collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    task: String,
    structure: String,
    structure2: String,
}

impl Fixture {
    fn new() -> Self {
        let dir = task_dir();
        let task = dir.path().join("task.toml").display().to_string();
        let mk = |name: &str, budget: &str| {
            let p = dir.path().join(name);
            let o = s3pet(
                &[
                    "structure",
                    "random",
                    "--budget-params",
                    budget,
                    "--seed",
                    "3",
                    "--out",
                    p.to_str().unwrap(),
                ],
                dir.path(),
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            p.display().to_string()
        };
        let (structure, structure2) = (mk("s.json", "600"), mk("s2.json", "300"));
        Fixture { dir, task, structure, structure2 }
    }

    /// The baseline command line of `cmd` writing to `out`, with `variant` replacing or adding options.
    fn args(&self, cmd: &str, out: &Path, variant: &[&str]) -> Vec<String> {
        let mut base: Vec<(String, Option<String>)> = vec![
            ("--task".into(), Some(self.task.clone())),
            ("--max-steps".into(), Some("6".into())),
            ("--batch-size".into(), Some("8".into())),
            ("--threads".into(), Some("1".into())),
            ("--eval-every".into(), Some("3".into())),
            ("--lr".into(), Some("5e-3".into())),
        ];
        match cmd {
            "retrain" => base.push(("--structure".into(), Some(self.structure.clone()))),
            "search" | "run" => base.push(("--budget-params".into(), Some("500".into()))),
            _ => {}
        }
        let fill = |v: &str| match v {
            "MODEL" => tiny_dir().display().to_string(),
            "STRUCTURE" => self.structure.clone(),
            "STRUCTURE2" => self.structure2.clone(),
            v => v.to_string(),
        };
        let mut i = 0;
        while i < variant.len() {
            let flag = variant[i].to_string();
            let value = variant.get(i + 1).filter(|v| !v.starts_with("--")).map(|v| fill(v));
            i += 1 + value.is_some() as usize;
            if flag == "--max-steps" || flag == "--epochs" || flag.ends_with("-epochs") {
                base.retain(|(f, _)| f != "--max-steps");
            }
            if flag == "--budget" {
                base.retain(|(f, _)| f != "--budget-params");
            }
            base.retain(|(f, _)| *f != flag);
            base.push((flag, value));
        }
        let mut a = vec!["-q".to_string(), cmd.to_string(), "--out".into(), out.display().to_string()];
        for (f, v) in base {
            a.push(f);
            a.extend(v);
        }
        a
    }
}

fn read(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// What a run produced that an option may change: its trained weights and searched candidates, its
/// report, and how many dev evaluations it logged.
fn outcome(dir: &Path) -> (Vec<u8>, Value, usize) {
    let mut bytes = Vec::new();
    for f in ["weights.safetensors", "candidates.tsv"] {
        bytes.extend(std::fs::read(dir.join(f)).unwrap_or_default());
    }
    let evals = ["metrics.jsonl", "alphas.jsonl"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.contains("\"test\""))
                .count()
        })
        .sum();
    (bytes, read(&dir.join("report.json")), evals)
}

fn run_ok(fx: &Fixture, cmd: &str, out: &Path, variant: &[&str]) -> Output {
    let a = fx.args(cmd, out, variant);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    s3pet(&refs, fx.dir.path())
}

/// The config key an option is saved under (search settings under `search`).
fn config_entry(cfg: &Value, opt: &str) -> Value {
    let key = opt.trim_start_matches("--").replace('-', "_");
    let key = if key == "retrain_epochs" { "epochs".to_string() } else { key };
    let top = &cfg[&key];
    if !top.is_null() {
        return top.clone();
    }
    cfg["search"]["value"][&key].clone()
}

fn check_command(cmd: &str) {
    let fx = Fixture::new();
    let base_dir = fx.dir.path().join(format!("{cmd}-base"));
    let o = run_ok(&fx, cmd, &base_dir, &[]);
    assert!(o.status.success(), "{cmd} baseline: {}", String::from_utf8_lossy(&o.stderr));
    let base = outcome(&base_dir);
    let opts = options(cmd);
    assert!(opts.len() > 20, "{cmd}: too few options parsed from --help: {opts:?}");
    for opt in &opts {
        let e = expect(cmd, opt)
            .unwrap_or_else(|| panic!("`s3pet {cmd} {opt}` has no entry in tests/options.rs"));
        let dir = fx.dir.path().join(format!("{cmd}{}", opt.replace('-', "_")));
        match e {
            Expect::Control => {}
            Expect::Refused(args) => {
                let o = run_ok(&fx, cmd, &dir, args);
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    !o.status.success() && err.contains(opt.as_str()),
                    "{cmd} {args:?} should be refused naming {opt}:\n{err}"
                );
                assert!(!dir.join("config.json").exists(), "{cmd} {opt}: a refused run wrote its directory");
            }
            Expect::Honoured(args, effect) => {
                let o = run_ok(&fx, cmd, &dir, args);
                assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
                let entry = config_entry(&read(&dir.join("config.json")), opt);
                assert_eq!(
                    entry["from"], "cli",
                    "{cmd} {opt}: config.json does not record it from the command line: {entry}"
                );
                let got = outcome(&dir);
                match effect {
                    Effect::Outcome => assert_ne!(got.0, base.0, "{cmd} {args:?} changed nothing"),
                    Effect::Report(ptr) => {
                        assert_ne!(
                            got.1.pointer(ptr),
                            base.1.pointer(ptr),
                            "{cmd} {args:?}: report {ptr} unchanged"
                        )
                    }
                    Effect::Evals => assert_ne!(got.2, base.2, "{cmd} {args:?}: as many evaluations"),
                    Effect::Recorded => {}
                }
            }
        }
    }
}

#[test]
fn train_options_are_honoured_or_refused() {
    check_command("train");
}

#[test]
fn retrain_options_are_honoured_or_refused() {
    check_command("retrain");
}

#[test]
fn search_options_are_honoured_or_refused() {
    check_command("search");
}

#[test]
fn run_options_are_honoured_or_refused() {
    check_command("run");
}

/// `--strategy random` refuses the options only a search uses.
#[test]
fn random_strategy_refuses_search_options() {
    let fx = Fixture::new();
    for args in [
        &["--order", "1"][..],
        &["--alpha-lr", "0.2"],
        &["--beta", "2"],
        &["--search-batch-size", "4"],
        &["--search-epochs", "2"],
    ] {
        let mut v = vec!["--strategy", "random"];
        v.extend_from_slice(args);
        let dir: PathBuf = fx.dir.path().join("rand");
        let o = run_ok(&fx, "run", &dir, &v);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(args[0]) && err.contains("random"), "{v:?}:\n{err}");
    }
}
