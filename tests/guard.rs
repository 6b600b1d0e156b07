//! The non-finite guard end to end: a learning rate so large that the first update overflows the parameters (1e39: past fp32) stops a
//! training run and a search (the device-side guard, read at the next check) with a message naming
//! the step and what went non-finite, and keeps no checkpoint written after it; with
//! `--skip-nonfinite` both runs skip those batches and finish.
mod common;
use common::*;

fn args<'a>(cmd: &'a str, task: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut v =
        vec![cmd, "--task", task, "--out", out, "--lr", "1e39", "--max-steps", "4", "--eval-every", "4"];
    if cmd == "train" {
        v.extend(["--method", "bitfit"]);
    } else {
        v.extend(["--budget-params", "600"]);
    }
    v.extend(["--batch-size", "4", "--threads", "1"]);
    v
}

#[test]
fn overflowing_parameters_stop_the_run_or_are_skipped() {
    let d = task_dir();
    let task = d.path().join("task.toml");
    for (cmd, run) in [("train", "training"), ("search", "search")] {
        let out = d.path().join(format!("{cmd}-stop"));
        let o = s3pet(&args(cmd, task.to_str().unwrap(), out.to_str().unwrap()), d.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{cmd}: a non-finite step must stop the run");
        assert!(err.contains("non-finite") && err.contains(&format!("at {run} step")), "{cmd}: {err}");
        assert!(err.contains("--skip-nonfinite"), "{cmd}: {err}");
        let ckpt = if cmd == "train" { "checkpoint.safetensors" } else { "search_checkpoint.safetensors" };
        assert!(!out.join(ckpt).exists(), "{cmd}: no checkpoint is written after a bad step");
        let out = d.path().join(format!("{cmd}-skip"));
        let mut a = args(cmd, task.to_str().unwrap(), out.to_str().unwrap());
        a.push("--skip-nonfinite");
        let o = s3pet(&a, d.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{cmd} --skip-nonfinite: {err}");
        assert!(err.contains("skipping a batch with non-finite"), "{cmd}: {err}");
    }
}
