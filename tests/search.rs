//! Search invariants on the tiny fixture model: the gradient reaching alpha, and two steps of the
//! first- and second-order search against a PyTorch re-implementation (tools/make_search_fixture.py).
mod common;
use common::*;
use s3pet::search::bilevel::{SearchConfig, Stepper, Supernet};
use s3pet::search::gates::{gate_probs, relax, solve_shift};
use s3pet::space::Space;
use std::collections::HashMap;
use tch::{Kind, Tensor};

fn supernet(seed: u64, budget: i64) -> Supernet {
    let cands = Space::builtin("mix").unwrap().candidates(&tiny_cfg(false)).unwrap();
    let model = tiny_gated_model(&cands, false, seed);
    Supernet::new(model, cands, budget, 1.0)
}

fn set(t: &Tensor, v: &Tensor) {
    tch::no_grad(|| t.shallow_clone().copy_(v));
}

/// d loss / d alpha by autograd equals central differences of the loss, with what the method holds
/// constant (the shift b and the stop-gradient sum of p) frozen at the base point.
#[test]
fn alpha_gradient_matches_finite_differences() {
    let net = supernet(11, 500);
    tch::no_grad(|| {
        for (name, t) in net.model.store.entries() {
            if !name.starts_with("classifier.") {
                set(t, &(Tensor::randn_like(t) * 0.1));
            }
        }
    });
    let k = net.candidates.len() as i64;
    tch::manual_seed(5);
    set(&net.alpha, &(Tensor::randn([k], (Kind::Float, tch::Device::Cpu)) * 0.5));
    let u = Tensor::rand([k], (Kind::Float, tch::Device::Cpu)) * 0.98 + 0.01;
    let g = read(&tiny_dir().join("golden.safetensors"));
    let batch = golden_batch(&g, &Tensor::from_slice(&[1i64, 0, 2]));
    let n: Vec<f64> = net.candidates.iter().map(|c| c.params.unwrap() as f64).collect();
    let b = solve_shift(&net.alpha_values().unwrap(), &n, 500.0, 1.0, None).unwrap();
    let c = ((&net.alpha - b).sigmoid()).sum(Kind::Float).double_value(&[]);
    // the function whose derivative the method takes: b and c constant
    let loss_at = |alpha: &Tensor| -> f64 {
        tch::no_grad(|| {
            let s = (alpha - b).sigmoid();
            let p = &s * c / s.sum(Kind::Float);
            net.loss(&batch, &relax(&p, &u)).double_value(&[])
        })
    };
    let p = gate_probs(&net.alpha, b, 1.0);
    net.loss(&batch, &relax(&p, &u)).backward();
    let grad = net.alpha.grad().copy();
    let base = net.alpha.detach().copy();
    let mut order: Vec<(f64, i64)> = (0..k).map(|i| (grad.double_value(&[i]).abs(), i)).collect();
    order.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    let h = 1e-2;
    for &(_, i) in order.iter().take(6) {
        let e = Tensor::zeros([k], (Kind::Float, tch::Device::Cpu));
        let _ = e.get(i).fill_(h);
        let fd = (loss_at(&(&base + &e)) - loss_at(&(&base - &e))) / (2.0 * h);
        let an = grad.double_value(&[i]);
        let rel = (fd - an).abs() / an.abs().max(1e-4);
        assert!(rel < 2e-2, "alpha[{i}]: autograd {an:e} vs finite differences {fd:e} (rel {rel:e})");
    }
}

fn search_fixture(order: u8) -> HashMap<String, Tensor> {
    read(&tiny_dir().join(format!("search_order{order}.safetensors")))
}

fn fixture_batch(f: &HashMap<String, Tensor>, name: &str) -> s3pet::batch::Batch {
    let mut inputs = HashMap::new();
    for k in ["input_ids", "attention_mask", "token_type_ids"] {
        inputs.insert(k.to_string(), get(f, &format!("{name}.{k}")).shallow_clone());
    }
    golden_batch(&inputs, get(f, &format!("{name}.labels")))
}

/// `replicas`: the second order's w+ and w- passes as one replica pass (else two passes).
fn check_two_steps(order: u8, replicas: bool) {
    let f = search_fixture(order);
    let budget = get(&f, "budget").double_value(&[0]) as i64;
    let mut net = supernet(0, budget);
    let n: Vec<f64> = net.candidates.iter().map(|c| c.params.unwrap() as f64).collect();
    let want_n: Vec<f32> = Vec::try_from(get(&f, "candidates.n")).unwrap();
    assert_eq!(n.iter().map(|&x| x as f32).collect::<Vec<_>>(), want_n, "candidate sizes and order");
    for (name, t) in net.model.store.entries() {
        set(t, get(&f, &format!("init.{name}")));
    }
    set(&net.alpha, get(&f, "init.alpha"));
    let cfg = SearchConfig { max_steps: Some(4), ..SearchConfig::paper(order, 4) };
    let mut st = Stepper::new(&mut net, &cfg);
    st.replicas = replicas;
    for s in 0..2usize {
        let (bw, ba) = (fixture_batch(&f, &format!("bw{s}")), fixture_batch(&f, &format!("ba{s}")));
        let lr_w = 3e-4 * (4 - s) as f64 / 4.0;
        let lr_a = 0.1 * (4 - s) as f64 / 4.0;
        let u = (get(&f, &format!("u.alpha{s}")), get(&f, &format!("u.w{s}")));
        let out = st.step_with(&bw, &ba, u, (lr_w, lr_a), s).unwrap();
        let (val, train) = (out.val_loss.double_value(&[]), out.train_loss.double_value(&[]));
        let tag = |k: &str| format!("order {order} (replicas {replicas}) step {s} {k}");
        assert_close(
            &tag("val_loss"),
            &Tensor::from_slice(&[val as f32]),
            get(&f, &format!("step{s}.val_loss")),
            1e-5,
        );
        assert_close(
            &tag("train_loss"),
            &Tensor::from_slice(&[train as f32]),
            get(&f, &format!("step{s}.train_loss")),
            1e-5,
        );
        assert_close(&tag("alpha"), &st.net.alpha, get(&f, &format!("step{s}.alpha")), 1e-4);
        let p = tch::no_grad(|| st.net.probs().unwrap());
        assert_close(&tag("p"), &p, get(&f, &format!("step{s}.p")), 1e-5);
        // the gradient reaching alpha before clipping (for order 2 the full second-order gradient; the
        // correction term is under 1% of it, so the tolerance is relative to its size)
        let want_g = get(&f, &format!("step{s}.alpha_grad"));
        let scale = want_g.abs().max().double_value(&[]);
        assert_close(&tag("alpha_grad"), st.last_alpha_grad.as_ref().unwrap(), want_g, 1e-4 * scale);
        if order == 2 {
            // the check above sees the Hessian term: dropping it or flipping its sign moves the gradient
            // by |term| or 2 |term|, far above the tolerance
            let term = st.last_hessian_term.as_ref().unwrap().abs().max().double_value(&[]);
            assert!(
                term > 20.0 * 1e-4 * scale,
                "{}: Hessian term {term:e} vs tolerance {:e}",
                tag("alpha_grad"),
                1e-4 * scale
            );
        }
        for (name, t) in st.net.model.store.entries() {
            // A key bias has exactly zero gradient (softmax ignores it), so AdamW turns rounding noise
            // (1e-17 in the float64 reference, 1e-9 here) into steps of +-lr: not comparable.
            if name.ends_with("attention.self.key.bitfit") {
                continue;
            }
            assert_close(&tag(name), t, get(&f, &format!("step{s}.w.{name}")), 1e-5);
        }
    }
}

#[test]
fn first_order_two_steps_match_pytorch() {
    check_two_steps(1, false);
}

#[test]
fn second_order_two_steps_match_pytorch() {
    check_two_steps(2, true);
    check_two_steps(2, false);
}
