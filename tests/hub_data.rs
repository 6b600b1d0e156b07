//! Task data from the Hugging Face Hub against a loopback mirror (tests/common/mirror.rs) serving the
//! Hub-layout fixtures of tools/make_hub_fixtures.py (tests/fixtures/hub): `data fetch`, `data list`,
//! `train` / `run` / `eval` with no data directory, offline mode, a killed or short download, a user
//! task spec on a CSV repo. (The parquet rows against the TSV / JSONL rows: src/data/mod.rs.)
mod common;
use common::mirror::{sha256_hex, Fault, Mirror, MirrorRepo};
use common::{fixtures, read_json, tiny_dir};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

const GLUE: &str = "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c";
const SUPER_GLUE: &str = "3de24cf8022e94b7e5e1e2fb8e4bbc2dd0a7a7e1";
const SENTIMENT: &str = "0c0ffee00c0ffee00c0ffee00c0ffee00c0ffee0";
const QUICK: [&str; 8] = ["--max-steps", "3", "--batch-size", "8", "--eval-every", "2", "--threads", "1"];
const RTE_TRAIN: &str = "rte/train-00000-of-00001.parquet";
const RTE_DEV: &str = "rte/validation-00000-of-00001.parquet";

fn hub_fixtures() -> PathBuf {
    fixtures().join("hub/datasets")
}

/// A mirror of the three fixture repos, an empty HF_HOME and a scratch directory.
struct Hub {
    mirror: Mirror,
    home: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Hub {
    fn new() -> Hub {
        let repo = |id: &str, commit: &str| MirrorRepo {
            kind: "datasets",
            id: id.into(),
            root: hub_fixtures().join(id),
            commit: commit.into(),
        };
        let mirror = Mirror::start(vec![
            repo("nyu-mll/glue", GLUE),
            repo("aps/super_glue", SUPER_GLUE),
            repo("s3pet-test/sentiment", SENTIMENT),
        ]);
        Hub { mirror, home: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, args: &[&str], offline: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_s3pet"));
        c.args(args)
            .env("HF_ENDPOINT", &self.mirror.endpoint)
            .env("HF_HOME", self.home.path())
            .env("S3PET_MODEL", tiny_dir())
            .env_remove("S3PET_DATA");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        } else {
            c.env_remove("HF_HUB_OFFLINE");
        }
        c
    }

    fn run(&self, args: &[&str], offline: bool) -> Output {
        self.cmd(args, offline).output().unwrap()
    }

    fn out(&self, name: &str) -> String {
        self.work.path().join(name).display().to_string()
    }

    fn repo_dir(&self, id: &str) -> PathBuf {
        self.home.path().join("hub").join(format!("datasets--{}", id.replace('/', "--")))
    }

    fn requests(&self) -> usize {
        self.mirror.requests().len()
    }
}

fn ok(out: Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

/// Asserts failure and one `error:` line naming every needle; returns it.
fn fails(out: Output, needles: &[&str]) -> String {
    assert!(!out.status.success(), "should fail: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let line =
        err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
    for n in needles {
        assert!(line.contains(n), "error should contain `{n}`: {line}");
    }
    eprintln!("{line}");
    line.to_string()
}

fn fixture_sha(path: &str) -> String {
    sha256_hex(&std::fs::read(hub_fixtures().join("nyu-mll/glue").join(path)).unwrap())
}

#[test]
fn fetch_caches_pinned_files_lists_them_and_works_offline() {
    let h = Hub::new();
    let f = ok(h.run(&["data", "fetch", "--task", "rte", "--json"], false));
    assert_eq!((f["repo"].as_str(), f["config"].as_str()), (Some("nyu-mll/glue"), Some("rte")));
    assert_eq!((f["revision"].as_str(), f["commit"].as_str()), (Some("main"), Some(GLUE)));
    let files = f["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "train and validation only: {f}");
    for (file, (split, path, n)) in files.iter().zip([("train", RTE_TRAIN, 200), ("dev", RTE_DEV, 100)]) {
        assert_eq!((file["split"].as_str(), file["path"].as_str()), (Some(split), Some(path)));
        assert_eq!(file["sha256"].as_str(), Some(fixture_sha(path).as_str()));
        assert_eq!(file["examples"], n);
    }
    // the layout huggingface_hub uses: refs/main, snapshots/<commit>/<path> -> blobs/<sha256>, no refs/<commit>
    let dir = h.repo_dir("nyu-mll/glue");
    assert_eq!(std::fs::read_to_string(dir.join("refs/main")).unwrap(), GLUE);
    assert!(!dir.join("refs").join(GLUE).exists());
    let cached = dir.join("snapshots").join(GLUE).join(RTE_TRAIN);
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(hub_fixtures().join("nyu-mll/glue").join(RTE_TRAIN)).unwrap()
    );
    assert_eq!(
        std::fs::read_link(&cached).unwrap().file_name().unwrap().to_str(),
        Some(fixture_sha(RTE_TRAIN).as_str())
    );
    // cached: a second fetch asks only for the listing; offline asks nothing
    let n = h.requests();
    let again = ok(h.run(&["data", "fetch", "--task", "rte", "--json"], false));
    assert_eq!((again["files"].clone(), h.requests()), (f["files"].clone(), n + 1));
    let offline = ok(h.run(&["data", "fetch", "--task", "rte", "--json"], true));
    assert_eq!((offline["files"].clone(), h.requests()), (f["files"].clone(), n + 1));
    let human = h.run(&["data", "fetch", "--task", "rte"], true);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(GLUE) && text.contains(RTE_TRAIN) && text.contains(&fixture_sha(RTE_DEV)),
        "{text}"
    );
    // other revisions: a tag gets its ref; a commit none; an unknown one is named
    ok(h.run(&["data", "fetch", "--task", "rte", "--revision", "v1.0", "--json"], false));
    assert_eq!(std::fs::read_to_string(dir.join("refs/v1.0")).unwrap(), GLUE);
    let pinned = ok(h.run(&["data", "fetch", "--task", "rte", "--revision", GLUE, "--json"], true));
    assert_eq!(pinned["commit"], GLUE);
    fails(
        h.run(&["data", "fetch", "--task", "rte", "--revision", "nope"], false),
        &["nope", "no such revision", "nyu-mll/glue"],
    );
    // the list: repo, refs, files
    let list = ok(h.run(&["data", "list", "--json"], true));
    let d = &list["datasets"][0];
    assert_eq!((d["repo"].as_str(), d["refs"]["main"].as_str()), (Some("nyu-mll/glue"), Some(GLUE)));
    assert_eq!(d["snapshots"][0]["files"].as_array().unwrap().len(), 2, "{list}");
    // a split the repo lacks (the fixture BoolQ has no train file), a repo the Hub lacks
    fails(
        h.run(&["data", "fetch", "--task", "boolq"], false),
        &["boolq", "aps/super_glue", "split `train`", "boolq/"],
    );
    let spec = h.work.path().join("missing.toml");
    let rte = include_str!("../src/data/tasks/rte.toml");
    std::fs::write(
        &spec,
        rte.replace("nyu-mll/glue", "s3pet-test/missing").replace("name = \"rte\"", "name = \"m\""),
    )
    .unwrap();
    let s = spec.to_str().unwrap();
    fails(
        h.run(&["data", "fetch", "--task", s], false),
        &["s3pet-test/missing", "no such dataset repo", &h.mirror.endpoint],
    );
}

#[test]
fn run_and_train_from_the_hub_then_offline_then_an_empty_cache() {
    let h = Hub::new();
    let run = |out: &str, offline: bool| {
        let args = [
            "run",
            "--task",
            "rte",
            "--space",
            "mix",
            "--budget-params",
            "500",
            "--order",
            "1",
            "--out",
            out,
        ];
        let extra = [
            "--max-train-examples",
            "64",
            "--max-eval-examples",
            "32",
            "--search-epochs",
            "1",
            "--retrain-epochs",
            "1",
        ];
        h.run(&[&args[..], &extra, &["--batch-size", "16", "--threads", "1", "-q"]].concat(), offline)
    };
    let online = ok(run(&h.out("x"), false));
    let cfg = read_json(&h.work.path().join("x/config.json"));
    assert!(cfg["data_dir"]["value"].is_null(), "{cfg}");
    let data = &cfg["data"]["value"];
    assert_eq!(
        (data["source"].as_str(), data["repo"].as_str(), data["commit"].as_str()),
        (Some("hub"), Some("nyu-mll/glue"), Some(GLUE))
    );
    assert_eq!(data["files"][0]["sha256"].as_str(), Some(fixture_sha(RTE_TRAIN).as_str()));
    // the same command offline runs from the cache, with the same results, and asks nothing
    let n = h.requests();
    let offline = ok(run(&h.out("y"), true));
    assert_eq!((&offline["test"], &offline["structure"]), (&online["test"], &online["structure"]));
    assert_eq!(read_json(&h.work.path().join("y/config.json"))["data"]["value"], *data);
    let eval = ok(h.run(&["eval", "--run", &h.out("x")], true));
    assert_eq!(eval["metrics"], online["test"]);
    assert_eq!(h.requests(), n);
    // train with a manual method from the Hub
    let t = ok(h.run(
        &[&["train", "--task", "rte", "--method", "lora", "--out", &h.out("t")][..], &QUICK].concat(),
        false,
    ));
    assert!(t["test"]["accuracy"].is_number());
    // a data directory wins over the Hub
    let dir = h.work.path().join("data/glue/RTE");
    std::fs::create_dir_all(&dir).unwrap();
    let rows: String = (0..12)
        .map(|i| {
            format!("{i}\tA man walks {i}.\tA man moves.\t{}\n", ["entailment", "not_entailment"][i % 2])
        })
        .collect();
    for f in ["train.tsv", "dev.tsv"] {
        std::fs::write(dir.join(f), format!("index\tsentence1\tsentence2\tlabel\n{rows}")).unwrap();
    }
    let n = h.requests();
    let data_dir = h.work.path().join("data");
    ok(h.cmd(&[&["train", "--task", "rte", "--out", &h.out("d")][..], &QUICK].concat(), false)
        .env("S3PET_DATA", &data_dir)
        .output()
        .unwrap());
    assert_eq!(h.requests(), n, "no hub request with S3PET_DATA");
    assert_eq!(read_json(&h.work.path().join("d/config.json"))["data"]["value"]["source"], "dir");
    // offline with an empty cache: one message naming the task, the repo and `data fetch`
    let empty = tempfile::tempdir().unwrap();
    let out = h
        .cmd(
            &["run", "--task", "rte", "--space", "mix", "--budget-params", "500", "--out", &h.out("z")],
            true,
        )
        .env("HF_HOME", empty.path())
        .output()
        .unwrap();
    let line = fails(
        out,
        &[
            "task `rte`",
            "dataset `nyu-mll/glue`",
            "revision `main`",
            "not in the hub cache",
            "s3pet data fetch --task rte",
        ],
    );
    assert!(!h.work.path().join("z").exists(), "nothing written: {line}");
}

#[test]
fn a_user_task_spec_on_a_csv_repo_runs_end_to_end() {
    let h = Hub::new();
    let spec = h.work.path().join("sentiment.toml");
    std::fs::write(
        &spec,
        "name = \"sentiment\"\nkind = \"classification\"\ntext_a = \"{review}\"\nlabel = \"sentiment\"\n\
         labels = [\"negative\", \"positive\"]\nmetrics = [\"accuracy\", \"f1\"]\n\n[hub]\nrepo = \"s3pet-test/sentiment\"\n",
    )
    .unwrap();
    let s = spec.to_str().unwrap();
    let r = ok(h.run(
        &[&["train", "--task", s, "--method", "lora", "--out", &h.out("s")][..], &QUICK].concat(),
        false,
    ));
    assert_eq!(r["train_examples"], 200);
    let cfg = read_json(&h.work.path().join("s/config.json"));
    assert_eq!(cfg["data"]["value"]["repo"], "s3pet-test/sentiment");
    assert_eq!(cfg["data"]["value"]["files"][1]["path"], "validation.csv");
    ok(h.run(&["eval", "--run", &h.out("s"), "--split", "dev"], true));
    // a spec with files only needs a directory; one with a [hub] table only, no directory
    let dir_only = h.work.path().join("dir-only.toml");
    let rte = include_str!("../src/data/tasks/rte.toml");
    std::fs::write(&dir_only, rte.split("\n[hub]").next().unwrap().replace("name = \"rte\"", "name = \"d\""))
        .unwrap();
    let d = dir_only.to_str().unwrap();
    fails(
        h.run(&["train", "--task", d, "--out", &h.out("v")], false),
        &["`d`", "no [hub] table", "--data-dir", "S3PET_DATA"],
    );
    fails(h.run(&["data", "fetch", "--task", d], false), &["`d`", "no [hub] table", "nothing to fetch"]);
    let out = h
        .cmd(&["train", "--task", s, "--out", &h.out("w")], false)
        .env("S3PET_DATA", h.work.path())
        .output()
        .unwrap();
    fails(out, &["sentiment.train", "no files for a data directory", "S3PET_DATA"]);
    // a test split without labels (the Hub's -1) is named with its file and row
    let rte = include_str!("../src/data/tasks/rte.toml").replace("name = \"rte\"", "name = \"rte-test\"");
    let spec = h.work.path().join("rte-test.toml");
    std::fs::write(&spec, format!("{rte}test = \"test\"\n")).unwrap();
    let out = h.run(
        &[&["train", "--task", spec.to_str().unwrap(), "--out", &h.out("u")][..], &QUICK].concat(),
        false,
    );
    fails(out, &["rte/test-00000-of-00001.parquet:1", "label -1", "no label"]);
}

#[test]
fn a_killed_fetch_leaves_no_complete_looking_file_and_the_next_one_resumes() {
    let h = Hub::new();
    h.mirror.set_fault(Fault::StallAfter(RTE_TRAIN.into(), 20_000));
    let mut child = h.cmd(&["data", "fetch", "--task", "rte"], false).spawn().unwrap();
    let blobs = h.repo_dir("nyu-mll/glue").join("blobs");
    let part = blobs.join(format!("{}.part", fixture_sha(RTE_TRAIN)));
    let start = std::time::Instant::now();
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 20_000 {
        assert!(start.elapsed().as_secs() < 120, "no partial download in {}", part.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let names: Vec<String> =
        std::fs::read_dir(&blobs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(
        names.iter().all(|n| n.ends_with(".part") || n.ends_with(".lock")),
        "only partial files: {names:?}"
    );
    assert!(!h.repo_dir("nyu-mll/glue").join("snapshots").join(GLUE).join(RTE_TRAIN).exists());
    fails(h.run(&["data", "fetch", "--task", "rte"], true), &["not in the hub cache"]);
    let list = ok(h.run(&["data", "list", "--json"], true));
    assert_eq!(
        list["datasets"][0]["incomplete"][0].as_str(),
        Some(part.file_name().unwrap().to_str().unwrap())
    );
    // the next fetch continues the part file and ends with the right bytes
    h.mirror.set_fault(Fault::None);
    let f = ok(h.run(&["data", "fetch", "--task", "rte", "--json"], false));
    assert_eq!(f["files"][0]["sha256"].as_str(), Some(fixture_sha(RTE_TRAIN).as_str()));
    assert!(h.mirror.requests().iter().any(|r| r.contains(RTE_TRAIN) && r.ends_with(" 20000-")), "resumed");
    assert!(!part.exists());
}

#[test]
fn a_short_or_damaged_file_is_refused_and_fetched_again() {
    let h = Hub::new();
    h.mirror.set_fault(Fault::ShortBody(RTE_DEV.into(), 1000));
    let line = fails(
        h.run(&["data", "fetch", "--task", "rte"], false),
        &[RTE_DEV, "incomplete or corrupt", "got 1000 bytes", "run again"],
    );
    let snap = h.repo_dir("nyu-mll/glue").join("snapshots").join(GLUE);
    assert!(
        !snap.join(RTE_DEV).exists()
            && !h.repo_dir("nyu-mll/glue").join("blobs").join(fixture_sha(RTE_DEV)).exists(),
        "{line}"
    );
    h.mirror.set_fault(Fault::None);
    ok(h.run(&["data", "fetch", "--task", "rte", "--json"], false));
    // a damaged cache: offline it is named, online it is fetched again
    let blob = std::fs::canonicalize(snap.join(RTE_DEV)).unwrap();
    std::fs::write(&blob, b"PAR1 damaged").unwrap();
    fails(h.run(&["data", "fetch", "--task", "rte"], true), &[RTE_DEV, "damaged", "s3pet data fetch"]);
    let f = ok(h.run(&["data", "fetch", "--task", "rte", "--json"], false));
    assert_eq!(f["files"][1]["sha256"].as_str(), Some(fixture_sha(RTE_DEV).as_str()));
}
