//! Every subcommand for a few steps on the tiny fixture model and a synthetic task; parse what it wrote.
mod common;
use common::{ok, read_json, s3pet, task_dir};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const QUICK: [&str; 8] = ["--max-steps", "3", "--batch-size", "8", "--eval-every", "2", "--threads", "1"];

fn task(d: &tempfile::TempDir) -> String {
    d.path().join("task.toml").display().to_string()
}

#[test]
fn train_then_eval_write_the_run_directory() {
    let d = task_dir();
    let out = d.path().join("run");
    let o = out.to_str().unwrap();
    let r = ok(s3pet(
        &[&["train", "--task", &task(&d), "--method", "lora", "--out", o], &QUICK[..]].concat(),
        d.path(),
    ));
    for k in ["task", "method", "seed", "backbone_params", "delta_params", "head_params", "dev", "test"] {
        assert!(r.get(k).is_some(), "report lacks {k}: {r}");
    }
    // LoRA r8 on query and value of 2 layers, hidden 32: 4 * 8 * 64
    assert_eq!(r["delta_params"], 2048);
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["test"], r["test"]);
    let structure = read_json(&out.join("structure.json"));
    assert_eq!(structure["total_params"], 2048);
    assert_eq!(structure["modules"].as_array().unwrap().len(), 4);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(evals.iter().any(|e| e["split"] == "dev" && e["step"] == 2), "{lines}");
    assert!(evals.iter().any(|e| e["split"] == "test"));
    assert!(out.join("weights.safetensors").is_file() && out.join("config.json").is_file());
    // eval rebuilds the model from the run's files and gets the same test metrics
    let e = ok(s3pet(&["eval", "--run", o], d.path()));
    assert_eq!(e["metrics"], r["test"]);
    // predict: TSV (one or two columns) and JSONL give one JSON object per line, from the same weights
    let tsv = d.path().join("in.tsv");
    std::fs::write(&tsv, "the man is in the house\tthe man is in the house\nthe city of water\n").unwrap();
    let p = s3pet(&["predict", "--run", o, "--input", tsv.to_str().unwrap()], d.path());
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&p.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert!(["same", "different"].contains(&l["label"].as_str().unwrap()), "{l}");
        assert_eq!(l["logits"].as_array().unwrap().len(), 2);
    }
    let jsonl = d.path().join("in.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text_a\": \"the man is in the house\", \"text_b\": \"the man is in the house\"}\n\
         {\"text_a\": \"the city of water\"}\n",
    )
    .unwrap();
    let pj = s3pet(&["predict", "--run", o, "--input", jsonl.to_str().unwrap()], d.path());
    // the same rows in the same batch: bit-identical predictions from TSV and JSONL
    let from_jsonl: Vec<Value> =
        String::from_utf8_lossy(&pj.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(from_jsonl, lines, "the same inputs give the same predictions from TSV and JSONL");
    let bad = d.path().join("bad.tsv");
    std::fs::write(&bad, "a\tb\tc\n").unwrap();
    let pb = s3pet(&["predict", "--run", o, "--input", bad.to_str().unwrap()], d.path());
    assert!(!pb.status.success() && String::from_utf8_lossy(&pb.stderr).contains("bad.tsv:1"));
    // merge: the folded model, loaded as a plain checkpoint (bert.* + classifier), predicts the same logits
    let merged = d.path().join("merged");
    ok(s3pet(&["merge", "--run", o, "--out", merged.to_str().unwrap()], d.path()));
    let cfg: Value = read_json(&merged.join("config.json"));
    assert_eq!(cfg["architectures"][0], "BertForSequenceClassification");
    assert_eq!(cfg["id2label"]["1"], "same");
    let md = s3pet::model::ModelDir::open(&merged).unwrap();
    let w = md.load_weights(tch::Device::Cpu).unwrap();
    let plain = s3pet::model::Model::build(
        &md.cfg,
        &w,
        &[],
        false,
        s3pet::model::HeadInit::FromCheckpoint { num_labels: 2 },
        0,
    )
    .unwrap();
    let enc = s3pet::tokenize::TextEncoder::load(&md.tokenizer_path(), 128).unwrap();
    let row = enc.encode_pair("the man is in the house", Some("the man is in the house")).unwrap();
    let item =
        s3pet::tokenize::Encoded { rows: vec![row], target: s3pet::data::Target::Class(0), group: None };
    let b = s3pet::batch::Batch::new(&[&item], tch::Device::Cpu);
    let got: Vec<f32> =
        Vec::try_from(&tch::no_grad(|| plain.logits(&b, &s3pet::delta::Ctx::eval())).reshape([-1])).unwrap();
    let want: Vec<f64> = lines[0]["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-4, "merged logits {got:?} vs unmerged {want:?}");
    }
    // an existing run directory is not overwritten silently
    let again = s3pet(&[&["train", "--task", &task(&d), "--out", o], &QUICK[..]].concat(), d.path());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
}

#[test]
fn inspect_reports_counts() {
    let d = task_dir();
    let r = ok(s3pet(&["inspect", "--method", "lora", "--json"], d.path()));
    assert_eq!(r["delta_params"], 2048);
    assert!(r["backbone_params"].as_i64().unwrap() > 0);
    let s = ok(s3pet(&["inspect", "--space", "mix", "--budget-params", "500", "--json"], d.path()));
    assert_eq!(s["candidates"], 38);
    assert_eq!(s["candidate_params"], 2060);
    assert_eq!(s["budget_params"], 500);
    let bad = s3pet(&["inspect", "--space", "mix", "--budget-params", "10"], d.path());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("smallest candidate"));
}

fn search(d: &tempfile::TempDir, name: &str, order: &str) -> (Value, String) {
    let out = d.path().join(name);
    let o = out.to_str().unwrap();
    let t = task(d);
    let args = [
        &["search", "--task", &t, "--space", "mix", "--budget-params", "500", "--order", order, "--out", o],
        &QUICK[..],
    ]
    .concat();
    let r = ok(s3pet(&args, d.path()));
    (r, std::fs::read_to_string(out.join("structure.json")).unwrap())
}

#[test]
fn search_is_deterministic_and_within_budget() {
    let d = task_dir();
    for order in ["1", "2"] {
        let (r, s1) = search(&d, &format!("s{order}a"), order);
        let (_, s2) = search(&d, &format!("s{order}b"), order);
        assert_eq!(s1, s2, "order {order}: the same seed gives the same structure");
        let s: Value = serde_json::from_str(&s1).unwrap();
        assert!(s["total_params"].as_i64().unwrap() <= 500);
        assert_eq!(s["budget_params"], 500);
        assert_eq!(r["search"]["steps"], 3);
        let alphas = std::fs::read_to_string(d.path().join(format!("s{order}a/alphas.jsonl"))).unwrap();
        let first: Value = serde_json::from_str(alphas.lines().next().unwrap()).unwrap();
        assert_eq!(first["p"].as_array().unwrap().len(), 38);
        let tsv = std::fs::read_to_string(d.path().join(format!("s{order}a/candidates.tsv"))).unwrap();
        assert_eq!(tsv.lines().count(), 39);
    }
    // retrain the searched structure
    let out = d.path().join("re");
    let st = d.path().join("s2a/structure.json");
    let t = task(&d);
    let args = [
        &["retrain", "--task", &t, "--structure", st.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &QUICK[..],
    ]
    .concat();
    let r = ok(s3pet(&args, d.path()));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&st).unwrap()).unwrap();
    assert_eq!(r["delta_params"], s["total_params"]);
}

#[test]
fn run_random_and_structure_random() {
    let d = task_dir();
    let out = d.path().join("rr");
    let t = task(&d);
    let args = [
        &[
            "run",
            "--task",
            &t,
            "--strategy",
            "random",
            "--space",
            "mix",
            "--budget-params",
            "500",
            "--out",
            out.to_str().unwrap(),
        ],
        &QUICK[..],
    ]
    .concat();
    let r = ok(s3pet(&args, d.path()));
    assert!(r["delta_params"].as_i64().unwrap() <= 500);
    assert!(r["retrain"]["test"].is_object() && r["test"].is_object());
    let f1 = d.path().join("r1.json");
    let f2 = d.path().join("r2.json");
    for f in [&f1, &f2] {
        ok(s3pet(
            &[
                "structure",
                "random",
                "--space",
                "mix",
                "--budget-params",
                "700",
                "--seed",
                "9",
                "--out",
                f.to_str().unwrap(),
            ],
            d.path(),
        ));
    }
    assert_eq!(std::fs::read_to_string(&f1).unwrap(), std::fs::read_to_string(&f2).unwrap());
}

#[test]
fn run_s3pet_reports_both_phases() {
    let d = task_dir();
    let out = d.path().join("rs");
    let t = task(&d);
    let args = [
        &[
            "run",
            "--task",
            &t,
            "--space",
            "lora",
            "--budget-params",
            "300",
            "--order",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        &QUICK[..],
    ]
    .concat();
    let r = ok(s3pet(&args, d.path()));
    assert!(r["search"]["seconds"].as_f64().unwrap() > 0.0);
    // how the search's steps ran: null where no CUDA graphs run (the CPU), else every step counted once
    let graphs = r["search"].get("cuda_graphs").expect("the search reports cuda_graphs");
    let steps = r["search"]["steps"].as_u64().unwrap();
    assert!(
        graphs.is_null()
            || graphs["replayed_steps"].as_u64().unwrap() + graphs["eager_steps"].as_u64().unwrap() == steps,
        "{graphs}"
    );
    assert!(r["retrain"]["train_seconds"].as_f64().unwrap() > 0.0);
    assert!(r["structure"]["total_params"].as_i64().unwrap() <= 300);
    assert!(out.join("alphas.jsonl").is_file() && out.join("candidates.tsv").is_file());
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    let d = task_dir();
    let o = d.path().join("x");
    let t = task(&d);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--task", "nosuchtask", "--out", o.to_str().unwrap()], "nosuchtask"),
        (vec!["train", "--task", &t, "--method", "prefix", "--out", o.to_str().unwrap()], "prefix"),
    ];
    for (args, needle) in cases {
        let out = s3pet(&args, d.path());
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: error should name `{needle}`: {err}");
    }
    // a structure with low-rank adapters cannot be merged into plain weights: a clear refusal
    let lra = d.path().join("lra");
    ok(s3pet(
        &[&["train", "--task", &t, "--method", "lra", "--out", lra.to_str().unwrap()], &QUICK[..]].concat(),
        d.path(),
    ));
    let m = s3pet(
        &["merge", "--run", lra.to_str().unwrap(), "--out", d.path().join("m").to_str().unwrap()],
        d.path(),
    );
    assert!(!m.status.success());
    assert!(String::from_utf8_lossy(&m.stderr).contains("cannot be folded"));
    let missing = Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(["train", "--task", &task(&d), "--out", o.to_str().unwrap(), "--model", "/nonexistent/model"])
        .env("S3PET_DATA", d.path())
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/model"));
}

/// `--config FILE`: the file's options apply, the command line wins, the resolved config is saved;
/// unknown keys name the file and the key; every shipped config parses for `run`.
#[test]
fn config_files_with_command_line_overrides() {
    let d = task_dir();
    let cfg = d.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "task = \"{}\"\nspace = \"mix\"\nbudget_params = 500\norder = 1\nseed = 7\nbatch-size = 8\n\
             max_steps = 2\nthreads = 1\nskip_nonfinite = true\n",
            task(&d)
        ),
    )
    .unwrap();
    let out = d.path().join("r");
    let c = cfg.to_str().unwrap();
    ok(s3pet(&["-q", "run", "--config", c, "--seed", "9", "--out", out.to_str().unwrap()], d.path()));
    let saved = read_json(&out.join("config.json"));
    let at = |v: &Value, k: &str| (v[k]["value"].clone(), v[k]["from"].clone());
    assert_eq!(at(&saved, "seed"), (9.into(), "cli".into()), "the command line wins: {saved}");
    assert_eq!(at(&saved, "batch_size"), (8.into(), "file".into()));
    assert_eq!(at(&saved, "skip_nonfinite"), (true.into(), "file".into()));
    assert_eq!(at(&saved, "eval_batch_size"), (64.into(), "default".into()));
    let search = &saved["search"]["value"];
    assert_eq!(at(search, "order"), (1.into(), "file".into()));
    assert_eq!(at(search, "budget_params"), (500.into(), "file".into()));
    std::fs::write(&cfg, "task = \"rte\"\nlearning_rate = 0.1\n").unwrap();
    let bad = s3pet(&["run", "--config", c, "--out", "x"], d.path());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("c.toml") && err.contains("learning_rate"), "{err}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        let o = s3pet(&["run", "--config", p.to_str().unwrap(), "--help"], d.path());
        assert!(o.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&o.stderr));
        n += 1;
    }
    assert!(n >= 6);
}

/// docs/CLI.md is what tools/gen_cli_doc.sh prints from this binary's --help, and names every command.
#[test]
fn cli_reference_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("tools/gen_cli_doc.sh"))
        .arg(env!("CARGO_BIN_EXE_s3pet"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = std::fs::read_to_string(root.join("docs/CLI.md")).unwrap();
    assert!(
        doc == String::from_utf8_lossy(&out.stdout),
        "docs/CLI.md is stale: run tools/gen_cli_doc.sh > docs/CLI.md"
    );
    let help = String::from_utf8_lossy(
        &Command::new(env!("CARGO_BIN_EXE_s3pet")).arg("--help").output().unwrap().stdout,
    )
    .to_string();
    let commands = help.split("Commands:").nth(1).unwrap().split("Options:").next().unwrap().to_string();
    for line in commands.lines().filter(|l| !l.trim().is_empty()) {
        let name = line.split_whitespace().next().unwrap();
        if name != "help" {
            assert!(doc.contains(&format!("## s3pet {name}")), "docs/CLI.md lacks `{name}`");
        }
    }
}

/// Text longer than the model's position table (the tiny model has 64 positions) is truncated to the
/// table, in training and in predict, instead of crashing; asking for --max-length 128 warns.
#[test]
fn inputs_longer_than_the_position_table_are_truncated() {
    let d = task_dir();
    let long = vec!["the man said"; 60].join(" "); // about 180 tokens
    let mut rows = String::from("a\tb\tlabel\n");
    for i in 0..16 {
        rows += &format!("{long}\t{long} {i}\t{}\n", if i % 2 == 0 { "same" } else { "different" });
    }
    std::fs::write(d.path().join("train.tsv"), &rows).unwrap();
    std::fs::write(d.path().join("dev.tsv"), &rows).unwrap();
    let out = d.path().join("long");
    let o = out.to_str().unwrap();
    let r = s3pet(
        &[&["train", "--task", &task(&d), "--method", "lora", "--out", o, "--max-length", "128"], &QUICK[..]]
            .concat(),
        d.path(),
    );
    let err = String::from_utf8_lossy(&r.stderr).to_string();
    ok(r);
    assert!(err.contains("max_position_embeddings 64"), "{err}");
    let p = Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(["predict", "--run", o, "--input", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(format!("{long}\t{long}\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&p.stdout).trim()).unwrap();
    assert!(line["label"].is_string(), "{line}");
}
