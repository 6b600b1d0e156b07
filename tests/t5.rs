//! T5: the paper's spaces on the T5-large config (exact counts), golden parity of the tiny T5
//! checkpoints with transformers / PEFT (fixtures from tools/make_t5_fixtures.py).
mod common;
use common::{assert_close, fixtures, get, read, FWD_TOL, GRAD_TOL};
use s3pet::backbone::loader::Loader;
use s3pet::backbone::{ModelConfig, Placement, T5Config, Weights, T5};
use s3pet::data::{Target, TaskSpec};
use s3pet::delta::{Ctx, ModuleSpec};
use s3pet::params::ParamStore;
use s3pet::space::Space;
use s3pet::text2text::Verbalizer;
use s3pet::tokenize::TextEncoder;
use std::path::Path;
use std::process::Command;
use tch::{Device, Kind};

fn t5_large() -> ModelConfig {
    ModelConfig::from_file(&fixtures().join("t5_large_config.json")).unwrap()
}

/// S3PET.md section 2: 916 candidates / 1,881,088 parameters (mix), 288 / 884,736 (lora), and
/// 737,668,096 backbone parameters (the shared embedding once).
#[test]
fn t5_large_spaces_have_the_papers_counts() {
    let cfg = t5_large();
    assert!(cfg.is_t5());
    assert_eq!(cfg.param_count(), 737_668_096);
    for (space, n, params) in [("mix", 916, 1_881_088), ("lora", 288, 884_736)] {
        let c = Space::builtin(space).unwrap().candidates(&cfg).unwrap();
        assert_eq!(c.len(), n, "{space} candidates");
        assert_eq!(c.iter().filter_map(|m| m.params).sum::<i64>(), params, "{space} parameters");
        assert!(c.iter().all(|m| !m.site.contains("EncDecAttention.")), "no cross-attention projection");
    }
    let mix = Space::builtin("mix").unwrap().candidates(&cfg).unwrap();
    // LRA bottleneck 1024 / 32 = 32: (d + k + k) + (k + d + d) = 3168, after every SelfAttention and FFN block
    let lra: Vec<_> = mix.iter().filter(|m| m.kind.name() == "lra").collect();
    assert_eq!(lra.len(), 96);
    assert!(lra.iter().all(|m| m.params == Some(3168)));
    // every norm (2 + 3 per encoder / decoder block, 2 final) holds LNFit + BitFit
    assert_eq!(mix.iter().filter(|m| m.site.ends_with("layer_norm")).count(), 2 * (24 * 2 + 24 * 3 + 2));
}

#[test]
fn inspect_reads_a_model_config_without_weights() {
    let cfg = fixtures().join("t5_large_config.json");
    for (space, n, params) in [("mix", 916, 1_881_088), ("lora", 288, 884_736)] {
        let out = Command::new(env!("CARGO_BIN_EXE_s3pet"))
            .args(["inspect", "--model-config", cfg.to_str().unwrap(), "--space", space, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["candidates"], n);
        assert_eq!(v["candidate_params"], params);
        assert_eq!(v["backbone_params"], 737_668_096i64);
    }
}

/// v1.1 (gated GELU, untied head): wi_0 and wi_1 both take LoRA + BitFit, the LM head is counted.
#[test]
fn gated_untied_config_counts() {
    let text = std::fs::read_to_string(fixtures().join("t5_large_config.json"))
        .unwrap()
        .replace("\"relu\"", "\"gated-gelu\"")
        .replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    let cfg = ModelConfig::from_file(&path).unwrap();
    let ffn_extra = 48 * 1024 * 4096; // wi_1 in every block
    assert_eq!(cfg.param_count(), 737_668_096 + ffn_extra + 32128 * 1024);
    let mix = Space::builtin("mix").unwrap().candidates(&cfg).unwrap();
    assert_eq!(mix.len(), 916 + 48 * 2);
    let wi1: i64 = mix.iter().filter(|m| m.site.ends_with(".wi_1")).filter_map(|m| m.params).sum();
    assert_eq!(wi1, 48 * (5120 + 4096));
    assert_eq!(mix.iter().filter_map(|m| m.params).sum::<i64>(), 1_881_088 + 48 * (5120 + 4096));
}

fn t5_dir(version: &str) -> std::path::PathBuf {
    fixtures().join(format!("tiny_t5_{version}"))
}

fn t5_cfg(version: &str, dropout: bool) -> T5Config {
    let mut cfg = T5Config::from_file(&t5_dir(version).join("config.json")).unwrap();
    if !dropout {
        cfg.dropout_rate = 0.0;
    }
    cfg
}

fn load_t5(version: &str, placements: &[Placement], dropout: bool) -> (T5, ParamStore) {
    let w = Weights::load(&t5_dir(version).join("model.safetensors"), Device::Cpu).unwrap();
    let mut store = ParamStore::new(Device::Cpu);
    let t5 = {
        let loader = Loader::new(&w, placements, &mut store, false);
        T5::load(&loader.root(), &t5_cfg(version, dropout)).unwrap()
    };
    (t5, store)
}

/// Our tokenisation of the golden sources gives transformers' ids; encoder output, teacher-forced
/// logits and loss, and greedy ids match.
fn check_forward(version: &str) {
    let g = read(&t5_dir(version).join("golden.safetensors"));
    let (ids, mask, labels) = (get(&g, "input_ids"), get(&g, "attention_mask"), get(&g, "labels"));
    let texts: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(t5_dir(version).join("golden_texts.json")).unwrap())
            .unwrap();
    let enc = TextEncoder::load(&t5_dir(version).join("tokenizer.json"), 512).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let (want, _) = enc.encode_pair(t["source"].as_str().unwrap(), None).unwrap();
        let n = want.len() as i64;
        let got: Vec<i64> = Vec::try_from(&ids.get(i as i64).narrow(0, 0, n)).unwrap();
        assert_eq!(got, want, "{version}: token ids of source {i}");
        assert_eq!(mask.get(i as i64).sum(Kind::Int64).int64_value(&[]), n);
    }
    let (t5, _) = load_t5(version, &[], true);
    let ctx = Ctx::eval();
    assert_close(&format!("{version} encoder"), &t5.encode(ids, mask, &ctx), get(&g, "encoder"), FWD_TOL);
    let logits = t5.logits(ids, mask, labels, &ctx);
    assert_close(&format!("{version} logits"), &logits, get(&g, "logits"), FWD_TOL);
    let loss = T5::loss_from_logits(&logits, labels);
    assert_close(&format!("{version} loss"), &loss, get(&g, "loss"), FWD_TOL);
    let want = get(&g, "generated");
    let got = t5.generate(ids, mask, want.size()[1] - 1, &ctx);
    assert!(got.equal(want), "{version} greedy ids: got {got:?} want {want:?}");
}

#[test]
fn tiny_t5_v10_forward_matches_transformers() {
    check_forward("v10");
}

#[test]
fn tiny_t5_v11_forward_matches_transformers() {
    check_forward("v11");
}

/// One training step with every S3PET-M candidate at gate 1 (LoRA r2 from PEFT, BitFit, LNFit, LRA)
/// and LoRA on cross-attention q, v: loss and the gradient of every delta tensor.
fn check_step(version: &str) {
    let f = read(&t5_dir(version).join("step.safetensors"));
    let modules: Vec<ModuleSpec> =
        serde_json::from_str(&std::fs::read_to_string(t5_dir(version).join("step_modules.json")).unwrap())
            .unwrap();
    let placements: Vec<Placement> =
        modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
    let (t5, store) = load_t5(version, &placements, false);
    tch::no_grad(|| {
        for (name, t) in store.entries() {
            t.shallow_clone().copy_(get(&f, &format!("init.{name}")));
        }
    });
    let (ids, mask, labels) = (get(&f, "input_ids"), get(&f, "attention_mask"), get(&f, "labels"));
    let loss = T5::loss_from_logits(&t5.logits(ids, mask, labels, &Ctx::train()), labels);
    assert_close(&format!("{version} step loss"), &loss, get(&f, "loss"), GRAD_TOL);
    loss.backward();
    for (name, t) in store.entries() {
        assert_close(
            &format!("{version} grad.{name}"),
            &t.grad(),
            get(&f, &format!("grad.{name}")),
            GRAD_TOL,
        );
    }
    let in_fixture = f.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(store.len(), in_fixture, "{version}: every fixture gradient has a delta tensor here");
    assert!(store.len() > 100);
}

#[test]
fn tiny_t5_v10_delta_step_matches_peft_and_reference() {
    check_step("v10");
}

#[test]
fn tiny_t5_v11_delta_step_matches_peft_and_reference() {
    check_step("v11");
}

/// Label words go through the tokenizer and back: their own ids decode to their class, anything else
/// to "no label"; STS-B scores round to 0.2 and decode to numbers.
#[test]
fn label_words_round_trip() {
    let tok = t5_dir("v10").join("tokenizer.json");
    let rte = Verbalizer::new(&TaskSpec::builtin("rte").unwrap(), &tok, 1).unwrap();
    assert_eq!(rte.words, ["entailment", "not_entailment"]);
    for c in 0..2 {
        let mut generated = vec![0];
        generated.extend(rte.target_ids(&Target::Class(c)));
        generated.extend([0, 0]);
        assert_eq!(rte.decode(&generated), Target::Class(c));
        assert_eq!(*rte.target_ids(&Target::Class(c)).last().unwrap(), 1, "ends with </s>");
    }
    let first = rte.target_ids(&Target::Class(0))[0];
    assert_eq!(rte.decode(&[0, first, 1]), Target::Class(2), "a prefix of a word is no label");
    let stsb = Verbalizer::new(&TaskSpec::builtin("stsb").unwrap(), &tok, 1).unwrap();
    assert_eq!(stsb.words.len(), 26);
    assert_eq!(stsb.words[stsb.index(&Target::Score(3.77))], "3.8");
    assert_eq!(stsb.words[stsb.index(&Target::Score(5.0))], "5.0");
    let mut generated = vec![0];
    generated.extend(stsb.target_ids(&Target::Score(1.2)));
    assert_eq!(stsb.decode(&generated), Target::Score(1.2));
    assert_eq!(stsb.decode(&[0, 1]), Target::Score(-1.0), "no number");
}

fn s3pet(args: &[&str], data: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_s3pet")).args(args).env("S3PET_DATA", data).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

const QUICK: [&str; 8] = ["--max-steps", "3", "--batch-size", "8", "--eval-every", "2", "--threads", "1"];

/// `run` (S3PET-M search + retrain), `search`, `retrain`, `eval`, `predict` and `export` on the tiny v1.1 T5 with a
/// text-to-text task ("same" / "different" label words).
#[test]
fn t5_search_retrain_eval_predict_end_to_end() {
    let d = common::task_dir();
    let task = d.path().join("task.toml");
    let model = t5_dir("v11");
    let (task, model) = (task.to_str().unwrap(), model.to_str().unwrap());
    let run = d.path().join("run");
    let base = ["--model", model, "--task", task];
    let r = s3pet(
        &[&["run"], &base[..], &["--out", run.to_str().unwrap(), "--budget-params", "1500"], &QUICK[..]]
            .concat(),
        d.path(),
    );
    assert_eq!(r["search"]["candidates"], 110, "{r}");
    assert_eq!(r["search"]["candidate_params"], 2930);
    let total = r["structure"]["total_params"].as_i64().unwrap();
    assert!(total > 0 && total <= 1500, "{r}");
    assert_eq!(r["delta_params"], total);
    assert_eq!(r["head_params"], 0, "the LM head is part of the frozen backbone");
    assert!(r["test"]["accuracy"].is_number() && r["dev"]["f1"].is_number(), "{r}");
    let structure: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("structure.json")).unwrap()).unwrap();
    for m in structure["modules"].as_array().unwrap() {
        let site = m["site"].as_str().unwrap();
        assert!(site.starts_with("encoder.") || site.starts_with("decoder."), "{site}");
        assert!(!site.contains("EncDecAttention."), "{site}");
    }
    // eval rebuilds the model from the run's files and gets the same test metrics
    let e = s3pet(&["eval", "--run", run.to_str().unwrap()], d.path());
    assert_eq!(e["metrics"], r["test"]);
    // predict: one object per line with the generated text and its label (null when it is none)
    let input = d.path().join("in.tsv");
    std::fs::write(
        &input,
        "the man is in the house\tthe man is in the house\nthe city of water\tthe world\n",
    )
    .unwrap();
    let p = Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(["predict", "--run", run.to_str().unwrap(), "--input", input.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&p.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert!(l["text"].is_string(), "{l}");
        assert!(l["label"].is_null() || ["same", "different"].contains(&l["label"].as_str().unwrap()), "{l}");
    }
    // search alone, then retrain its structure from scratch
    let s = d.path().join("search");
    let sr = s3pet(
        &[
            &["search"],
            &base[..],
            &["--out", s.to_str().unwrap(), "--space", "lora", "--budget-params", "400", "--order", "1"],
            &QUICK[..],
        ]
        .concat(),
        d.path(),
    );
    assert_eq!(
        sr["search"]["candidates"], 35,
        "LoRA on 4 self-attention and 3 FFN linears in each of 2 + 3 blocks"
    );
    let st = s.join("structure.json");
    let rt = d.path().join("retrain");
    let rr = s3pet(
        &[
            &["retrain"],
            &base[..],
            &["--structure", st.to_str().unwrap(), "--out", rt.to_str().unwrap()],
            &QUICK[..],
        ]
        .concat(),
        d.path(),
    );
    assert_eq!(rr["delta_params"], sr["structure"]["total_params"]);
    assert!(rr["delta_params"].as_i64().unwrap() <= 400);
    // export: the native format keeps a T5 run whole (eval of the copy gives the run's test metrics);
    // PEFT's BertForSequenceClassification layout refuses it with a clear message
    let ex = d.path().join("exported");
    let e = s3pet(
        &["export", "--run", rt.to_str().unwrap(), "--format", "native", "--out", ex.to_str().unwrap()],
        d.path(),
    );
    assert_eq!(e["format"], "native");
    let ev = s3pet(&["eval", "--run", ex.to_str().unwrap()], d.path());
    assert_eq!(ev["metrics"], rr["test"]);
    let peft = Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(["export", "--run", rt.to_str().unwrap(), "--format", "peft"])
        .args(["--out", d.path().join("peft").to_str().unwrap()])
        .env("S3PET_DATA", d.path())
        .output()
        .unwrap();
    // T5 exports to PEFT as SEQ_2_SEQ_LM (the S3PET-L structure is LoRA only) and imports back
    assert!(peft.status.success(), "{}", String::from_utf8_lossy(&peft.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("peft/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
}

/// Teacher forcing trains the label words: after full fine-tuning the greedy decodes are label words
/// (a random tiny T5 emits none of them, so accuracy would be 0).
#[test]
fn t5_training_learns_to_emit_label_words() {
    let d = common::task_dir();
    let task = d.path().join("task.toml");
    let out = d.path().join("full");
    let r = s3pet(
        &[
            "train",
            "--model",
            t5_dir("v10").to_str().unwrap(),
            "--task",
            task.to_str().unwrap(),
            "--method",
            "full",
            "--out",
            out.to_str().unwrap(),
            "--lr",
            "1e-2",
            "--max-steps",
            "60",
            "--batch-size",
            "16",
            "--threads",
            "1",
        ],
        d.path(),
    );
    assert!(r["test"]["accuracy"].as_f64().unwrap() > 0.0, "{r}");
}

/// A batch of the golden sources with RTE targets (classes 0, 1, 0).
fn golden_batch(version: &str) -> s3pet::batch::Batch {
    let g = read(&t5_dir(version).join("golden.safetensors"));
    let ids = get(&g, "input_ids").shallow_clone();
    let targets = vec![Target::Class(0), Target::Class(1), Target::Class(0)];
    s3pet::batch::Batch {
        types: ids.zeros_like(),
        mask: get(&g, "attention_mask").shallow_clone(),
        labels: tch::Tensor::from_slice(&[0i64, 1, 0]),
        tokens: get(&g, "attention_mask").sum(Kind::Int64).int64_value(&[]),
        stand_in: false,
        ids,
        targets,
        groups: vec![None; 3],
        choices: 1,
    }
}

/// Closed gates (z = 0) leave the T5 bit-identical to the bare backbone; open gates with non-zero deltas
/// change it; the loss is the cross-entropy of the label words, and predictions are labels or "none".
#[test]
fn t5_model_gates_and_label_word_loss() {
    let version = "v11";
    let md = s3pet::model::ModelDir::open(&t5_dir(version)).unwrap();
    let w = md.load_weights(Device::Cpu).unwrap();
    let spec = TaskSpec::builtin("rte").unwrap();
    let head = || s3pet::model::HeadInit::for_task(&spec, &md).unwrap();
    let bare = s3pet::model::Model::build(&md.cfg, &w, &[], false, head(), 0).unwrap();
    let cands = Space::builtin("mix").unwrap().candidates(&md.cfg).unwrap();
    let placements: Vec<Placement> =
        cands.iter().enumerate().map(|(i, c)| Placement { spec: c.clone(), gate: Some(i) }).collect();
    let gated = s3pet::model::Model::build(&md.cfg, &w, &placements, false, head(), 0).unwrap();
    assert_eq!(gated.delta_params, 2930);
    assert_eq!((gated.head_params, gated.backbone_params()), (0, md.cfg.param_count()));
    tch::no_grad(|| {
        for (_, t) in gated.store.entries() {
            t.shallow_clone().copy_(&(tch::Tensor::randn_like(t) * 0.1));
        }
    });
    let b = golden_batch(version);
    let k = cands.len() as i64;
    let closed = tch::Tensor::zeros([k], (Kind::Float, Device::Cpu));
    let open = closed.ones_like();
    let logits = |m: &s3pet::model::Model, z: Option<&tch::Tensor>| {
        let gates = z.map(s3pet::delta::Gates::new);
        tch::no_grad(|| m.logits(&b, &Ctx { train: false, gates: gates.as_ref() }))
    };
    let want = logits(&bare, None);
    assert!(logits(&gated, Some(&closed)).equal(&want), "closed gates change the output");
    assert!(!logits(&gated, Some(&open)).equal(&want), "open gates with non-zero deltas change nothing");
    // the loss is the mean cross-entropy of the label words' tokens (</s> included)
    let words = bare.words().unwrap();
    let lp = want.log_softmax(-1, Kind::Float);
    let (mut sum, mut n) = (0.0, 0);
    for (row, c) in [0usize, 1, 0].iter().enumerate() {
        for (pos, &id) in words.ids[*c].iter().enumerate() {
            sum -= lp.double_value(&[row as i64, pos as i64, id]);
            n += 1;
        }
    }
    let loss = bare.loss_from_logits(&want, &b).double_value(&[]);
    assert!((loss - sum / n as f64).abs() < 1e-5, "loss {loss} vs {}", sum / n as f64);
    let preds = bare.predict(&b, &Ctx::eval()).unwrap();
    assert_eq!(preds.len(), 3);
    assert!(preds.iter().all(|p| matches!(p, Target::Class(c) if *c <= 2)), "{preds:?}");
}

/// PEFT's LoRA knobs select T5 modules by their own names: `q,v` of self- and cross-attention, a regex
/// for the FFN, a rank pattern; the structure says so and the model trains.
#[test]
fn t5_lora_knobs_select_modules_by_name() {
    let d = common::task_dir();
    let (task, model) = (d.path().join("task.toml"), t5_dir("v11"));
    let out = d.path().join("knobs");
    let args = [
        &["train", "--model", model.to_str().unwrap(), "--task", task.to_str().unwrap(), "--method", "lora"]
            [..],
        &[
            "--out",
            out.to_str().unwrap(),
            "--lora-r",
            "2",
            "--target-modules",
            r"re:encoder\..*DenseReluDense\.wo",
        ],
        &["--rank-pattern", "block.0.layer.1.DenseReluDense.wo=3"],
        &QUICK[..],
    ]
    .concat();
    let r = s3pet(&args, d.path());
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("structure.json")).unwrap()).unwrap();
    let mods = st["modules"].as_array().unwrap();
    assert!(
        !mods.is_empty() && mods.iter().all(|m| m["site"].as_str().unwrap().starts_with("encoder.")),
        "{st}"
    );
    let ranks: Vec<i64> = mods.iter().map(|m| m["rank"].as_i64().unwrap()).collect();
    assert_eq!(ranks[0], 3, "the rank pattern applies to block 0: {st}");
    assert!(ranks[1..].iter().all(|&r| r == 2), "{st}");
    assert_eq!(r["delta_params"], st["total_params"]);
}
