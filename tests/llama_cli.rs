//! The CLI on the tiny Llama (tests/fixtures/tiny_llama): a classification task posed as a prompt
//! through search + retrain, eval, predict (answer and generated text), PEFT export / import (CAUSAL_LM)
//! and merge; an instruction task trained on its replies and evaluated by generation; bf16 and resume.
mod common;
use common::{fixtures, ok, read_json, task_dir};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const QUICK: [&str; 6] = ["--threads", "1", "--device", "cpu", "--max-length", "512"];

fn s3pet(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(args)
        .args(if matches!(args[0], "train" | "run" | "search" | "retrain") { &QUICK[..] } else { &[] })
        .env("S3PET_MODEL", fixtures().join("tiny_llama"))
        .env("S3PET_DATA", data)
        .output()
        .unwrap()
}

fn lines(out: std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn decoder_run_eval_predict_export_import_merge() {
    let d = task_dir();
    let (task, run) = (d.path().join("task.toml"), d.path().join("run"));
    let (task, run_s) = (task.to_str().unwrap(), run.to_str().unwrap());
    let args = ["run", "--task", task, "--space", "mix-peft", "--budget", "2e-2", "--search-epochs", "1"];
    let rest = ["--retrain-epochs", "1", "--batch-size", "8", "--lr", "2e-2", "--out", run_s, "-q"];
    let report = ok(s3pet(&[&args[..], &rest[..]].concat(), d.path()));
    assert_eq!(report["backbone_params"], 36_480);
    assert!(report["structure"]["total_params"].as_i64().unwrap() <= 729, "{}", report["structure"]);
    let eval = ok(s3pet(&["eval", "--run", run_s, "--split", "test"], d.path()));
    assert_eq!(eval["metrics"], report["test"], "eval gives the run's test metrics");
    let input = d.path().join("in.tsv");
    std::fs::write(&input, "cat dog cat dog\tcat dog cat dog\nsun moon\tred blue\n").unwrap();
    let pred = lines(s3pet(&["predict", "--run", run_s, "--input", input.to_str().unwrap()], d.path()));
    assert_eq!(pred.len(), 2);
    for p in &pred {
        assert!(["different", "same"].contains(&p["label"].as_str().unwrap()), "{p}");
        assert!(p["text"].is_string() && p["logits"].as_array().unwrap().len() == 2, "{p}");
    }
    let peft = d.path().join("peft");
    ok(s3pet(&["export", "--run", run_s, "--format", "peft", "--out", peft.to_str().unwrap()], d.path()));
    let cfg = read_json(&peft.join("adapter_config.json"));
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    let back = d.path().join("back");
    let imp = ["import-peft", peft.to_str().unwrap(), "--out", back.to_str().unwrap(), "--max-length", "512"];
    ok(s3pet(&imp, d.path()));
    let again = lines(s3pet(
        &["predict", "--run", back.to_str().unwrap(), "--input", input.to_str().unwrap()],
        d.path(),
    ));
    for (a, b) in pred.iter().zip(&again) {
        let (a, b) = (a["logits"].as_array().unwrap(), b["logits"].as_array().unwrap());
        for (x, y) in a.iter().zip(b) {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
    let merged = d.path().join("merged");
    ok(s3pet(&["merge", "--run", run_s, "--out", merged.to_str().unwrap()], d.path()));
    assert_eq!(read_json(&merged.join("config.json"))["architectures"][0], "LlamaForCausalLM");
    assert!(merged.join("tokenizer_config.json").is_file());
}

/// Full fine-tuning of the tiny Llama on ten conversations (both line forms) learns their replies: the
/// loss is on the reply tokens only, and greedy generation (KV cache) reproduces some of them.
#[test]
fn instruct_task_learns_its_replies() {
    let data = fixtures().join("data");
    let d = tempfile::tempdir().unwrap();
    let (task, run) = (fixtures().join("instruct_task.toml"), d.path().join("run"));
    let args = ["train", "--task", task.to_str().unwrap(), "--method", "full", "--lr", "1e-2"];
    let rest = [
        "--max-steps",
        "60",
        "--batch-size",
        "10",
        "--eval-every",
        "60",
        "--out",
        run.to_str().unwrap(),
        "-q",
    ];
    let report = ok(s3pet(&[&args[..], &rest[..]].concat(), &data));
    assert!(report["test"]["response_loglik"].as_f64().unwrap() < 0.0);
    let train = ok(s3pet(&["eval", "--run", run.to_str().unwrap(), "--split", "train"], &data));
    let em = train["metrics"]["exact_match"].as_f64().unwrap();
    assert!(em >= 50.0, "exact match on the training conversations: {train}");
    let ll = train["metrics"]["response_loglik"].as_f64().unwrap();
    assert!(ll > -1.0, "the replies are likely after training: {train}");
    let input = d.path().join("in.jsonl");
    // the conversations given as prompt / response (no system turn): predict's reply is the trained one
    let pairs = [
        ("Name a primary colour.", "Red"),
        ("Plural of cat?", "Cats"),
        ("Is oil a liquid?", "Yes"),
        ("Say hello.", "Hello"),
        ("Colour of the sky?", "Blue"),
    ];
    let text: String = pairs.iter().map(|(p, _)| format!("{{\"text_a\": \"{p}\"}}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let out =
        lines(s3pet(&["predict", "--run", run.to_str().unwrap(), "--input", input.to_str().unwrap()], &data));
    let hits = out.iter().zip(&pairs).filter(|(o, (_, r))| o["text"] == *r).count();
    assert!(hits >= 2, "{out:?}");
}

/// bf16 frozen matrices train; `--resume` of a decoder run reads its checkpoint and ends with its metrics.
#[test]
fn decoder_bf16_and_resume() {
    let d = task_dir();
    let task = d.path().join("task.toml");
    let train = |out: &Path, extra: &[&str]| {
        let args = ["train", "--task", task.to_str().unwrap(), "--method", "lora", "--batch-size", "8"];
        let rest =
            ["--max-train-examples", "16", "--max-eval-examples", "8", "--out", out.to_str().unwrap(), "-q"];
        s3pet(&[&args[..], &rest[..], extra].concat(), d.path())
    };
    let bf = ok(train(&d.path().join("bf16"), &["--epochs", "1", "--backbone-dtype", "bf16"]));
    let fp = ok(train(&d.path().join("fp32"), &["--epochs", "1"]));
    assert!(bf["dev"]["accuracy"].is_number() && fp["dev"]["accuracy"].is_number());
    let whole = ok(train(&d.path().join("whole"), &["--epochs", "2", "--checkpoint-every", "1"]));
    // --resume continues from checkpoint.safetensors (here: the last step) and ends where the run ended
    let resumed =
        ok(train(&d.path().join("whole"), &["--epochs", "2", "--checkpoint-every", "1", "--resume"]));
    assert_eq!(resumed["test"], whole["test"]);
    assert_eq!(resumed["steps"], whole["steps"]);
}
