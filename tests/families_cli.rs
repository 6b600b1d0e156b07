//! Every downstream command on each encoder family's tiny fixture, a few steps each: inspect (every manual
//! method), train a structure mixing LoRA, BitFit (on a LoRA Linear, on a Linear without LoRA, on a norm)
//! and LNFit, eval, predict, PEFT export (the family's key prefix and head modules) and import (the same
//! predictions), merge (the family's task model, read back with the same logits), a searched run, and
//! a bf16 backbone. (Loading by real PEFT / transformers: tools/check_peft.py, tools/check_merge.py.)
mod common;
use common::{fixtures, ok, read_json, s3pet, task_dir};
use s3pet::backbone::{Family, ModelConfig};
use s3pet::delta::{Ctx, SiteShape};
use s3pet::model::{HeadInit, Model, ModelDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const QUICK: [&str; 10] =
    ["--max-steps", "4", "--batch-size", "8", "--eval-every", "2", "--lr", "5e-3", "--threads", "1"];
const INPUT: &str =
    "the man is in the house\tthe man is in the house\nthe city of water\tthe new world\npeople said\n";

struct Fam {
    dir: PathBuf,
    cfg: ModelConfig,
    d: tempfile::TempDir,
}

impl Fam {
    fn new(name: &str) -> Fam {
        let dir = fixtures().join(name);
        let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        Fam { dir, cfg, d: task_dir() }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.d.path().join(name)
    }

    /// `s3pet ARGS --model DIR` on the synthetic task.
    fn run(&self, args: &[&str]) -> Value {
        let model = ["--model", self.dir.to_str().unwrap()];
        ok(s3pet(&[args, &model[..]].concat(), self.d.path()))
    }

    fn task(&self) -> String {
        self.p("task.toml").display().to_string()
    }

    /// Linear and norm sites in model order.
    fn sites(&self) -> (Vec<String>, Vec<String>) {
        let (lin, norm): (Vec<_>, Vec<_>) =
            self.cfg.sites().into_iter().partition(|(_, sh)| matches!(sh, SiteShape::Linear { .. }));
        (lin.into_iter().map(|s| s.0).collect(), norm.into_iter().map(|s| s.0).collect())
    }

    /// LoRA of two ranks and alphas, BitFit on a LoRA Linear, on a Linear without LoRA and on a norm,
    /// LNFit on two norms.
    fn mixed_structure(&self) -> PathBuf {
        let (lin, norm) = self.sites();
        let modules = json!([
            {"site": lin[0], "type": "lora", "rank": 4, "alpha": 8.0},
            {"site": lin[0], "type": "bitfit"},
            {"site": lin[8], "type": "lora", "rank": 2, "alpha": 3.0},
            {"site": lin[7], "type": "bitfit"},
            {"site": norm[0], "type": "lnfit"},
            {"site": norm[0], "type": "bitfit"},
            {"site": norm[norm.len() - 1], "type": "lnfit"},
        ]);
        let specs: Vec<s3pet::delta::ModuleSpec> = serde_json::from_value(modules.clone()).unwrap();
        let total: i64 =
            s3pet::structure::with_counts(&specs, &self.cfg).unwrap().iter().filter_map(|m| m.params).sum();
        let path = self.p("mixed.json");
        std::fs::write(
            &path,
            json!({"budget_params": total, "total_params": total, "modules": modules}).to_string(),
        )
        .unwrap();
        path
    }

    fn predict(&self, run: &Path) -> Vec<f64> {
        let tsv = self.p("in.tsv");
        std::fs::write(&tsv, INPUT).unwrap();
        let p = s3pet(
            &["predict", "--run", run.to_str().unwrap(), "--input", tsv.to_str().unwrap()],
            self.d.path(),
        );
        assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
        let lines: Vec<Value> =
            String::from_utf8_lossy(&p.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines
            .iter()
            .flat_map(|l| l["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// `inspect --method M` for every manual method: LoRA r8 on the two query and value projections.
fn check_methods(f: &Fam) {
    for method in ["lora", "bitfit", "lnfit", "lra", "adapter", "full"] {
        let r = f.run(&["inspect", "--method", method, "--json"]);
        assert!(r["delta_params"].as_i64().unwrap() > 0, "{method}: {r}");
        if method == "lora" {
            assert_eq!((r["modules"].as_i64(), r["delta_params"].as_i64()), (Some(4), Some(2048)), "{r}");
        }
    }
    let r = f.run(&["inspect", "--space", "mix", "--json"]);
    assert!(r["candidates"].as_i64().unwrap() >= 38, "{r}");
}

/// PEFT export of `run`: the family's prefix in every backbone key, its head modules saved; then the
/// import gives the same structure and logits.
fn check_peft(f: &Fam, run: &Path, want: &[f64]) {
    let peft = f.p("peft");
    ok(s3pet(&["export", "--run", run.to_str().unwrap(), "--out", peft.to_str().unwrap()], f.d.path()));
    let prefix = f.cfg.family().prefix();
    let head = s3pet::backbone::HeadLayout::of(&f.cfg).unwrap();
    for sub in [peft.clone(), peft.join("ln_tuning")] {
        let cfg = read_json(&sub.join("adapter_config.json"));
        assert_eq!(cfg["modules_to_save"], json!(head.modules()), "{cfg}");
        let keys = tch::Tensor::read_safetensors(sub.join("adapter_model.safetensors")).unwrap();
        for (k, _) in &keys {
            let inside = k.strip_prefix("base_model.model.").unwrap();
            let is_head = head.tensor_shapes(2).iter().any(|(n, _)| n == inside);
            assert!(is_head || inside.starts_with(prefix), "{k}: neither head nor under `{prefix}`");
        }
    }
    let back = f.p("back");
    f.run(&["import-peft", peft.to_str().unwrap(), "--out", back.to_str().unwrap()]);
    let mods = |r: &Path| {
        let s = read_json(&r.join("structure.json"));
        let key = |m: &Value| format!("{} {} {} {}", m["site"], m["type"], m["rank"], m["alpha"]);
        let mut v: Vec<String> = s["modules"].as_array().unwrap().iter().map(key).collect();
        v.sort();
        v
    };
    assert_eq!(mods(&back), mods(run), "the imported structure is the exported one");
    let diff = max_diff(&f.predict(&back), want);
    assert!(diff < 1e-5, "export + import moves the logits by {diff}");
}

/// `merge`: the family's task model (its class, prefixed backbone keys, head), which s3pet reads back
/// as a plain checkpoint with the same logits.
fn check_merge(f: &Fam, run: &Path, want: &[f64]) {
    let merged = f.p("merged");
    ok(s3pet(&["merge", "--run", run.to_str().unwrap(), "--out", merged.to_str().unwrap()], f.d.path()));
    let cfg = read_json(&merged.join("config.json"));
    assert_eq!(cfg["architectures"], json!([f.cfg.family().classifier_class()]));
    let md = ModelDir::open(&merged).unwrap();
    let w = md.load_weights(tch::Device::Cpu).unwrap();
    let model = Model::build(&md.cfg, &w, &[], false, HeadInit::FromCheckpoint { num_labels: 2 }, 0).unwrap();
    let enc = s3pet::tokenize::TextEncoder::load(&md.tokenizer_path(), 128).unwrap();
    let mut got = Vec::new();
    for line in INPUT.lines() {
        let mut cols = line.split('\t');
        let (a, b) = (cols.next().unwrap(), cols.next());
        let (ids, types) = enc.encode_pair(a, b).unwrap();
        let e = s3pet::tokenize::Encoded {
            rows: vec![(ids, types)],
            target: s3pet::data::Target::Class(0),
            group: None,
        };
        let batch = s3pet::batch::Batch::new(&[&e], tch::Device::Cpu);
        let l = tch::no_grad(|| model.logits(&batch, &Ctx::eval()));
        got.extend(Vec::<f32>::try_from(l.view([-1])).unwrap().into_iter().map(f64::from));
    }
    let diff = max_diff(&got, want);
    assert!(diff < 1e-5, "the merged model's logits differ by {diff}");
}

fn check_family(name: &str, family: Family) {
    let f = Fam::new(name);
    assert_eq!(f.cfg.family(), family);
    check_methods(&f);
    let (t, run) = (f.task(), f.p("mixed"));
    let st = f.mixed_structure();
    f.run(
        &[
            &["train", "--task", &t, "--structure", st.to_str().unwrap(), "--out", run.to_str().unwrap()],
            &QUICK[..],
        ]
        .concat(),
    );
    ok(s3pet(&["eval", "--run", run.to_str().unwrap(), "--split", "dev"], f.d.path()));
    let logits = f.predict(&run);
    check_peft(&f, &run, &logits);
    check_merge(&f, &run, &logits);
    // a searched run, and LoRA on a bf16 backbone
    let searched = f.p("searched");
    let r = f.run(
        &[
            &[
                "run",
                "--task",
                &t,
                "--space",
                "mix",
                "--budget-params",
                "500",
                "--out",
                searched.to_str().unwrap(),
            ][..],
            &QUICK[..],
        ]
        .concat(),
    );
    assert!(r["delta_params"].as_i64().unwrap() <= 500 && r["test"].is_object(), "{r}");
    let bf = f.p("bf16");
    let r = f.run(
        &[
            &[
                "train",
                "--task",
                &t,
                "--method",
                "lora",
                "--backbone-dtype",
                "bf16",
                "--out",
                bf.to_str().unwrap(),
            ][..],
            &QUICK[..],
        ]
        .concat(),
    );
    assert!(r["test"].is_object(), "{r}");
}

#[test]
fn mpnet_downstream() {
    check_family("tiny_mpnet", Family::Mpnet);
}

#[test]
fn roberta_downstream() {
    check_family("tiny_roberta", Family::Roberta);
}

#[test]
fn xlm_roberta_downstream() {
    check_family("tiny_xlm_roberta", Family::XlmRoberta);
}

#[test]
fn deberta_downstream() {
    check_family("tiny_deberta_v2", Family::DebertaV2);
}

#[test]
fn distilbert_downstream() {
    check_family("tiny_distilbert", Family::DistilBert);
}
