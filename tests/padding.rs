//! `--pad-to-multiple`: batches padded further (mask 0 on the padding) train and search the same function.
//! On a model without dropout (dropout draws one mask element per token, so padding moves the draws) a
//! training run and a search padded to multiples of 32 give the losses, metrics and alphas of the
//! unpadded runs, and the option is recorded in config.json.
mod common;
use common::{read_json, task_dir, tiny_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The tiny BERT with dropout 0, in `tmp` (its other files linked).
fn no_dropout_tiny(tmp: &Path) -> PathBuf {
    let dir = tmp.join("tiny-nodrop");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::os::unix::fs::symlink(tiny_dir().join(f), dir.join(f)).unwrap();
    }
    let mut cfg = read_json(&tiny_dir().join("config.json"));
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    cfg["hidden_dropout_prob"] = 0.0.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn run(args: &[&str], model: &Path, data: &Path, out: &Path) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(args)
        .args(["--threads", "1", "--seed", "3", "--out"])
        .arg(out)
        .env("S3PET_MODEL", model)
        .env("S3PET_DATA", data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// The numbers of every line of a JSONL file under `key` (in order).
fn column(path: &Path, key: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let values = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()?.get(key).cloned());
    values.flat_map(|v| v.as_array().cloned().unwrap_or_else(|| vec![v])).filter_map(|v| v.as_f64()).collect()
}

fn assert_all_close(what: &str, a: &[f64], b: &[f64]) {
    assert!(!a.is_empty() && a.len() == b.len(), "{what}: {} against {} values", a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{what}: {x} against {y}");
    }
}

#[test]
fn padded_batches_train_and_search_the_same_function() {
    let (data, tmp) = (task_dir(), tempfile::tempdir().unwrap());
    let model = no_dropout_tiny(tmp.path());
    let task = data.path().join("task.toml").display().to_string();
    let train = ["train", "--task", &task, "--method", "lora", "--max-steps", "8", "--batch-size", "4"];
    let search = ["search", "--task", &task, "--space", "mix", "--budget", "0.01", "--max-steps", "6"];
    for (name, args, key, file) in
        [("train", &train[..], "loss", "metrics.jsonl"), ("search", &search[..], "alpha", "alphas.jsonl")]
    {
        let (plain, padded) =
            (tmp.path().join(format!("{name}-plain")), tmp.path().join(format!("{name}-padded")));
        run(args, &model, data.path(), &plain);
        run(&[args, &["--pad-to-multiple", "32"]].concat(), &model, data.path(), &padded);
        assert_eq!(read_json(&padded.join("config.json"))["pad_to_multiple"]["value"], 32, "{name}");
        assert!(read_json(&plain.join("config.json"))["pad_to_multiple"]["value"].is_null(), "{name}");
        assert_all_close(name, &column(&plain.join(file), key), &column(&padded.join(file), key));
        let (a, b) = (read_json(&plain.join("report.json")), read_json(&padded.join("report.json")));
        // training: its dev metrics; the search: its dev metrics and the structure it chose
        let same = |v: &Value| [v["dev"].clone(), v["search"]["dev"].clone(), v["structure"].clone()];
        assert_eq!(same(&a), same(&b), "{name}");
        assert!(same(&a).iter().any(|v| !v.is_null()), "{name}: {a}");
    }
}
