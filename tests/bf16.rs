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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(["train", "--task", d.path().join("task.toml").to_str().unwrap(), "--method", "full"])
        .args(["--backbone-dtype", "bf16", "--max-steps", "1", "--out", d.path().join("r").to_str().unwrap()])
        .env("S3PET_MODEL", tiny_dir())
        .env("S3PET_DATA", d.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bf16") && err.contains("full"), "{err}");
}
