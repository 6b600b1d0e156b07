//! A training run killed with SIGKILL at random points and resumed each time ends with the same best
//! step, metrics and weights as an uninterrupted run (CPU, one thread).
mod common;
use common::{task_dir, tiny_dir};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn cmd(args: &[&str], data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3pet"));
    c.args(args)
        .env("S3PET_MODEL", tiny_dir())
        .env("S3PET_DATA", data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn report(dir: &Path) -> (Value, Vec<u8>) {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let keep = serde_json::json!({"dev": r["dev"], "test": r["test"], "best_step": r["best_step"], "steps": r["steps"]});
    (keep, std::fs::read(dir.join("weights.safetensors")).unwrap())
}

/// A short single-thread training on the synthetic task, batch 4, lr 5e-3.
fn train_args<'a>(
    task: &'a str,
    method: &'a str,
    steps: &'a str,
    eval_every: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut v = vec!["--task", task, "--method", method, "--max-steps", steps, "--batch-size", "4"];
    v.extend(["--eval-every", eval_every, "--threads", "1", "--lr", "5e-3"]);
    v.extend_from_slice(extra);
    v
}

const CHECKPOINTS: [&str; 2] = ["checkpoint.safetensors", "search_checkpoint.safetensors"];

/// The newest modification time of the run's checkpoints.
fn newest_checkpoint(out: &Path) -> Option<std::time::SystemTime> {
    CHECKPOINTS.iter().filter_map(|f| std::fs::metadata(out.join(f)).and_then(|m| m.modified()).ok()).max()
}

/// Runs `fresh` into `out`, SIGKILLs it at seeded random moments and continues with `resume` each
/// time, until it finishes; returns (kills, kills that found a checkpoint to resume from). Each attempt
/// is killed a random 0-300 ms after it has written a checkpoint of its own, so that every attempt
/// makes progress and every kill leaves a checkpoint behind, however slow the machine.
fn kill_and_resume(fresh: &[&str], resume: &[&str], out: &Path, data: &Path, seed: u64) -> (i32, i32) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut kills, mut resumed) = (0, 0);
    for attempt in 0..40 {
        let args = if out.join("config.json").is_file() { resume } else { fresh };
        let before = newest_checkpoint(out);
        let mut child = cmd(args, data).spawn().unwrap();
        if attempt < 6 {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while child.try_wait().unwrap().is_none()
                && newest_checkpoint(out) == before
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                resumed += newest_checkpoint(out).is_some() as i32;
                continue;
            }
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "attempt {attempt} failed");
        break;
    }
    assert!(
        kills >= 3 && resumed >= 3,
        "the test must really interrupt the run ({kills} kills, {resumed} with a checkpoint)"
    );
    (kills, resumed)
}

#[test]
fn killed_and_resumed_training_matches_uninterrupted() {
    let d = task_dir();
    let task = d.path().join("task.toml");
    let t = task.to_str().unwrap();
    let base = train_args(t, "lora", "400", "7", &["--checkpoint-every", "1"]);
    let full = d.path().join("full");
    let st = cmd(&[&["-q", "train", "--out", full.to_str().unwrap()], &base[..]].concat(), d.path())
        .status()
        .unwrap();
    assert!(st.success());
    let want = report(&full);

    let out = d.path().join("killed");
    let o = out.to_str().unwrap();
    let fresh = [&["-q", "train", "--overwrite", "--out", o], &base[..]].concat();
    let resume = ["-q", "train", "--task", t, "--out", o, "--resume", "--threads", "1"];
    let (kills, _) = kill_and_resume(&fresh, &resume, &out, d.path(), 17);
    let got = report(&out);
    assert_eq!(got.0, want.0, "metrics after {kills} kills");
    assert!(got.1 == want.1, "best weights differ after {kills} kills");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let want_log = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    assert_eq!(log, want_log, "metrics.jsonl is the same line for line");
    // the cost of a resumed run is the sum of its attempts (up to each one's last checkpoint)
    let r: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let (total, last) = (r["train_seconds"].as_f64().unwrap(), r["attempt_seconds"].as_f64().unwrap());
    assert!(
        total > last && last > 0.0,
        "train_seconds {total} must add the earlier attempts to the last {last}"
    );
}

/// `s3pet run` (second-order search, then retraining) killed during the search and the retraining ends
/// with the same structure, alphas, metrics and weights as an uninterrupted run.
#[test]
fn killed_and_resumed_search_run_matches_uninterrupted() {
    let d = task_dir();
    let task = d.path().join("task.toml");
    let t = task.to_str().unwrap();
    let base = [
        "--task",
        t,
        "--space",
        "mix",
        "--budget-params",
        "500",
        "--order",
        "2",
        "--max-steps",
        "150",
        "--batch-size",
        "4",
        "--eval-every",
        "7",
        "--threads",
        "1",
        "--lr",
        "5e-3",
        "--checkpoint-every",
        "1",
    ];
    let full = d.path().join("full");
    let st = cmd(&[&["-q", "run", "--out", full.to_str().unwrap()], &base[..]].concat(), d.path())
        .status()
        .unwrap();
    assert!(st.success());
    let out = d.path().join("killed");
    let o = out.to_str().unwrap();
    let fresh = [&["-q", "run", "--overwrite", "--out", o], &base[..]].concat();
    let resume = ["-q", "run", "--task", t, "--out", o, "--resume", "--threads", "1"];
    let (kills, _) = kill_and_resume(&fresh, &resume, &out, d.path(), 29);
    let read = |dir: &Path, f: &str| std::fs::read(dir.join(f)).unwrap();
    for f in ["structure.json", "alphas.jsonl", "candidates.tsv", "metrics.jsonl", "weights.safetensors"] {
        assert!(read(&out, f) == read(&full, f), "{f} differs after {kills} kills");
    }
    let r = |dir: &Path| -> Value {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        serde_json::json!({"dev": v["dev"], "test": v["test"], "structure": v["structure"],
                           "best": v["search"]["best_step"], "steps": v["search"]["steps"]})
    };
    assert_eq!(r(&out), r(&full), "report after {kills} kills");
}

/// Ctrl-C (SIGINT) finishes the step, saves a checkpoint and exits non-zero with a message; --resume
/// then ends where an uninterrupted run ends.
#[test]
fn sigint_saves_and_resume_completes() {
    let d = task_dir();
    let task = d.path().join("task.toml");
    let t = task.to_str().unwrap();
    let base = train_args(t, "bitfit", "1500", "50", &[]);
    let full = d.path().join("full");
    assert!(cmd(&[&["-q", "train", "--out", full.to_str().unwrap()], &base[..]].concat(), d.path())
        .status()
        .unwrap()
        .success());
    let out = d.path().join("int");
    let child = cmd(&[&["-q", "train", "--out", out.to_str().unwrap()], &base[..]].concat(), d.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc_kill(pid, 2) }, 0, "send SIGINT");
    let res = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "the run must stop at the interrupt, not finish");
    assert!(err.contains("interrupted") && err.contains("--resume"), "{err}");
    assert!(out.join("checkpoint.safetensors").is_file());
    let o = out.to_str().unwrap();
    assert!(cmd(&["-q", "train", "--task", t, "--out", o, "--resume", "--threads", "1"], d.path())
        .status()
        .unwrap()
        .success());
    assert_eq!(report(&out), report(&full));
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
