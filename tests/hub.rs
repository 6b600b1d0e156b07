//! `--model org/name` through the hf-hub crate against a loopback HTTP server that serves the tiny fixture
//! model in the hub's layout (tests/common/mirror.rs: `/{repo}/resolve/{revision}/{file}` with etag,
//! x-repo-commit and ranges); the cache under HF_HOME, and offline mode (HF_HUB_OFFLINE=1, --offline).
mod common;
use common::mirror::{Mirror, MirrorRepo};
use common::{fixtures, task_dir, tiny_dir};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const REPO: &str = "s3pet-test/tiny-bert";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A hub on 127.0.0.1 serving the tiny fixture model as REPO.
fn serve() -> Mirror {
    Mirror::start(vec![MirrorRepo {
        kind: "models",
        id: REPO.into(),
        root: tiny_dir(),
        commit: COMMIT.into(),
    }])
}

fn s3pet(args: &[&str], data: &Path, endpoint: &str, home: &Path, offline: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3pet"));
    c.args(args)
        .env("S3PET_DATA", data)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env_remove("S3PET_MODEL");
    if offline {
        c.env("HF_HUB_OFFLINE", "1");
    } else {
        c.env_remove("HF_HUB_OFFLINE");
    }
    c.output().unwrap()
}

fn ok(out: Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

fn fails(out: Output, needles: &[&str]) {
    assert!(!out.status.success(), "should fail: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "error should contain `{n}`: {err}");
    }
}

const QUICK: [&str; 8] = ["--max-steps", "3", "--batch-size", "8", "--eval-every", "2", "--threads", "1"];

fn train(d: &tempfile::TempDir, model: &str, out: &Path, endpoint: &str, home: &Path) -> Value {
    let task = d.path().join("task.toml");
    let args = [
        &["train", "--task", task.to_str().unwrap(), "--model", model, "--out", out.to_str().unwrap()][..],
        &QUICK,
    ]
    .concat();
    ok(s3pet(&args, d.path(), endpoint, home, false))
}

#[test]
fn hub_model_downloads_into_the_cache_then_works_offline() {
    let d = task_dir();
    let home = tempfile::tempdir().unwrap();
    let mirror = serve();
    let endpoint = mirror.endpoint.clone();
    let requests = || mirror.requests().len();
    // the hub id gives the same run as the local directory
    let hub_run = d.path().join("hub");
    let r = train(&d, REPO, &hub_run, &endpoint, home.path());
    let local = train(&d, tiny_dir().to_str().unwrap(), &d.path().join("local"), &endpoint, home.path());
    assert_eq!(r["test"], local["test"]);
    assert_eq!(r["delta_params"], local["delta_params"]);
    let downloaded = requests();
    assert!(downloaded >= 3, "one request or more per file, got {downloaded}");
    // hub-layout cache: snapshots/<commit>/<file>, refs/main = commit, same bytes as served
    let repo_dir = home.path().join("hub/models--s3pet-test--tiny-bert");
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(), COMMIT);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let cached = std::fs::read(repo_dir.join("snapshots").join(COMMIT).join(f)).unwrap();
        assert_eq!(cached, std::fs::read(tiny_dir().join(f)).unwrap(), "{f}");
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(hub_run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"]["value"], REPO, "the run records the hub id");
    // cached: eval and inspect work online and offline (env or flag) with no further request
    let hr = hub_run.to_str().unwrap();
    let e1 = ok(s3pet(&["eval", "--run", hr], d.path(), &endpoint, home.path(), false));
    let e2 = ok(s3pet(&["eval", "--run", hr], d.path(), &endpoint, home.path(), true));
    assert_eq!(e1["metrics"], r["test"]);
    assert_eq!(e2["metrics"], r["test"]);
    ok(s3pet(
        &["inspect", "--model", REPO, "--json", "--offline"],
        d.path(),
        "http://127.0.0.1:9",
        home.path(),
        false,
    ));
    assert_eq!(requests(), downloaded, "the cache answers without a request");
    // offline with an empty cache: a clear error, no request
    let empty = tempfile::tempdir().unwrap();
    for offline_env in [true, false] {
        let mut args = vec!["inspect", "--model", REPO];
        if !offline_env {
            args.push("--offline");
        }
        fails(
            s3pet(&args, d.path(), &endpoint, empty.path(), offline_env),
            &[REPO, "config.json", "not in the local cache", "HF_HUB_OFFLINE"],
        );
    }
    assert_eq!(requests(), downloaded);
    // a repository the hub does not have: the error names it and the endpoint
    fails(
        s3pet(&["inspect", "--model", "s3pet-test/missing"], d.path(), &endpoint, empty.path(), false),
        &["s3pet-test/missing", "could not be fetched", &endpoint],
    );
}

/// Another family by hub id: the tiny MPNet gives the same run as its local directory.
#[test]
fn hub_id_of_an_mpnet() {
    let d = task_dir();
    let home = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(vec![MirrorRepo {
        kind: "models",
        id: "s3pet-test/tiny-mpnet".into(),
        root: fixtures().join("tiny_mpnet"),
        commit: COMMIT.into(),
    }]);
    let endpoint = mirror.endpoint.clone();
    let hub = train(&d, "s3pet-test/tiny-mpnet", &d.path().join("hub"), &endpoint, home.path());
    let local_dir = fixtures().join("tiny_mpnet");
    let local = train(&d, local_dir.to_str().unwrap(), &d.path().join("local"), &endpoint, home.path());
    assert_eq!(hub["test"], local["test"]);
    assert_eq!(hub["backbone_params"], 51_328);
}
