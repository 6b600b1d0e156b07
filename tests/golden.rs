//! Golden parity with transformers / PEFT (fixtures from tools/make_fixtures.py).
mod common;
use common::*;
use s3pet::delta::Ctx;
use s3pet::model::{HeadInit, Model, ModelDir};
use s3pet::tokenize::TextEncoder;

#[test]
fn tiny_bert_forward_matches_transformers() {
    let g = read(&tiny_dir().join("golden.safetensors"));
    let model = tiny_model(&[], false, true, 0);
    let (ids, mask, types) = (get(&g, "input_ids"), get(&g, "attention_mask"), get(&g, "token_type_ids"));
    let bert = model.bert().expect("a BERT model");
    let hidden = bert.encode(ids, mask, types, &Ctx::eval(), true);
    assert_eq!(hidden.len(), 3);
    for (i, h) in hidden.iter().enumerate() {
        assert_close(&format!("hidden.{i}"), h, get(&g, &format!("hidden.{i}")), FWD_TOL);
    }
    let pooled = bert.pool(&hidden[2], &Ctx::eval());
    assert_close("pooled", &pooled, get(&g, "pooled"), FWD_TOL);
    let batch = golden_batch(&g, &tch::Tensor::from_slice(&[0i64, 1, 2]));
    assert_close("logits", &model.logits(&batch, &Ctx::eval()), get(&g, "logits"), FWD_TOL);
}

/// One training step of `method` (dropout 0): loss and the gradient of every trainable tensor.
fn check_step(method: &str) {
    let g = read(&tiny_dir().join("golden.safetensors"));
    let f = read(&tiny_dir().join(format!("step_{method}.safetensors")));
    let cfg = tiny_cfg(false);
    let modules = fixture_modules(method, &cfg);
    let model = tiny_model(&modules, method == "full", false, 0);
    tch::no_grad(|| {
        for (name, t) in model.store.entries() {
            if let Some(init) = f.get(&format!("init.{name}")) {
                t.shallow_clone().copy_(init);
            }
        }
    });
    let batch = golden_batch(&g, get(&f, "labels"));
    let logits = model.logits(&batch, &Ctx::train());
    if let Some(want) = f.get("logits") {
        assert_close(&format!("{method} logits"), &logits, want, FWD_TOL);
    }
    let loss = model.loss_from_logits(&logits, &batch);
    assert_close(&format!("{method} loss"), &loss.reshape([-1]), &get(&f, "loss").reshape([-1]), GRAD_TOL);
    loss.backward();
    let mut checked = 0;
    for (name, t) in model.store.entries() {
        if let Some(want) = f.get(&format!("grad.{name}")) {
            assert_close(&format!("{method} grad.{name}"), &t.grad(), want, GRAD_TOL);
            checked += 1;
        } else if method != "full" {
            panic!("{method}: the fixture has no gradient for trainable `{name}`");
        }
    }
    let in_fixture = f.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(checked, in_fixture, "{method}: every fixture gradient has a trainable tensor here");
}

#[test]
fn lora_step_matches_peft() {
    check_step("lora");
}

#[test]
fn bitfit_step_matches_reference() {
    check_step("bitfit");
}

#[test]
fn lnfit_step_matches_peft_ln_tuning() {
    check_step("lnfit");
}

#[test]
fn lra_step_matches_pytorch_reimplementation() {
    check_step("lra");
}

#[test]
fn adapter_step_matches_pytorch_reimplementation() {
    check_step("adapter");
}

#[test]
fn full_finetuning_step_matches_transformers() {
    check_step("full");
}

/// The real all-MiniLM-L6-v2: our tokenisation gives the same ids, our encoder the same outputs.
#[test]
fn minilm_matches_transformers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    if !required(&dir.join("model.safetensors"), "the real all-MiniLM-L6-v2") {
        return;
    }
    let g = read(&fixtures().join("minilm_golden.safetensors"));
    let texts: Vec<(String, Option<String>)> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("minilm_sentences.json")).unwrap())
            .unwrap();
    let md = ModelDir::open(&dir).unwrap();
    let enc = TextEncoder::load(&md.tokenizer_path(), 128).unwrap();
    let ids = get(&g, "input_ids");
    let mask = get(&g, "attention_mask");
    for (i, (a, b)) in texts.iter().enumerate() {
        let (want_ids, want_types) = enc.encode_pair(a, b.as_deref()).unwrap();
        let n = mask.get(i as i64).sum(tch::Kind::Int64).int64_value(&[]) as usize;
        let got: Vec<i64> = Vec::try_from(&ids.get(i as i64).narrow(0, 0, n as i64)).unwrap();
        assert_eq!(got, want_ids, "token ids of text {i}");
        let got_t: Vec<i64> =
            Vec::try_from(&get(&g, "token_type_ids").get(i as i64).narrow(0, 0, n as i64)).unwrap();
        assert_eq!(got_t, want_types, "token types of text {i}");
    }
    let weights = md.load_weights(tch::Device::Cpu).unwrap();
    let model = Model::build(&md.cfg, &weights, &[], false, HeadInit::Fresh { num_labels: 2 }, 0).unwrap();
    let bert = model.bert().expect("a BERT model");
    let hidden = bert.encode(ids, mask, get(&g, "token_type_ids"), &Ctx::eval(), false);
    assert_close("last_hidden_state", &hidden[0], get(&g, "last_hidden_state"), FWD_TOL);
    let pooled = bert.pool(&hidden[0], &Ctx::eval());
    assert_close("pooler_output", &pooled, get(&g, "pooler_output"), FWD_TOL);
}
