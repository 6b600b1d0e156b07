//! `s3pet export` (PEFT and native) and `s3pet import-peft` on the tiny fixture model: round trips give
//! the same predictions, the files have PEFT's layout, unrepresentable structures are refused by name, and
//! a hand-written PEFT adapter imports to the model its formula describes. (Loading by real PEFT in
//! Python: tools/check_peft.py.)
mod common;
use common::{ok, read_json, s3pet, task_dir, tiny_dir};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const QUICK: [&str; 8] = ["--max-steps", "4", "--batch-size", "8", "--lr", "5e-3", "--threads", "1"];
const L0Q: &str = "encoder.layer.0.attention.self.query";
const L1V: &str = "encoder.layer.1.attention.self.value";

/// Writes a structure of `modules` and trains it for a few steps.
fn train(d: &tempfile::TempDir, name: &str, modules: Value) -> std::path::PathBuf {
    let st = d.path().join(format!("{name}.json"));
    let specs: Vec<s3pet::delta::ModuleSpec> = serde_json::from_value(modules.clone()).unwrap();
    let counted = s3pet::structure::with_counts(&specs, &common::tiny_cfg(false)).unwrap();
    let total: i64 = counted.iter().filter_map(|m| m.params).sum();
    let s = json!({"budget_params": total, "total_params": total, "modules": modules});
    std::fs::write(&st, s.to_string()).unwrap();
    let out = d.path().join(name);
    let task = d.path().join("task.toml");
    let args = [
        &["train", "--task", task.to_str().unwrap(), "--structure", st.to_str().unwrap()][..],
        &["--out", out.to_str().unwrap()],
        &QUICK[..],
    ]
    .concat();
    ok(s3pet(&args, d.path()));
    out
}

fn predict(run: &Path, d: &tempfile::TempDir) -> Vec<Value> {
    let tsv = d.path().join("in.tsv");
    std::fs::write(
        &tsv,
        "the man is in the house\tthe man is in the house\nthe city of water\tthe new world\npeople said\n",
    )
    .unwrap();
    let p = s3pet(&["predict", "--run", run.to_str().unwrap(), "--input", tsv.to_str().unwrap()], d.path());
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    String::from_utf8_lossy(&p.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn logits(v: &[Value]) -> Vec<f64> {
    v.iter().flat_map(|l| l["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn mixed_modules() -> Value {
    json!([
        {"site": L0Q, "type": "lora", "rank": 4, "alpha": 8.0},
        {"site": L0Q, "type": "bitfit"},
        {"site": L1V, "type": "lora", "rank": 2, "alpha": 3.0},
        {"site": "encoder.layer.1.intermediate.dense", "type": "lora", "rank": 4, "alpha": 8.0},
        {"site": "embeddings.LayerNorm", "type": "lnfit"},
        {"site": "embeddings.LayerNorm", "type": "bitfit"},
        {"site": "encoder.layer.0.output.LayerNorm", "type": "lnfit"},
        {"site": "encoder.layer.1.attention.output.LayerNorm", "type": "bitfit"}
    ])
}

#[test]
fn export_import_round_trip_gives_the_same_predictions() {
    let d = task_dir();
    let run = train(&d, "mix", mixed_modules());
    let peft = d.path().join("peft");
    let e = ok(s3pet(&["export", "--run", run.to_str().unwrap(), "--out", peft.to_str().unwrap()], d.path()));
    assert_eq!(e["adapters"].as_array().unwrap().len(), 2, "{e}");
    // LoRA adapter: PEFT's keys and config
    let cfg = read_json(&peft.join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(cfg["target_modules"], json!([L0Q, L1V, "encoder.layer.1.intermediate.dense"]));
    assert_eq!(cfg["rank_pattern"], json!({L1V: 2}));
    assert_eq!(cfg["alpha_pattern"], json!({L1V: 3.0}));
    assert_eq!(cfg["modules_to_save"], json!(["classifier"]));
    assert_eq!(cfg["lora_bias"], true);
    assert_eq!(cfg["bias"], "none");
    let keys: HashMap<String, Tensor> =
        Tensor::read_safetensors(peft.join("adapter_model.safetensors")).unwrap().into_iter().collect();
    let k = |site: &str, leaf: &str| format!("base_model.model.bert.{site}.{leaf}");
    assert_eq!(keys[&k(L1V, "lora_A.weight")].size(), [2, 32]);
    assert_eq!(keys[&k(L1V, "lora_B.weight")].size(), [32, 2]);
    assert_eq!(keys[&k(L0Q, "lora_B.bias")].size(), [32]);
    assert_eq!(keys["base_model.model.classifier.weight"].size(), [2, 32]);
    assert_eq!(keys.len(), 3 * 3 + 2);
    // BitFit on the LoRA Linear is PEFT's lora_B.bias, which PEFT scales by alpha / r (8 / 4)
    let w = read_safetensors_map(&run.join("weights.safetensors"));
    let bitfit = &w[&format!("{L0Q}.bitfit")];
    assert!(bitfit.abs().max().double_value(&[]) > 0.0, "training moved the BitFit bias");
    let diff = (&keys[&k(L0Q, "lora_B.bias")] * 2.0 - bitfit).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "lora_B.bias = bitfit / scale ({diff})");
    // LN_TUNING adapter in ln_tuning/: the norms' own weight and bias with the deltas folded in
    let ln = read_json(&peft.join("ln_tuning/adapter_config.json"));
    assert_eq!(ln["peft_type"], "LN_TUNING");
    assert_eq!(
        ln["target_modules"],
        json!([
            "embeddings.LayerNorm",
            "encoder.layer.0.output.LayerNorm",
            "encoder.layer.1.attention.output.LayerNorm"
        ])
    );
    let lk = read_safetensors_map(&peft.join("ln_tuning/adapter_model.safetensors"));
    let base = read_safetensors_map(&tiny_dir().join("model.safetensors"));
    let emb_w = &lk[&k("embeddings.LayerNorm", "ln_tuning_layers.weight")];
    let want = &base["bert.embeddings.LayerNorm.weight"] + &w["embeddings.LayerNorm.lnfit"];
    assert!((emb_w - want).abs().max().double_value(&[]) < 1e-6);
    assert_eq!(lk.len(), 3 * 2 + 2);

    // import (task from s3pet_export.json) and predict: the same logits
    let back = d.path().join("back");
    let i = ok(s3pet(&["import-peft", peft.to_str().unwrap(), "--out", back.to_str().unwrap()], d.path()));
    assert_eq!(i["task"], "same");
    let (p0, p1) = (predict(&run, &d), predict(&back, &d));
    let labels = |v: &[Value]| v.iter().map(|l| l["label"].clone()).collect::<Vec<_>>();
    assert_eq!(labels(&p0), labels(&p1));
    let diff = max_diff(&logits(&p0), &logits(&p1));
    assert!(diff < 1e-5, "round-trip logits differ by {diff}");
    // the imported structure is the original one
    let s0 = read_json(&run.join("structure.json"));
    let s1 = read_json(&back.join("structure.json"));
    assert_eq!(s0["total_params"], s1["total_params"]);
    let set = |s: &Value| {
        let mut v: Vec<String> = s["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{} {} {} {}", m["site"], m["type"], m["rank"], m["alpha"]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(set(&s0), set(&s1));
    // the imported run evaluates, merges and exports again
    ok(s3pet(&["eval", "--run", back.to_str().unwrap()], d.path()));
    ok(s3pet(
        &["merge", "--run", back.to_str().unwrap(), "--out", d.path().join("m").to_str().unwrap()],
        d.path(),
    ));

    // native export: a copy of the run that predicts exactly the same
    let nat = d.path().join("native");
    let n = ok(s3pet(
        &["export", "--run", run.to_str().unwrap(), "--format", "native", "--out", nat.to_str().unwrap()],
        d.path(),
    ));
    assert_eq!(n["files"], json!(["config.json", "structure.json", "weights.safetensors", "report.json"]));
    assert_eq!(logits(&predict(&nat, &d)), logits(&p0));
    let again = s3pet(&["export", "--run", run.to_str().unwrap(), "--out", nat.to_str().unwrap()], d.path());
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
}

fn read_safetensors_map(p: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).into_iter().collect()
}

#[test]
fn export_refuses_what_peft_cannot_represent() {
    let d = task_dir();
    let run = train(
        &d,
        "bad",
        json!([
            {"site": L0Q, "type": "lora", "rank": 2},
            {"site": "encoder.layer.0.output.dense", "type": "lra"},
            {"site": "encoder.layer.1.attention.output.dense", "type": "adapter", "bottleneck": 4},
            {"site": "encoder.layer.1.attention.self.key", "type": "bitfit"}
        ]),
    );
    let out = d.path().join("x");
    let e = s3pet(&["export", "--run", run.to_str().unwrap(), "--out", out.to_str().unwrap()], d.path());
    assert!(!e.status.success());
    let msg = String::from_utf8_lossy(&e.stderr);
    for needle in [
        "2 module(s)",
        "lra at `encoder.layer.0.output.dense`",
        "adapter at `encoder.layer.1.attention.output.dense`",
        "--format native",
    ] {
        assert!(msg.contains(needle), "error should contain `{needle}`: {msg}");
    }
    assert!(!msg.contains(L0Q), "LoRA is representable: {msg}");
    assert!(!msg.contains("self.key"), "BitFit on a Linear without LoRA is representable: {msg}");
    assert!(!out.exists(), "nothing is written");
    // the lossless format takes it
    ok(s3pet(
        &["export", "--run", run.to_str().unwrap(), "--format", "native", "--out", out.to_str().unwrap()],
        d.path(),
    ));
    assert_eq!(logits(&predict(&out, &d)), logits(&predict(&run, &d)));
}

#[test]
fn bitfit_on_a_linear_without_lora_exports_as_a_rank_1_lora_bias_and_imports_back() {
    let d = task_dir();
    let key = "encoder.layer.1.attention.self.key";
    let ffn = "encoder.layer.0.intermediate.dense";
    let modules = json!([
        {"site": L0Q, "type": "lora", "rank": 4, "alpha": 8.0},
        {"site": key, "type": "bitfit"},
        {"site": ffn, "type": "bitfit"},
        {"site": "encoder.layer.0.output.LayerNorm", "type": "bitfit"}
    ]);
    let run = train(&d, "bias", modules);
    let peft = d.path().join("peft");
    let export = |extra: &[&str]| {
        let args = [&["export", "--run", run.to_str().unwrap(), "--out", peft.to_str().unwrap()][..], extra];
        s3pet(&args.concat(), d.path())
    };
    ok(export(&[]));
    let cfg = read_json(&peft.join("adapter_config.json"));
    assert_eq!(cfg["target_modules"], json!([L0Q, key, ffn]));
    assert_eq!((cfg["r"].clone(), cfg["lora_alpha"].clone()), (json!(1), json!(1.0)), "{cfg}");
    assert_eq!(cfg["rank_pattern"], json!({L0Q: 4}));
    assert_eq!(cfg["alpha_pattern"], json!({L0Q: 8.0}));
    assert_eq!(cfg["lora_bias"], true);
    let saved = read_safetensors_map(&peft.join("adapter_model.safetensors"));
    let w = read_safetensors_map(&run.join("weights.safetensors"));
    let k = |site: &str, leaf: &str| format!("base_model.model.bert.{site}.{leaf}");
    for (site, d_in, d_out) in [(key, 32, 32), (ffn, 32, 64)] {
        let (a, b) = (&saved[&k(site, "lora_A.weight")], &saved[&k(site, "lora_B.weight")]);
        assert_eq!((a.size(), b.size()), (vec![1, d_in], vec![d_out, 1]));
        assert_eq!(a.abs().max().double_value(&[]) + b.abs().max().double_value(&[]), 0.0, "zero factors");
        let bias = &w[&format!("{site}.bitfit")];
        assert!(bias.abs().max().double_value(&[]) > 0.0, "training moved the BitFit bias");
        assert!(saved[&k(site, "lora_B.bias")].equal(bias), "scale 1: lora_B.bias is BitFit's b exactly");
    }
    // import: the zero-factor LoRA is BitFit again, the same structure and predictions
    let back = d.path().join("back");
    ok(s3pet(&["import-peft", peft.to_str().unwrap(), "--out", back.to_str().unwrap()], d.path()));
    let mods = |r: &Path| {
        let mut v: Vec<String> = read_json(&r.join("structure.json"))["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{} {} {}", m["site"], m["type"], m["rank"]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(mods(&back), mods(&run));
    let diff = max_diff(&logits(&predict(&run, &d)), &logits(&predict(&back, &d)));
    assert!(diff < 1e-5, "round-trip logits differ by {diff}");
    // --overwrite replaces an earlier export whole; a file it did not write is kept and refused
    ok(export(&["--overwrite"]));
    std::fs::write(peft.join("notes.md"), "mine").unwrap();
    let refused = export(&["--overwrite"]);
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && msg.contains("notes.md"), "{msg}");
    assert!(peft.join("notes.md").is_file() && peft.join("adapter_config.json").is_file());
    let left: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".peft"))
        .collect();
    assert!(left.is_empty(), "no temporary directory left: {left:?}");
}

/// A minimal adapter as PEFT saves it, written here: rsLoRA (scale alpha / sqrt r), one site, a classifier.
fn hand_written_adapter(dir: &Path, rslora: bool) -> (Tensor, Tensor, Tensor, Tensor) {
    std::fs::create_dir_all(dir).unwrap();
    tch::manual_seed(7);
    let a = Tensor::randn([4, 32], (Kind::Float, Device::Cpu)) * 0.3;
    let b = Tensor::randn([32, 4], (Kind::Float, Device::Cpu)) * 0.3;
    let cw = Tensor::randn([2, 32], (Kind::Float, Device::Cpu));
    let cb = Tensor::randn([2], (Kind::Float, Device::Cpu));
    let named = [
        (format!("base_model.model.bert.{L1V}.lora_A.weight"), a.shallow_clone()),
        (format!("base_model.model.bert.{L1V}.lora_B.weight"), b.shallow_clone()),
        ("base_model.model.classifier.weight".to_string(), cw.shallow_clone()),
        ("base_model.model.classifier.bias".to_string(), cb.shallow_clone()),
    ];
    Tensor::write_safetensors(&named, dir.join("adapter_model.safetensors")).unwrap();
    let cfg = json!({"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 4, "lora_alpha": 4,
                     "target_modules": ["value"], "use_rslora": rslora, "modules_to_save": ["classifier"]});
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    (a, b, cw, cb)
}

#[test]
fn a_hand_written_peft_adapter_imports_to_its_formula() {
    let d = task_dir();
    for rslora in [false, true] {
        let dir = d.path().join(format!("adapter{rslora}"));
        let (a, b, cw, cb) = hand_written_adapter(&dir, rslora);
        let run = d.path().join(format!("imp{rslora}"));
        let r = ok(s3pet(
            &[
                "import-peft",
                dir.to_str().unwrap(),
                "--task",
                d.path().join("task.toml").to_str().unwrap(),
                "--out",
                run.to_str().unwrap(),
            ],
            d.path(),
        ));
        assert_eq!(r["modules"], 1);
        assert_eq!(r["delta_params"], 4 * 64);
        // the model the adapter describes: W + scale B A at the value projection, its classifier
        let scale = if rslora { 4.0 / 2.0 } else { 4.0 / 4.0 };
        let mut base = read_safetensors_map(&tiny_dir().join("model.safetensors"));
        let wk = format!("bert.{L1V}.weight");
        let merged = &base[&wk] + b.matmul(&a) * scale;
        base.insert(wk, merged);
        base.insert("classifier.weight".into(), cw.shallow_clone());
        base.insert("classifier.bias".into(), cb.shallow_clone());
        let tensors: Vec<(String, Tensor)> = base
            .into_iter()
            .map(|(k, t)| (k.strip_prefix("bert.").map(str::to_string).unwrap_or(k), t))
            .collect();
        let w = s3pet::backbone::Weights::from_tensors(Path::new("formula"), tensors, Device::Cpu);
        let cfg = common::tiny_cfg(false);
        let head = s3pet::model::HeadInit::FromCheckpoint { num_labels: 2 };
        let model = s3pet::model::Model::build(&cfg, &w, &[], false, head, 0).unwrap();
        let md = s3pet::model::ModelDir::open(&tiny_dir()).unwrap();
        let enc = s3pet::tokenize::TextEncoder::load(&md.tokenizer_path(), 128).unwrap();
        let got = logits(&predict(&run, &d));
        let mut want = Vec::new();
        for (x, y) in [
            ("the man is in the house", Some("the man is in the house")),
            ("the city of water", Some("the new world")),
            ("people said", None),
        ] {
            let row = enc.encode_pair(x, y).unwrap();
            let item = s3pet::tokenize::Encoded {
                rows: vec![row],
                target: s3pet::data::Target::Class(0),
                group: None,
            };
            let batch = s3pet::batch::Batch::new(&[&item], Device::Cpu);
            let l = tch::no_grad(|| model.logits(&batch, &s3pet::delta::Ctx::eval())).reshape([-1]);
            want.extend(Vec::<f32>::try_from(&l).unwrap().into_iter().map(f64::from));
        }
        let diff = max_diff(&got, &want);
        assert!(diff < 1e-5, "rslora {rslora}: imported logits {got:?} vs formula {want:?} ({diff})");
    }
}

#[test]
fn import_errors_name_the_file_or_key() {
    let d = task_dir();
    let task = d.path().join("task.toml");
    let dir = d.path().join("adapter");
    let _ = hand_written_adapter(&dir, false);
    let run = d.path().join("r");
    let import = |extra: &[&str]| {
        let args =
            [&["import-peft", dir.to_str().unwrap(), "--out", run.to_str().unwrap()][..], extra].concat();
        let o = s3pet(&args, d.path());
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    // no task and no s3pet_export.json
    assert!(import(&[]).contains("--task"));
    // a task with 3 labels
    let three = d.path().join("three.toml");
    let spec =
        std::fs::read_to_string(&task).unwrap().replace("[\"different\", \"same\"]", "[\"a\", \"b\", \"c\"]");
    std::fs::write(&three, spec).unwrap();
    assert!(import(&["--task", three.to_str().unwrap()]).contains("2 labels"));
    // an unsupported adapter type names the config file
    let cfg = dir.join("adapter_config.json");
    std::fs::write(&cfg, json!({"peft_type": "IA3"}).to_string()).unwrap();
    let msg = import(&["--task", task.to_str().unwrap()]);
    assert!(msg.contains("adapter_config.json") && msg.contains("IA3"), "{msg}");
    // a rank that disagrees with the config names the tensor
    std::fs::write(&cfg, json!({"peft_type": "LORA", "r": 8, "lora_alpha": 8}).to_string()).unwrap();
    let msg = import(&["--task", task.to_str().unwrap()]);
    assert!(msg.contains(&format!("bert.{L1V}.lora_A.weight")) && msg.contains("rank 4"), "{msg}");
    // not an adapter directory
    std::fs::remove_file(&cfg).unwrap();
    assert!(import(&["--task", task.to_str().unwrap()]).contains("not a PEFT adapter directory"));
    assert!(!run.exists(), "nothing is written on bad input");
}

/// PEFT's LoRA knobs on `train --method lora`: rank, alpha, dropout, target modules (names and a
/// regex) and a rank pattern reach structure.json, the exported adapter_config.json, and come back
/// through import-peft with the same predictions.
#[test]
fn lora_knobs_reach_the_structure_and_round_trip_through_peft() {
    let d = task_dir();
    let task = d.path().join("task.toml");
    let out = d.path().join("knobs");
    let args = [
        &["train", "--task", task.to_str().unwrap(), "--method", "lora", "--out", out.to_str().unwrap()][..],
        &["--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--target-modules", "query,key"],
        &["--rank-pattern", "layer.1.attention.self.key=2"],
        &QUICK[..],
    ]
    .concat();
    ok(s3pet(&args, d.path()));
    let st = read_json(&out.join("structure.json"));
    let mods = st["modules"].as_array().unwrap();
    assert_eq!(mods.len(), 4, "query and key of 2 layers: {st}");
    for m in mods {
        let site = m["site"].as_str().unwrap();
        assert!(site.ends_with(".query") || site.ends_with(".key"), "{site}");
        let want_r = if site == "encoder.layer.1.attention.self.key" { 2 } else { 4 };
        assert_eq!(
            (m["rank"].as_i64(), m["alpha"].as_f64(), m["dropout"].as_f64()),
            (Some(want_r), Some(8.0), Some(0.1)),
            "{m}"
        );
    }
    let peft = d.path().join("knobs-peft");
    ok(s3pet(&["export", "--run", out.to_str().unwrap(), "--out", peft.to_str().unwrap()], d.path()));
    let cfg = read_json(&peft.join("adapter_config.json"));
    assert_eq!(
        (cfg["r"].as_i64(), cfg["lora_alpha"].as_f64(), cfg["lora_dropout"].as_f64()),
        (Some(4), Some(8.0), Some(0.1))
    );
    assert_eq!(cfg["rank_pattern"], json!({"encoder.layer.1.attention.self.key": 2}));
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 4);
    let back = d.path().join("knobs-back");
    ok(s3pet(&["import-peft", peft.to_str().unwrap(), "--out", back.to_str().unwrap()], d.path()));
    assert_eq!(read_json(&back.join("structure.json"))["modules"], st["modules"], "import keeps the knobs");
    assert!(max_diff(&logits(&predict(&out, &d)), &logits(&predict(&back, &d))) < 1e-6);
    // knobs that a method without LoRA cannot use are refused, naming the option
    let bad = s3pet(
        &["train", "--task", task.to_str().unwrap(), "--method", "bitfit", "--lora-r", "2", "--out", "x"],
        d.path(),
    );
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--lora-r"));
}

/// `run --export peft DIR` writes the adapter of the retrained structure at the end of the run; a space
/// with modules PEFT cannot hold is refused before anything runs.
#[test]
fn run_exports_peft_at_the_end() {
    let d = task_dir();
    let task = d.path().join("task.toml");
    let (out, peft) = (d.path().join("run"), d.path().join("run-peft"));
    let base =
        ["run", "--task", task.to_str().unwrap(), "--budget-params", "400", "--out", out.to_str().unwrap()];
    let r = ok(s3pet(
        &[&base[..], &["--space", "mix-peft", "--export", "peft", peft.to_str().unwrap()], &QUICK[..]]
            .concat(),
        d.path(),
    ));
    assert!(r["export"]["adapters"].as_array().is_some_and(|a| !a.is_empty()), "{r}");
    let back = d.path().join("run-back");
    ok(s3pet(&["import-peft", peft.to_str().unwrap(), "--out", back.to_str().unwrap()], d.path()));
    assert!(max_diff(&logits(&predict(&out, &d)), &logits(&predict(&back, &d))) < 1e-5);
    let other = d.path().join("run-mix");
    let bad = s3pet(
        &[
            "run",
            "--task",
            task.to_str().unwrap(),
            "--budget-params",
            "400",
            "--space",
            "mix",
            "--out",
            other.to_str().unwrap(),
            "--export",
            "peft",
            "p",
        ],
        d.path(),
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("--export") && err.contains("mix-peft"), "{err}");
    assert!(!other.exists(), "nothing is written when the export is refused");
}

/// A directory that is either absent or holds exactly what a complete write of `files` holds.
fn absent_or_complete(dir: &Path, files: &[&str]) -> bool {
    !dir.exists()
        || files.iter().all(|f| dir.join(f).is_file() && std::fs::metadata(dir.join(f)).unwrap().len() > 0)
}

/// `export`, `merge` and `import-peft` killed at random moments never leave a directory that looks
/// complete but is not: the output is absent or whole (it is written into a hidden sibling and renamed).
#[test]
fn killed_exports_merges_and_imports_leave_nothing_half_written() {
    use rand::{Rng, SeedableRng};
    let d = task_dir();
    let run = train(&d, "mix", mixed_modules());
    let peft = d.path().join("peft");
    ok(s3pet(&["export", "--run", run.to_str().unwrap(), "--out", peft.to_str().unwrap()], d.path()));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let jobs: [(&str, Vec<String>, &[&str]); 3] = [
        (
            "export",
            vec!["export".into(), "--run".into(), run.display().to_string()],
            &["adapter_config.json", "adapter_model.safetensors"],
        ),
        (
            "merge",
            vec!["merge".into(), "--run".into(), run.display().to_string()],
            &["model.safetensors", "config.json", "tokenizer.json"],
        ),
        (
            "import",
            vec!["import-peft".into(), peft.display().to_string()],
            &["config.json", "structure.json", "weights.safetensors"],
        ),
    ];
    let (mut killed, mut finished) = (0, 0);
    for (name, args, files) in &jobs {
        for i in 0..8u64 {
            let out = d.path().join(format!("{name}-{i}"));
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"));
            c.args(args).args(["--out", out.to_str().unwrap()]).env("S3PET_MODEL", tiny_dir());
            let mut child =
                c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
            // spread over the command's life: the early kills land before or while it writes
            std::thread::sleep(std::time::Duration::from_millis(i * 150 + rng.gen_range(0..150)));
            match child.try_wait().unwrap() {
                Some(_) => finished += 1,
                None => {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    killed += 1;
                }
            }
            assert!(absent_or_complete(&out, files), "{name} killed at attempt {i} left {}", out.display());
        }
    }
    assert!(killed > 0, "no kill landed ({finished} finished)");
    eprintln!("{killed} killed, {finished} finished before the kill");
}
