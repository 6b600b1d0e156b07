//! The deployable space `mix-peft`: every structure it can produce exports to PEFT. Property tests over
//! seeded random structures (random budgets, the random baseline's greedy fill) on the tiny BERT
//! fixture and on MiniLM's shape (random weights): the library export never refuses, the files hold one
//! LoRA target per Linear with a delta and one LN_TUNING target per LayerNorm with a delta, PEFT's
//! pattern matching gives each rank / alpha pattern to its own module only, and a few structures
//! round-trip export -> import with identical logits and the same modules. Structures and delta values
//! are seeded; MiniLM's random base weights come from libtorch's global generator, which the tests
//! running beside these share, so they change from run to run (the tiny fixture's are fixed).
mod common;
use rand::{Rng, SeedableRng};
use s3pet::backbone::{BertConfig, Placement, Weights};
use s3pet::delta::{Ctx, DeltaKind, ModuleSpec};
use s3pet::model::{HeadInit, Model};
use s3pet::peft::{Exported, PeftAdapter};
use s3pet::structure::Structure;
use serde_json::Value;
use std::collections::BTreeSet;
use tch::{Device, Tensor};

/// Random structures per model shape.
const TINY_STRUCTURES: u64 = 1000;
const MINILM_STRUCTURES: u64 = 200;
/// Logits of a round trip: equal up to fp32 rounding (LN_TUNING folds LNFit and BitFit into the norm,
/// import subtracts the base again).
const ROUND_TRIP_TOL: f64 = 1e-5;

fn shapes() -> Vec<(&'static str, BertConfig, Weights, u64)> {
    let s3pet::backbone::ModelConfig::Bert(minilm) = s3pet::bench::shape_config("minilm").unwrap() else {
        panic!("the minilm shape is a BERT config")
    };
    let minilm_weights = s3pet::bench::random_weights(&minilm, Device::Cpu);
    vec![
        ("tiny", common::tiny_cfg(false), common::tiny_weights(), TINY_STRUCTURES),
        ("minilm", minilm, minilm_weights, MINILM_STRUCTURES),
    ]
}

fn candidates(cfg: &BertConfig) -> Vec<ModuleSpec> {
    s3pet::space::Space::resolve("mix-peft").unwrap().candidates(cfg).unwrap()
}

/// A random structure of the space: a budget drawn between the smallest candidate and the whole
/// space, filled greedily in a seeded random order (the random baseline).
fn random_structure(cfg: &BertConfig, seed: u64) -> Structure {
    let cands = candidates(cfg);
    let sizes: Vec<i64> = cands.iter().map(|c| c.params.unwrap()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let budget = rng.gen_range(*sizes.iter().min().unwrap()..=sizes.iter().sum::<i64>());
    let chosen = s3pet::search::random_structure(&cands, budget, seed);
    let modules: Vec<ModuleSpec> = chosen.iter().map(|&i| cands[i].clone()).collect();
    let mut s = Structure::manual("random", modules, cfg, 0).unwrap();
    s.budget_params = budget;
    s
}

/// The structure's model with every trainable value random (non-zero deltas, a random classifier), of
/// the weights' own scale (`initializer_range`): enough to move the logits, not so much that the
/// network turns ill-conditioned (deltas of 0.1 on MiniLM's 0.02 weights amplify fp32 rounding to 1e-4).
fn model_with_random_deltas(cfg: &BertConfig, w: &Weights, s: &Structure, seed: u64) -> Model {
    let placements: Vec<Placement> =
        s.modules.iter().map(|m| Placement { spec: m.clone(), gate: None }).collect();
    let model = Model::build(cfg, w, &placements, false, HeadInit::Fresh { num_labels: 2 }, seed).unwrap();
    // a generator of its own: libtorch's global one is shared with the tests running beside this one
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let r = cfg.initializer_range as f32;
    tch::no_grad(|| {
        for (_, t) in model.store.entries() {
            let values: Vec<f32> = (0..t.numel()).map(|_| rng.gen_range(-r..r) * 3f32.sqrt()).collect();
            t.shallow_clone().copy_(&Tensor::from_slice(&values).view(t.size().as_slice()));
        }
    });
    model
}

fn adapter<'a>(e: &'a Exported, peft_type: &str) -> Option<&'a PeftAdapter> {
    e.adapters.iter().find(|a| a.config["peft_type"] == peft_type)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

/// PEFT's `get_pattern_key`: `re.match(rf"(.*\.)?({key})$", name)`; keys are module paths whose
/// only regex metacharacter is `.` (any character).
fn peft_pattern_matches(key: &str, name: &str) -> bool {
    let Some(start) = name.len().checked_sub(key.len()) else { return false };
    let (prefix, tail) = name.split_at(start);
    (prefix.is_empty() || prefix.ends_with('.'))
        && key.bytes().zip(tail.bytes()).all(|(k, c)| k == b'.' || k == c)
}

/// The export holds exactly the structure's deltas, in PEFT's form.
fn check_export(s: &Structure, e: &Exported, cfg: &BertConfig, what: &str) {
    let sites_of = |pred: &dyn Fn(&ModuleSpec) -> bool| -> BTreeSet<String> {
        s.modules.iter().filter(|m| pred(m)).map(|m| m.site.clone()).collect()
    };
    let is_norm = |m: &ModuleSpec| m.site.ends_with("LayerNorm");
    let linear = sites_of(&|m| !is_norm(m));
    let norms = sites_of(&is_norm);
    let lora_targets: BTreeSet<String> = adapter(e, "LORA")
        .map(|a| strings(&a.config["target_modules"]).into_iter().collect())
        .unwrap_or_default();
    assert_eq!(lora_targets, linear, "{what}: LoRA targets = Linears with a delta");
    let ln_targets: BTreeSet<String> = adapter(e, "LN_TUNING")
        .map(|a| strings(&a.config["target_modules"]).into_iter().collect())
        .unwrap_or_default();
    assert_eq!(ln_targets, norms, "{what}: LN_TUNING targets = LayerNorms with a delta");
    if let Some(a) = adapter(e, "LORA") {
        let with_bias = s.modules.iter().any(|m| m.kind == DeltaKind::Bitfit && !is_norm(m));
        assert_eq!(a.config["lora_bias"], with_bias, "{what}");
        assert_eq!(a.tensors.len(), 2 + linear.len() * if with_bias { 3 } else { 2 }, "{what}");
        let every_linear: Vec<String> =
            s3pet::backbone::Arch::sites(cfg).into_iter().map(|(n, _)| format!("bert.{n}")).collect();
        for field in ["rank_pattern", "alpha_pattern"] {
            for key in a.config[field].as_object().unwrap().keys() {
                let hits: Vec<&String> =
                    every_linear.iter().filter(|n| peft_pattern_matches(key, n)).collect();
                assert_eq!(hits, [&format!("bert.{key}")], "{what}: {field} key `{key}` under PEFT's rule");
            }
        }
    }
}

#[test]
fn every_candidate_of_mix_peft_is_representable_and_mix_is_not() {
    for (label, cfg, _, _) in shapes() {
        let cands = candidates(&cfg);
        assert!(s3pet::peft::unrepresentable(&cands, false, &cfg).unwrap().is_none(), "{label}");
        let kinds: BTreeSet<DeltaKind> = cands.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, BTreeSet::from([DeltaKind::Lora, DeltaKind::Bitfit, DeltaKind::Lnfit]), "{label}");
        let mix = s3pet::space::Space::resolve("mix").unwrap().candidates(&cfg).unwrap();
        let refused = s3pet::peft::unrepresentable(&mix, false, &cfg).unwrap().expect("LRA has no PEFT form");
        assert!(refused.modules.iter().all(|(_, k, _)| *k == DeltaKind::Lra), "{label}: {refused}");
        // mix-peft is mix without its low-rank adapters
        let kept: Vec<&ModuleSpec> = mix.iter().filter(|m| m.kind != DeltaKind::Lra).collect();
        assert_eq!(kept, cands.iter().collect::<Vec<_>>(), "{label}");
    }
}

#[test]
fn inspect_lists_the_mix_peft_candidates() {
    let d = tempfile::tempdir().unwrap();
    let v = common::ok(common::s3pet(&["inspect", "--space", "mix-peft", "--json"], d.path()));
    let cands = candidates(&common::tiny_cfg(false));
    assert_eq!(v["candidates"], cands.len());
    assert_eq!(v["candidate_params"], cands.iter().map(|c| c.params.unwrap()).sum::<i64>());
    assert_eq!(v["modules"].as_array().unwrap().len(), cands.len());
}

#[test]
fn random_mix_peft_structures_all_export_to_peft() {
    let mut kinds_seen = BTreeSet::new();
    for (label, cfg, weights, n) in shapes() {
        let mut bias_only = 0;
        for seed in 0..n {
            let s = random_structure(&cfg, seed);
            let model = model_with_random_deltas(&cfg, &weights, &s, seed);
            let what = format!("{label} seed {seed} ({} modules)", s.modules.len());
            let e = s3pet::peft::export(&model, &s, "base")
                .unwrap()
                .unwrap_or_else(|u| panic!("{what}: export refused: {u}"));
            check_export(&s, &e, &cfg, &what);
            let lora_sites: BTreeSet<&str> =
                s.modules.iter().filter(|m| m.kind == DeltaKind::Lora).map(|m| m.site.as_str()).collect();
            bias_only += s
                .modules
                .iter()
                .filter(|m| m.kind == DeltaKind::Bitfit && !m.site.ends_with("LayerNorm"))
                .filter(|m| !lora_sites.contains(m.site.as_str()))
                .count();
            kinds_seen.extend(s.modules.iter().map(|m| m.kind));
        }
        eprintln!(
            "{label}: {n} random mix-peft structures exported; {bias_only} BitFit-only Linears among them"
        );
        assert!(bias_only > 0, "{label}: the structures include BitFit on Linears without LoRA");
    }
    assert_eq!(kinds_seen.len(), 3, "every module type of the space was exported");
}

/// A batch of three token rows (lengths 9, 6, 8, the last a pair with type-1 tokens), padded.
fn batch(vocab: i64, seed: u64) -> s3pet::batch::Batch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let items: Vec<s3pet::tokenize::Encoded> = [(9, 0), (6, 0), (8, 3)]
        .iter()
        .map(|&(len, second)| {
            let ids: Vec<i64> = (0..len).map(|_| rng.gen_range(5..vocab)).collect();
            let types: Vec<i64> = (0..len).map(|i| i64::from(i >= len - second)).collect();
            s3pet::tokenize::Encoded {
                rows: vec![(ids, types)],
                target: s3pet::data::Target::Class(0),
                group: None,
            }
        })
        .collect();
    let refs: Vec<&s3pet::tokenize::Encoded> = items.iter().collect();
    s3pet::batch::Batch::new(&refs, Device::Cpu)
}

fn module_set(modules: &[ModuleSpec]) -> BTreeSet<String> {
    modules.iter().map(|m| format!("{} {} {:?} {:?}", m.site, m.kind.name(), m.rank, m.alpha)).collect()
}

#[test]
fn mix_peft_structures_round_trip_through_export_and_import_with_identical_logits() {
    for (label, cfg, weights, _) in shapes() {
        let trips = if label == "tiny" { 6 } else { 2 };
        for seed in 1000..1000 + trips {
            let s = random_structure(&cfg, seed);
            let model = model_with_random_deltas(&cfg, &weights, &s, seed);
            let dir = tempfile::tempdir().unwrap();
            let e = s3pet::peft::export(&model, &s, "base").unwrap().unwrap();
            s3pet::peft::write_adapters(&e, dir.path()).unwrap();
            let imported = s3pet::peft::import(dir.path(), &weights, &cfg).unwrap();
            let (back_s, back) = s3pet::peft::imported_model(&imported, &cfg, &weights, 7).unwrap();
            let what = format!("{label} seed {seed} ({} modules)", s.modules.len());
            assert_eq!(module_set(&back_s.modules), module_set(&s.modules), "{what}: the same modules");
            assert_eq!(back_s.total_params, s.total_params, "{what}");
            let b = batch(cfg.vocab_size, seed);
            let want = tch::no_grad(|| model.logits(&b, &Ctx::eval()));
            let got = tch::no_grad(|| back.logits(&b, &Ctx::eval()));
            let bare =
                Model::build(&cfg, &weights, &[], false, HeadInit::Fresh { num_labels: 2 }, 0).unwrap();
            tch::no_grad(|| {
                for leaf in ["weight", "bias"] {
                    let name = format!("classifier.{leaf}");
                    bare.store.get(&name).unwrap().shallow_clone().copy_(model.store.get(&name).unwrap());
                }
            });
            let moved =
                (tch::no_grad(|| bare.logits(&b, &Ctx::eval())) - &want).abs().max().double_value(&[]);
            let diff = (&got - &want).abs().max().double_value(&[]);
            eprintln!(
                "{what}: round-trip max abs logit diff {diff:e} (the deltas move the logits by {moved:.3e})"
            );
            assert!(moved > 100.0 * ROUND_TRIP_TOL, "{what}: the deltas must move the logits ({moved:e})");
            assert!(diff <= ROUND_TRIP_TOL, "{what}: round-trip logits differ by {diff:e}");
        }
    }
}
