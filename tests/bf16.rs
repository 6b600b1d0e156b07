//! `--backbone-dtype bf16`: frozen matrices in bf16, deltas / head / norms / optimiser in fp32; outputs
//! close to fp32, gradients only for the deltas, and full fine-tuning refuses it.
mod common;
use common::*;
use s3pet::delta::Ctx;
use s3pet::model::{HeadInit, Model};
use tch::{Kind, Tensor};

#[test]
fn bf16_frozen_backbone_keeps_deltas_fp32_and_outputs_close() {
    let cfg = tiny_cfg(false);
    let mods = fixture_modules("lora", &cfg);
    let g = read(&tiny_dir().join("golden.safetensors"));
    let batch = golden_batch(&g, &Tensor::from_slice(&[1i64, 0, 2]));
    let build = |kind: Kind| {
        let mut w = tiny_weights();
        w.set_frozen_kind(kind);
        let m = Model::build(
            &cfg,
            &w,
            &placements(&mods, false),
            false,
            HeadInit::FromCheckpoint { num_labels: 3 },
            3,
        )
        .unwrap();
        (m, w)
    };
    let ((m32, _), (m16, w16)) = (build(Kind::Float), build(Kind::BFloat16));
    // the bf16 matrices replace their fp32 originals in the weights (no fp32 copy stays beside them)
    for s in m16.bert().unwrap().linear_sites() {
        let key = format!("{}.weight", s.name);
        let stored = w16.get(&key, &s.weight.size()).unwrap();
        assert_eq!(stored.kind(), Kind::BFloat16, "{key}");
        assert_eq!(stored.data_ptr(), s.weight.data_ptr(), "{key}: the model holds the stored tensor");
    }
    // make the LoRA deltas non-zero, the same in both
    tch::no_grad(|| {
        for ((_, a), (_, b)) in m32.store.entries().iter().zip(m16.store.entries()) {
            let v = Tensor::randn_like(a) * 0.05;
            a.shallow_clone().copy_(&v);
            b.shallow_clone().copy_(&v);
        }
    });
    for s in m16.bert().unwrap().linear_sites() {
        assert_eq!(s.weight.kind(), Kind::BFloat16, "{}", s.name);
    }
    for s in m16.bert().unwrap().norm_sites() {
        assert_eq!(s.weight.kind(), Kind::Float, "{}", s.name);
    }
    assert!(m16.store.entries().iter().all(|(_, t)| t.kind() == Kind::Float), "deltas and head stay fp32");
    let (l32, l16) = (m32.logits(&batch, &Ctx::eval()), m16.logits(&batch, &Ctx::eval()));
    assert_eq!(l16.kind(), Kind::Float);
    let diff = (&l32 - &l16).abs().max().double_value(&[]);
    let scale = l32.abs().max().double_value(&[]);
    assert!(diff > 0.0, "bf16 must really change the arithmetic");
    assert!(diff <= 0.05 * scale.max(1.0), "bf16 logits {diff} away from fp32 (scale {scale})");
    // one step: every trainable tensor gets a finite gradient, the frozen bf16 weights none
    let loss = m16.loss(&batch, &Ctx::train());
    let grads = m16.store.grads(&loss);
    assert!(
        grads.isfinite().all().int64_value(&[]) == 1 && grads.abs().sum(Kind::Float).double_value(&[]) > 0.0
    );
    assert!(m16.bert().unwrap().linear_sites().iter().all(|s| !s.weight.requires_grad()));
}

#[test]
fn full_fine_tuning_refuses_bf16() {
    let d = task_dir();
    for opt in ["--backbone-dtype", "--precision"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"))
            .args(["train", "--task", d.path().join("task.toml").to_str().unwrap(), "--method", "full"])
            .args([opt, "bf16", "--max-steps", "1", "--out", d.path().join("r").to_str().unwrap()])
            .env("S3PET_MODEL", tiny_dir())
            .env("S3PET_DATA", d.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("bf16") && err.contains("full") && err.contains(opt),
            "{err}"
        );
    }
}

/// `--precision bf16` on a model of every delta type (the S3PET-M supernet) with gates: the activations
/// are bf16 end to end, logits, loss and gradients fp32 and close to fp32's, the deltas stay fp32.
fn check_precision(md: &s3pet::model::ModelDir, head: &dyn Fn() -> HeadInit, batch: &s3pet::batch::Batch) {
    let cands = s3pet::space::Space::builtin("mix").unwrap().candidates(&md.cfg).unwrap();
    let placements: Vec<_> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| s3pet::backbone::Placement { spec: c.clone(), gate: Some(i) })
        .collect();
    let build = |p: s3pet::config::Precision| {
        let mut w = md.load_weights(tch::Device::Cpu).unwrap();
        w.set_precision(p);
        Model::build(&md.cfg, &w, &placements, false, head(), 5).unwrap()
    };
    let (m32, m16) = (build(s3pet::config::Precision::Fp32), build(s3pet::config::Precision::Bf16));
    tch::no_grad(|| {
        for ((_, a), (_, b)) in m32.store.entries().iter().zip(m16.store.entries()) {
            let v = Tensor::randn_like(a) * 0.05;
            a.shallow_clone().copy_(&v);
            b.shallow_clone().copy_(&v);
        }
    });
    assert!(m16.store.entries().iter().all(|(_, t)| t.kind() == Kind::Float), "deltas and head stay fp32");
    let z = Tensor::rand([cands.len() as i64], (Kind::Float, tch::Device::Cpu));
    let grads = |m: &Model| {
        let pass = m.pass(s3pet::model::Values::Store { grad: true }, Some(&z)).unwrap().unwrap();
        let leaf = pass.values.shallow_clone();
        let gates = s3pet::delta::Gates::pass(pass);
        let logits = m.logits(batch, &Ctx::gated(false, &gates)); // no dropout: the same function
        let loss = m.loss_from_logits(&logits, batch);
        (logits.detach(), loss.detach(), s3pet::params::flat_grads(&loss, &[&leaf]))
    };
    let ((l32, loss32, g32), (l16, loss16, g16)) = (grads(&m32), grads(&m16));
    assert_eq!((l16.kind(), loss16.kind(), g16.kind()), (Kind::Float, Kind::Float, Kind::Float));
    let rel =
        |a: &Tensor, b: &Tensor| (a - b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-12);
    assert!(rel(&l16, &l32) > 0.0, "bf16 must really change the arithmetic");
    assert!(rel(&l16, &l32) < 0.05, "logits {} away from fp32", rel(&l16, &l32));
    assert!(
        (loss16.double_value(&[]) - loss32.double_value(&[])).abs() < 0.05 * loss32.double_value(&[]).abs()
    );
    assert!(g16.isfinite().all().int64_value(&[]) == 1, "finite gradients");
    assert!(rel(&g16, &g32) < 0.1, "gradients {} away from fp32", rel(&g16, &g32));
}

#[test]
fn precision_bf16_bert_computes_in_bf16_with_fp32_deltas() {
    let md = s3pet::model::ModelDir::open(&tiny_dir()).unwrap();
    let g = read(&tiny_dir().join("golden.safetensors"));
    let batch = golden_batch(&g, &Tensor::from_slice(&[1i64, 0, 2]));
    check_precision(&md, &|| HeadInit::FromCheckpoint { num_labels: 3 }, &batch);
    // the activations between sites are bf16
    let mut w = md.load_weights(tch::Device::Cpu).unwrap();
    w.set_precision(s3pet::config::Precision::Bf16);
    let m = Model::build(&md.cfg, &w, &[], false, HeadInit::FromCheckpoint { num_labels: 3 }, 0).unwrap();
    let h = m.bert().unwrap().encode(&batch.ids, &batch.mask, &batch.types, &Ctx::eval(), true);
    assert!(h.iter().all(|t| t.kind() == Kind::BFloat16));
}

#[test]
fn precision_bf16_t5_computes_in_bf16_with_fp32_deltas() {
    let dir = fixtures().join("tiny_t5_v11");
    let md = s3pet::model::ModelDir::open(&dir).unwrap();
    let spec = s3pet::data::TaskSpec::builtin("rte").unwrap();
    let g = read(&dir.join("golden.safetensors"));
    let ids = get(&g, "input_ids").shallow_clone();
    let batch = s3pet::batch::Batch {
        types: ids.zeros_like(),
        mask: get(&g, "attention_mask").shallow_clone(),
        labels: Tensor::from_slice(&[0i64, 1, 0]),
        tokens: 0,
        stand_in: false,
        ids,
        targets: vec![
            s3pet::data::Target::Class(0),
            s3pet::data::Target::Class(1),
            s3pet::data::Target::Class(0),
        ],
        groups: vec![None; 3],
        choices: 1,
    };
    check_precision(&md, &|| HeadInit::for_task(&spec, &md).unwrap(), &batch);
}

/// The golden inputs of a tiny family checkpoint (no token types) with three labels.
fn family_batch(dir: &std::path::Path) -> s3pet::batch::Batch {
    let g = read(&dir.join("golden.safetensors"));
    let (ids, mask) = (get(&g, "input_ids").shallow_clone(), get(&g, "attention_mask").shallow_clone());
    let n = ids.size()[0];
    let labels = Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).remainder(3);
    s3pet::batch::Batch {
        types: ids.zeros_like(),
        tokens: mask.sum(Kind::Int64).int64_value(&[]),
        stand_in: false,
        ids,
        mask,
        targets: (0..n).map(|i| s3pet::data::Target::Class((i % 3) as usize)).collect(),
        labels,
        groups: vec![None; n as usize],
        choices: 1,
    }
}

/// MPNet, DistilBERT, DeBERTa-v2 and RoBERTa honour `--precision bf16` as BERT does: bf16 between sites
/// (their relative-position biases and masks too), fp32 deltas, logits and gradients close to fp32's.
#[test]
fn precision_bf16_encoder_families_compute_in_bf16_with_fp32_deltas() {
    for name in ["tiny_mpnet", "tiny_distilbert", "tiny_deberta_v2", "tiny_roberta"] {
        let dir = fixtures().join(name);
        let md = s3pet::model::ModelDir::open(&dir).unwrap();
        let batch = family_batch(&dir);
        check_precision(&md, &|| HeadInit::Fresh { num_labels: 3 }, &batch);
        let mut w = md.load_weights(tch::Device::Cpu).unwrap();
        w.set_precision(s3pet::config::Precision::Bf16);
        let m = Model::build(&md.cfg, &w, &[], false, HeadInit::Fresh { num_labels: 3 }, 0).unwrap();
        let h = m.encoder().unwrap().encode(&batch.ids, &batch.mask, &batch.types, &Ctx::eval(), true);
        assert!(h.iter().all(|t| t.kind() == Kind::BFloat16), "{name}: activations bf16");
    }
}
