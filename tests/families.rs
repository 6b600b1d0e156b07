//! Golden parity of the encoder families with transformers / PEFT (fixtures from
//! tools/make_encoder_fixtures.py): every hidden state and the logits of each tiny checkpoint (MPNet,
//! RoBERTa, XLM-RoBERTa, DeBERTa-v2, DistilBERT), one training step per method (LoRA against PEFT, BitFit,
//! LNFit against PEFT's LN_TUNING), and the real all-mpnet-base-v2 when it has been fetched.
mod common;
use common::*;
use s3pet::backbone::Weights;
use s3pet::batch::Batch;
use s3pet::delta::Ctx;
use s3pet::model::{HeadInit, Model, ModelDir};
use s3pet::tokenize::TextEncoder;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Tensor};

/// The fixture directory `name`, or a copy of it whose config.json has every dropout at 0 (the step
/// fixtures' train mode; the checkpoint and tokenizer are linked).
fn model_dir(name: &str, dropout: bool) -> (ModelDir, Option<tempfile::TempDir>) {
    let src = fixtures().join(name);
    if dropout {
        return (ModelDir::open(&src).unwrap(), None);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value = read_json(&src.join("config.json"));
    for (k, v) in cfg.as_object_mut().unwrap() {
        if k.contains("dropout") && v.is_number() {
            *v = serde_json::json!(0.0);
        }
    }
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::os::unix::fs::symlink(src.join(f), tmp.path().join(f)).unwrap();
    }
    (ModelDir::open(tmp.path()).unwrap(), Some(tmp))
}

/// [`assert_close`], printing the max abs diff (`cargo test --test families -- --nocapture` lists them).
fn close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let diff = (got.detach().to_kind(tch::Kind::Float) - want.to_kind(tch::Kind::Float)).abs().max();
    eprintln!("{what}: max abs diff {:.2e}", diff.double_value(&[]));
    assert_close(what, got, want, tol);
}

fn build(md: &ModelDir, weights: &Weights, modules: &[s3pet::delta::ModuleSpec]) -> Model {
    let head = HeadInit::FromCheckpoint { num_labels: 3 };
    Model::build(&md.cfg, weights, &placements(modules, false), false, head, 0).unwrap()
}

/// The golden inputs (no token types: zeros) with `labels`.
fn batch(g: &HashMap<String, Tensor>, labels: &Tensor) -> Batch {
    let ids = get(g, "input_ids").shallow_clone();
    let mask = get(g, "attention_mask").shallow_clone();
    let n = ids.size()[0] as usize;
    let classes = Vec::<i64>::try_from(labels).unwrap();
    Batch {
        types: ids.zeros_like(),
        tokens: mask.sum(tch::Kind::Int64).int64_value(&[]),
        stand_in: false,
        ids,
        mask,
        labels: labels.shallow_clone(),
        targets: classes.into_iter().map(|c| s3pet::data::Target::Class(c as usize)).collect(),
        groups: vec![None; n],
        choices: 1,
    }
}

fn check_forward(name: &str) {
    let (md, _tmp) = model_dir(name, true);
    let g = read(&md.dir.join("golden.safetensors"));
    let weights = md.load_weights(Device::Cpu).unwrap();
    let model = build(&md, &weights, &[]);
    let b = batch(&g, &Tensor::from_slice(&[0i64, 1, 2]));
    let encoder = model.encoder().expect("an encoder");
    let hidden = encoder.encode(&b.ids, &b.mask, &b.types, &Ctx::eval(), true);
    assert_eq!(hidden.len(), 3, "{name}: embedding output + 2 layers");
    for (i, h) in hidden.iter().enumerate() {
        close(&format!("{name} hidden.{i}"), h, get(&g, &format!("hidden.{i}")), FWD_TOL);
    }
    close(&format!("{name} logits"), &model.logits(&b, &Ctx::eval()), get(&g, "logits"), FWD_TOL);
    let backbone = get(&g, "params.backbone").int64_value(&[]);
    assert_eq!(model.backbone_params(), backbone, "{name}: backbone parameters");
    assert_eq!(md.cfg.param_count(), backbone, "{name}: parameters from the config alone");
    assert_eq!(backbone + model.head_params, get(&g, "params.total").int64_value(&[]), "{name}: head");
}

#[test]
fn tiny_encoders_match_transformers() {
    for name in ["tiny_mpnet", "tiny_roberta", "tiny_xlm_roberta", "tiny_deberta_v2", "tiny_distilbert"] {
        check_forward(name);
    }
}

/// One training step of `method` (dropout 0): logits, loss and every trained tensor's gradient.
fn check_step(name: &str, method: &str) {
    let (md, _tmp) = model_dir(name, false);
    let f = read(&fixtures().join(name).join(format!("step_{method}.safetensors")));
    let weights = md.load_weights(Device::Cpu).unwrap();
    let modules = fixture_modules(method, &md.cfg);
    let model = build(&md, &weights, &modules);
    tch::no_grad(|| {
        for (n, t) in model.store.entries() {
            if let Some(init) = f.get(&format!("init.{n}")) {
                t.shallow_clone().copy_(init);
            }
        }
    });
    let b = batch(&f, get(&f, "labels"));
    let logits = model.logits(&b, &Ctx::train());
    close(&format!("{name} {method} logits"), &logits, get(&f, "logits"), FWD_TOL);
    let loss = model.loss_from_logits(&logits, &b);
    close(&format!("{name} {method} loss"), &loss.reshape([-1]), &get(&f, "loss").reshape([-1]), GRAD_TOL);
    loss.backward();
    let mut worst = 0f64;
    for (n, t) in model.store.entries() {
        let want =
            f.get(&format!("grad.{n}")).unwrap_or_else(|| panic!("{name} {method}: no gradient for `{n}`"));
        worst = worst.max((t.grad() - want).abs().max().double_value(&[]));
        assert_close(&format!("{name} {method} grad.{n}"), &t.grad(), want, GRAD_TOL);
    }
    eprintln!("{name} {method} gradients ({} tensors): max abs diff {worst:.2e}", model.store.len());
    let in_fixture = f.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(model.store.len(), in_fixture, "{name} {method}: every fixture gradient has a tensor here");
}

fn check_steps(name: &str) {
    for method in ["lora", "bitfit", "lnfit"] {
        check_step(name, method);
    }
}

#[test]
fn mpnet_steps_match_peft() {
    check_steps("tiny_mpnet");
}

#[test]
fn roberta_steps_match_peft() {
    check_steps("tiny_roberta");
}

#[test]
fn deberta_steps_match_peft() {
    check_steps("tiny_deberta_v2");
}

#[test]
fn distilbert_steps_match_peft() {
    check_steps("tiny_distilbert");
}

/// The real all-mpnet-base-v2 (optional: CI does not fetch it): our tokenisation gives the same ids,
/// our encoder the same last hidden state.
#[test]
fn real_mpnet_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-mpnet-base-v2");
    if !optional(
        &dir.join("model.safetensors"),
        "the real all-mpnet-base-v2 (scripts/setup.sh --model all-mpnet-base-v2)",
    ) {
        return;
    }
    let g = read(&fixtures().join("mpnet_golden.safetensors"));
    let texts: Vec<(String, Option<String>)> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("mpnet_sentences.json")).unwrap())
            .unwrap();
    let md = ModelDir::open(&dir).unwrap();
    let enc = TextEncoder::load(&md.tokenizer_path(), 32).unwrap();
    let (ids, mask) = (get(&g, "input_ids"), get(&g, "attention_mask"));
    for (i, (a, b)) in texts.iter().enumerate() {
        let n = mask.get(i as i64).sum(tch::Kind::Int64).int64_value(&[]);
        let want: Vec<i64> = Vec::try_from(&ids.get(i as i64).narrow(0, 0, n)).unwrap();
        assert_eq!(enc.encode_pair(a, b.as_deref()).unwrap().0, want, "token ids of text {i}");
    }
    let weights = md.load_weights(Device::Cpu).unwrap();
    let model = Model::build(&md.cfg, &weights, &[], false, HeadInit::Fresh { num_labels: 2 }, 0).unwrap();
    assert_eq!(model.backbone_params(), get(&g, "params.total").int64_value(&[]));
    assert_eq!(md.cfg.param_count(), 109_486_464);
    let hidden = model.encoder().unwrap().encode(ids, mask, &ids.zeros_like(), &Ctx::eval(), false);
    close("all-mpnet-base-v2 last_hidden_state", &hidden[0], get(&g, "last_hidden_state"), FWD_TOL);
    // full fine-tuning trains what MPNetForSequenceClassification has: not the checkpoint's pooler
    let full = Model::build(&md.cfg, &weights, &[], true, HeadInit::Fresh { num_labels: 2 }, 0).unwrap();
    let pooler = 768 * 768 + 768;
    assert_eq!(full.trainable_params(), full.backbone_params() - pooler + full.head_params);
}

/// A RoBERTa checkpoint with a pooler (hub checkpoints have one; the task model has none): the pooler is
/// read and counted in the backbone, and full fine-tuning does not train it.
#[test]
fn a_roberta_checkpoints_pooler_is_counted_not_trained() {
    let src = fixtures().join("tiny_roberta");
    let tmp = tempfile::tempdir().unwrap();
    let mut named = Tensor::read_safetensors(src.join("model.safetensors")).unwrap();
    let d = read_json(&src.join("config.json"))["hidden_size"].as_i64().unwrap();
    let opts = (tch::Kind::Float, Device::Cpu);
    named.push(("roberta.pooler.dense.weight".into(), Tensor::zeros([d, d], opts)));
    named.push(("roberta.pooler.dense.bias".into(), Tensor::zeros([d], opts)));
    Tensor::write_safetensors(&named, tmp.path().join("model.safetensors")).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let head = || HeadInit::Fresh { num_labels: 2 };
    let full = |dir: &Path| {
        let md = ModelDir::open(dir).unwrap();
        Model::build(&md.cfg, &md.load_weights(Device::Cpu).unwrap(), &[], true, head(), 0).unwrap()
    };
    let (without, with) = (full(&src), full(tmp.path()));
    assert_eq!(with.backbone_params(), without.backbone_params() + d * d + d, "the pooler is counted");
    assert_eq!(with.trainable_params(), without.trainable_params(), "but not trained");
}
