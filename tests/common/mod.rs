#![allow(dead_code)]
//! Helpers shared by the integration tests: fixture paths, safetensors maps, named tolerances; the
//! loopback hub mirror (`mirror`).
pub mod mirror;

use s3pet::backbone::{Arch, BertConfig, Placement, Weights};
use s3pet::delta::{DeltaKind, ModuleSpec, SiteShape};
use s3pet::model::{HeadInit, Model};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// fp32 forward parity with transformers.
pub const FWD_TOL: f64 = 1e-4;
/// Loss and gradients of one training step.
pub const GRAD_TOL: f64 = 1e-4;

/// Whether a test's input at `path` (the real model, ../shared/data) is there. Under `CI=true` (set by
/// .ci/run) a missing input is a failure; elsewhere the test says loudly that it did not run.
pub fn required(path: &Path, what: &str) -> bool {
    if path.exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {what} is missing at {} (run scripts/setup.sh; ../shared/data must be beside the checkout)",
        path.display()
    );
    eprintln!("NOTICE: this test did NOT run: {what} is missing at {}", path.display());
    false
}

/// Whether an optional test input at `path` is there (a model CI does not fetch, such as
/// all-mpnet-base-v2): when it is not, the test says so loudly and does not run, under CI too.
pub fn optional(path: &Path, what: &str) -> bool {
    if path.exists() {
        return true;
    }
    // straight to the process's stderr: the test harness captures eprintln!, this stays visible
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: this test did NOT run: {what} is missing at {} (optional: CI does not fetch it)",
        path.display()
    );
    false
}

/// The real GLUE / SuperGLUE files: $S3PET_DATA, else ../shared/data beside the checkout.
pub fn shared_data() -> PathBuf {
    std::env::var_os("S3PET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn tiny_dir() -> PathBuf {
    fixtures().join("tiny_bert")
}

pub fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

pub fn get<'a>(m: &'a HashMap<String, Tensor>, k: &str) -> &'a Tensor {
    m.get(k).unwrap_or_else(|| panic!("fixture has no `{k}` (keys: {:?})", m.keys().collect::<Vec<_>>()))
}

/// Asserts max |a - b| <= tol, printing the diff and the first values on failure.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let got = got.detach().to_device(Device::Cpu).to_kind(tch::Kind::Float);
    let want = want.to_kind(tch::Kind::Float);
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let diff = (&got - &want).abs().max().double_value(&[]);
    let first =
        |t: &Tensor| Vec::<f32>::try_from(&t.flatten(0, -1).narrow(0, 0, t.numel().min(5) as i64)).unwrap();
    assert!(
        diff <= tol,
        "{what}: max abs diff {diff:e} > {tol:e}; got {:?} want {:?}",
        first(&got),
        first(&want)
    );
}

pub fn tiny_cfg(dropout: bool) -> BertConfig {
    let mut cfg = BertConfig::from_file(&tiny_dir().join("config.json")).unwrap();
    if !dropout {
        cfg.hidden_dropout_prob = 0.0;
        cfg.attention_probs_dropout_prob = 0.0;
    }
    cfg
}

pub fn tiny_weights() -> Weights {
    Weights::load(&tiny_dir().join("model.safetensors"), Device::Cpu).unwrap()
}

/// The modules of each method in the golden step fixtures (tools/make_fixtures.py).
pub fn fixture_modules(method: &str, cfg: &impl Arch) -> Vec<ModuleSpec> {
    let sites = cfg.sites();
    let mk = |kind: DeltaKind, f: &dyn Fn(SiteShape) -> bool| -> Vec<ModuleSpec> {
        sites.iter().filter(|(_, sh)| f(*sh)).map(|(s, _)| ModuleSpec::new(s, kind)).collect()
    };
    let linear = |sh: SiteShape| matches!(sh, SiteShape::Linear { .. });
    let block = |sh: SiteShape| matches!(sh, SiteShape::Linear { block: true, .. });
    let norm = |sh: SiteShape| matches!(sh, SiteShape::Norm { .. });
    match method {
        "lora" => mk(DeltaKind::Lora, &linear)
            .into_iter()
            .map(|m| ModuleSpec { rank: Some(4), alpha: Some(8.0), ..m })
            .collect(),
        "bitfit" => mk(DeltaKind::Bitfit, &|_| true),
        "lnfit" => mk(DeltaKind::Lnfit, &norm),
        "lra" => mk(DeltaKind::Lra, &block),
        "adapter" => mk(DeltaKind::Adapter, &block)
            .into_iter()
            .map(|m| ModuleSpec { bottleneck: Some(8), ..m })
            .collect(),
        "full" => vec![],
        m => panic!("no fixture method {m}"),
    }
}

pub fn placements(modules: &[ModuleSpec], gated: bool) -> Vec<Placement> {
    modules.iter().enumerate().map(|(i, m)| Placement { spec: m.clone(), gate: gated.then_some(i) }).collect()
}

pub fn tiny_model(modules: &[ModuleSpec], full: bool, dropout: bool, seed: u64) -> Model {
    build_tiny(&placements(modules, false), full, dropout, seed)
}

/// The tiny model with every module behind its own gate (gate i = module i).
pub fn tiny_gated_model(modules: &[ModuleSpec], dropout: bool, seed: u64) -> Model {
    build_tiny(&placements(modules, true), false, dropout, seed)
}

fn build_tiny(placements: &[Placement], full: bool, dropout: bool, seed: u64) -> Model {
    let cfg = tiny_cfg(dropout);
    let head = HeadInit::FromCheckpoint { num_labels: 3 };
    Model::build(&cfg, &tiny_weights(), placements, full, head, seed).unwrap()
}

/// A batch of the golden inputs (3 rows with padding, one a pair) with the given labels.
pub fn golden_batch(g: &HashMap<String, Tensor>, labels: &Tensor) -> s3pet::batch::Batch {
    let ids = get(g, "input_ids").shallow_clone();
    let n = ids.size()[0] as usize;
    let tokens = get(g, "attention_mask").sum(tch::Kind::Int64).int64_value(&[]);
    s3pet::batch::Batch {
        ids,
        mask: get(g, "attention_mask").shallow_clone(),
        types: get(g, "token_type_ids").shallow_clone(),
        labels: labels.shallow_clone(),
        targets: Vec::<i64>::try_from(labels)
            .unwrap()
            .into_iter()
            .map(|c| s3pet::data::Target::Class(c as usize))
            .collect(),
        groups: vec![None; n],
        choices: 1,
        tokens,
        stand_in: false,
    }
}

const WORDS: [&str; 16] = [
    "the",
    "man",
    "woman",
    "is",
    "was",
    "in",
    "of",
    "house",
    "city",
    "government",
    "said",
    "new",
    "year",
    "people",
    "water",
    "world",
];

/// A synthetic pair task: label "same" when both sentences are equal.
pub fn task_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sentence =
        |i: usize| (0..5).map(|j| WORDS[(i * 7 + j * 3 + i / 3) % 16]).collect::<Vec<_>>().join(" ");
    let rows = |n: usize, off: usize| -> String {
        let mut s = String::from("a\tb\tlabel\n");
        for i in 0..n {
            let a = sentence(i + off);
            let (b, l) = if i % 2 == 0 { (a.clone(), "same") } else { (sentence(i + off + 1), "different") };
            s += &format!("{a}\t{b}\t{l}\n");
        }
        s
    };
    std::fs::write(dir.path().join("train.tsv"), rows(48, 0)).unwrap();
    std::fs::write(dir.path().join("dev.tsv"), rows(24, 100)).unwrap();
    std::fs::write(
        dir.path().join("task.toml"),
        "name = \"same\"\nkind = \"classification\"\nformat = \"tsv\"\ntrain = \"train.tsv\"\ndev = \"dev.tsv\"\n\
         text_a = \"{a}\"\ntext_b = \"{b}\"\nlabel = \"label\"\nlabels = [\"different\", \"same\"]\n\
         metrics = [\"accuracy\", \"f1\"]\nsize = \"small\"\n",
    )
    .unwrap();
    dir
}

/// `s3pet ARGS` on the tiny fixture model with the data directory `data`.
pub fn s3pet<A: AsRef<std::ffi::OsStr>>(args: &[A], data: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(args)
        .env("S3PET_MODEL", tiny_dir())
        .env("S3PET_DATA", data)
        .output()
        .unwrap()
}

/// Asserts success and parses the last line of stdout as JSON.
pub fn ok(out: std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}
