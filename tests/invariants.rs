//! The invariant matrix over every delta type (DESIGN.md "Tests").
mod common;
use common::*;
use s3pet::backbone::{Arch, Weights};
use s3pet::delta::{Ctx, DeltaModule, Gates, ModuleSpec};
use s3pet::model::{HeadInit, Model, Values};
use std::path::Path;
use tch::{Device, Tensor};

const METHODS: [&str; 5] = ["lora", "bitfit", "lnfit", "lra", "adapter"];

fn batch() -> s3pet::batch::Batch {
    let g = read(&tiny_dir().join("golden.safetensors"));
    golden_batch(&g, &Tensor::from_slice(&[0i64, 2, 1]))
}

fn logits(m: &Model) -> Tensor {
    tch::no_grad(|| m.logits(&batch(), &Ctx::eval()))
}

/// Gives every delta parameter (not the head) random non-zero values.
fn randomize(m: &Model) {
    tch::no_grad(|| {
        for (name, t) in m.store.entries() {
            if !name.starts_with("classifier.") {
                t.shallow_clone().copy_(&(Tensor::randn_like(t) * 0.1));
            }
        }
    });
}

/// Zeroes the up factors of LRA and adapters (their output is not zero at init otherwise).
fn zero_up(m: &Model) {
    for s in m.bert().unwrap().linear_sites() {
        for d in &s.deltas {
            match &d.module {
                DeltaModule::Lra(x) => x.zero_up(),
                DeltaModule::Adapter(x) => x.zero_up(),
                _ => {}
            }
        }
    }
}

#[test]
fn zero_output_delta_leaves_backbone_bit_identical() {
    let bare = logits(&tiny_model(&[], false, true, 1));
    for method in METHODS {
        let m = tiny_model(&fixture_modules(method, &tiny_cfg(true)), false, true, 1);
        zero_up(&m);
        assert!(logits(&m).equal(&bare), "{method}: output differs from the bare backbone");
    }
}

#[test]
fn closed_gates_leave_backbone_bit_identical() {
    let cfg = tiny_cfg(true);
    let bare = logits(&tiny_model(&[], false, true, 1));
    for method in METHODS {
        let modules = fixture_modules(method, &cfg);
        let m = tiny_gated_model(&modules, true, 1);
        randomize(&m);
        let z = Tensor::zeros([modules.len() as i64], (tch::Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| m.logits(&batch(), &Ctx::gated(false, &Gates::new(&z))));
        assert!(out.equal(&bare), "{method}: closed gates change the output");
        let open = Tensor::ones([modules.len() as i64], (tch::Kind::Float, Device::Cpu));
        let out1 = tch::no_grad(|| m.logits(&batch(), &Ctx::gated(false, &Gates::new(&open))));
        assert!(out1.equal(&logits(&m)), "{method}: open gates differ from ungated");
    }
}

#[test]
fn only_delta_parameters_get_gradients() {
    for method in METHODS {
        let m = tiny_model(&fixture_modules(method, &tiny_cfg(true)), false, true, 2);
        randomize(&m);
        m.loss(&batch(), &Ctx::train()).backward();
        for (name, t) in m.store.entries() {
            assert!(t.grad().defined(), "{method}: `{name}` got no gradient");
        }
        for s in m.bert().unwrap().linear_sites() {
            assert!(
                !s.weight.requires_grad() && !s.bias.as_ref().is_some_and(|b| b.requires_grad()),
                "{method}: {} is trainable",
                s.name
            );
        }
        for s in m.bert().unwrap().norm_sites() {
            assert!(!s.weight.requires_grad(), "{method}: {} is trainable", s.name);
        }
    }
}

#[test]
fn save_then_load_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    for method in METHODS {
        let modules = fixture_modules(method, &tiny_cfg(true));
        let a = tiny_model(&modules, false, true, 3);
        randomize(&a);
        let path = dir.path().join(format!("{method}.safetensors"));
        a.store.save(&path).unwrap();
        let b = tiny_model(&modules, false, true, 4);
        b.store.load(&path).unwrap();
        assert!(logits(&a).equal(&logits(&b)), "{method}: reloaded output differs");
    }
}

#[test]
fn parameter_count_equals_formula() {
    let cfg = tiny_cfg(true);
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    let layers = cfg.num_hidden_layers;
    let norms = 2 * layers + 1;
    let want = |method: &str| -> i64 {
        match method {
            // r (d_in + d_out) on 4 d->d, d->f, f->d per layer, r = 4
            "lora" => layers * 4 * (4 * 2 * d + 2 * (d + f)),
            "bitfit" => layers * (4 * d + f + d) + norms * d,
            "lnfit" => norms * d,
            // 2 blocks a layer, k = d / 32
            "lra" => layers * 2 * (3 * d + 3 * (d / 32)),
            "adapter" => layers * 2 * (2 * d * 8 + 8 + d),
            _ => unreachable!(),
        }
    };
    for method in METHODS {
        let modules = fixture_modules(method, &cfg);
        let m = tiny_model(&modules, false, true, 5);
        assert_eq!(m.delta_params, want(method), "{method}: store");
        let sites = cfg.sites();
        let by_spec: i64 = modules
            .iter()
            .map(|s: &ModuleSpec| s.count(sites.iter().find(|(n, _)| *n == s.site).unwrap().1))
            .sum();
        assert_eq!(by_spec, want(method), "{method}: ModuleSpec::count");
    }
}

#[test]
fn folded_linear_deltas_equal_unfolded() {
    let cfg = tiny_cfg(true);
    for method in ["lora", "bitfit", "lnfit"] {
        let m = tiny_model(&fixture_modules(method, &cfg), false, true, 6);
        randomize(&m);
        let folded = m.bert().unwrap().folded_tensors().expect("linear deltas fold");
        let w = Weights::from_tensors(Path::new("folded"), folded, Device::Cpu);
        let bare = Model::build(&cfg, &w, &[], false, HeadInit::Fresh { num_labels: 3 }, 0).unwrap();
        tch::no_grad(|| {
            bare.head().unwrap().weight.shallow_clone().copy_(&m.head().unwrap().weight);
            bare.head().unwrap().bias.shallow_clone().copy_(&m.head().unwrap().bias);
        });
        assert_close(&format!("{method} folded"), &logits(&bare), &logits(&m), 1e-5);
    }
    for method in ["lra", "adapter"] {
        let m = tiny_model(&fixture_modules(method, &cfg), false, true, 6);
        assert!(m.bert().unwrap().folded_tensors().is_err(), "{method} cannot be folded");
    }
}

/// The fast path of training and search steps (every parameter read from one gated flat buffer,
/// [`s3pet::delta::Pass`]) computes what the per-module reference path computes: loss and flat
/// gradient within 1e-6 (the order of a few additions differs), for every delta type, gated or not.
#[test]
fn pass_equals_per_module_path() {
    let cfg = tiny_cfg(false);
    let b = batch();
    for method in METHODS {
        for gated in [false, true] {
            let modules = fixture_modules(method, &cfg);
            let m = if gated {
                tiny_gated_model(&modules, false, 7)
            } else {
                tiny_model(&modules, false, false, 7)
            };
            randomize(&m);
            let k = modules.len() as i64;
            let z = Tensor::rand([k], (tch::Kind::Float, Device::Cpu)) * 0.8 + 0.1;
            let gates = Gates::new(&z);
            let ctx = if gated { Ctx::gated(true, &gates) } else { Ctx::train() };
            let want_loss = m.loss(&b, &ctx);
            let want_g = m.store.grads(&want_loss);
            let pass = m.pass(Values::Store { grad: true }, gated.then_some(&z)).unwrap().unwrap();
            let leaf = pass.values.shallow_clone();
            let pg = Gates::pass(pass);
            let loss = m.loss(&b, &Ctx::gated(true, &pg));
            let g = s3pet::params::flat_grads(&loss, &[&leaf]);
            let what = format!("{method} gated {gated}");
            assert_close(&format!("{what} loss"), &loss, &want_loss, 1e-6);
            let scale = want_g.abs().max().double_value(&[]).max(1.0);
            assert_close(&format!("{what} grads"), &g, &want_g, 1e-6 * scale);
            if !gated {
                let (l2, g2) = m.loss_and_grads(&b, true).unwrap();
                assert!(l2.equal(&loss) && g2.equal(&g), "{what}: loss_and_grads is this pass");
            }
        }
    }
}
