//! The bad-input table of docs/ERRORS.md, one test per row: the real binary on a damaged copy of the
//! tiny fixture model and on synthetic task data. Each bad input must exit with status 1, name the file
//! (with its line), the key or the site at fault, and leave what is already saved as it was: a previous
//! run in the output directory survives even `--overwrite`, because bad input fails before a run
//! directory is written.
mod common;
use common::{task_dir, tiny_dir};
use s3pet::backbone::{Arch, BertConfig};
use s3pet::structure::{method_modules, Structure};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const QUICK: [&str; 8] = ["--max-steps", "3", "--batch-size", "8", "--eval-every", "2", "--threads", "1"];

/// A synthetic task, a private copy of the tiny model (to damage) and a previous run in `prev`.
struct Case {
    d: tempfile::TempDir,
    model: PathBuf,
    data: PathBuf,
    prev: PathBuf,
}

/// Every file of a directory (recursively) with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `err` contains every part.
fn names(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "the error should name `{p}`:\n{err}");
    }
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "failed:\n{}", stderr(&out));
    out
}

impl Case {
    fn new() -> Self {
        let d = task_dir();
        let model = d.path().join("model");
        std::fs::create_dir(&model).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(tiny_dir().join(f), model.join(f)).unwrap();
        }
        // what an earlier run left: any of it lost would be a bug
        let prev = d.path().join("prev");
        std::fs::create_dir(&prev).unwrap();
        for (f, text) in [
            ("config.json", "{\"previous\": \"config\"}\n"),
            ("structure.json", "{\"previous\": \"structure\"}\n"),
            ("weights.safetensors", "previous weights"),
            ("metrics.jsonl", "{\"previous\": \"metrics\"}\n"),
            ("report.json", "{\"previous\": \"report\"}\n"),
        ] {
            std::fs::write(prev.join(f), text).unwrap();
        }
        let data = d.path().to_path_buf();
        Case { d, model, data, prev }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.d.path().join(name)
    }

    fn task(&self) -> String {
        self.path("task.toml").display().to_string()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_s3pet"));
        c.arg("-q").args(args).env("S3PET_MODEL", &self.model).env("S3PET_DATA", &self.data);
        c
    }

    /// Runs s3pet with `args`; asserts exit status 1 and an `error:` line; returns stderr.
    fn fails_with(&self, mut c: Command, what: &str) -> String {
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what} should fail with exit status 1:\n{err}");
        assert!(err.contains("error: "), "{what}: no error line:\n{err}");
        err
    }

    fn fails(&self, args: &[&str]) -> String {
        self.fails_with(self.cmd(args), &format!("{args:?}"))
    }

    /// `command` with `args` + QUICK, writing over the previous run with `--overwrite`: must fail and
    /// leave the previous run as it was.
    fn fails_keeping_prev(&self, command: &str, args: &[&str]) -> String {
        let before = files(&self.prev);
        let prev = self.prev.display().to_string();
        let all = [&[command, "--out", &prev, "--overwrite"], args, &QUICK[..]].concat();
        let err = self.fails(&all);
        assert!(files(&self.prev) == before, "{all:?} changed the previous run in {prev}:\n{err}");
        err
    }

    /// `train --task <task> --method lora` over the previous run.
    fn train_fails(&self) -> String {
        self.fails_keeping_prev("train", &["--task", &self.task(), "--method", "lora"])
    }

    fn edit(&self, name: &str, f: impl FnOnce(String) -> String) {
        let p = self.path(name);
        std::fs::write(&p, f(std::fs::read_to_string(&p).unwrap())).unwrap();
    }

    fn model_file(&self, f: &str) -> PathBuf {
        self.model.join(f)
    }

    /// structure.json of LoRA on the tiny model, as JSON to damage.
    fn lora_structure(&self) -> Value {
        let cfg = BertConfig::from_file(&self.model_file("config.json")).unwrap();
        let s = Structure::manual("lora", method_modules("lora", &cfg).unwrap(), &cfg, cfg.param_count())
            .unwrap();
        serde_json::to_value(&s).unwrap()
    }

    fn write_json(&self, name: &str, v: &Value) -> String {
        let p = self.path(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
        p.display().to_string()
    }

    /// A real (3-step) LoRA run in `name`.
    fn real_run(&self, name: &str) -> PathBuf {
        let out = self.path(name);
        let o = out.display().to_string();
        ok(self
            .cmd(&[&["train", "--task", &self.task(), "--out", &o], &QUICK[..]].concat())
            .output()
            .unwrap());
        out
    }
}

#[test]
fn missing_model_dir() {
    let c = Case::new();
    std::fs::remove_dir_all(&c.model).unwrap();
    let err = c.train_fails();
    names(&err, &[&c.model.display().to_string(), "model directory not found", "--model"]);
}

#[test]
fn unknown_cuda_graphs_value() {
    let c = Case::new();
    let before = files(&c.prev);
    let prev = c.prev.display().to_string();
    let mut cmd =
        c.cmd(&[&["train", "--task", &c.task(), "--out", &prev, "--overwrite"], &QUICK[..]].concat());
    cmd.env("S3PET_CUDA_GRAPHS", "yes");
    let err = c.fails_with(cmd, "S3PET_CUDA_GRAPHS=yes");
    names(&err, &["S3PET_CUDA_GRAPHS=\"yes\"", "on", "search", "off"]);
    assert!(files(&c.prev) == before, "the previous run changed:\n{err}");
}

#[test]
fn missing_config_json() {
    let c = Case::new();
    std::fs::remove_file(c.model_file("config.json")).unwrap();
    let err = c.train_fails();
    names(&err, &[&c.model_file("config.json").display().to_string(), "No such file"]);
}

#[test]
fn missing_model_safetensors() {
    let c = Case::new();
    std::fs::remove_file(c.model_file("model.safetensors")).unwrap();
    let err = c.train_fails();
    names(
        &err,
        &[&c.model_file("model.safetensors").display().to_string(), "missing from the model directory"],
    );
}

#[test]
fn truncated_model_safetensors() {
    let c = Case::new();
    let path = c.model_file("model.safetensors");
    let full = std::fs::read(&path).unwrap();
    // inside the length prefix, inside the header, inside the data, one byte short
    for cut in [4, 40, full.len() / 2, full.len() - 1] {
        std::fs::write(&path, &full[..cut]).unwrap();
        let err = c.train_fails();
        names(&err, &[&path.display().to_string(), "cannot read safetensors", "truncated"]);
    }
}

#[test]
fn corrupt_safetensors_header() {
    let c = Case::new();
    let path = c.model_file("model.safetensors");
    let good = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    // the JSON header's opening brace, then its closing one, then an absurd header length
    let mut no_brace = good.clone();
    no_brace[8] = b'X';
    let mut bad_json = good.clone();
    let close = 8 + good[8..8 + n].iter().rposition(|&b| b == b'}').unwrap();
    bad_json[close] = b' ';
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    for bytes in [no_brace, bad_json, huge] {
        std::fs::write(&path, bytes).unwrap();
        let err = c.train_fails();
        names(&err, &[&path.display().to_string(), "cannot read safetensors", "corrupt"]);
    }
}

#[test]
fn config_weight_shape_mismatch() {
    let c = Case::new();
    let cfg = c.model_file("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"hidden_size\": 32", "\"hidden_size\": 48");
    std::fs::write(&cfg, text).unwrap();
    let err = c.train_fails();
    names(
        &err,
        &[
            &c.model_file("config.json").display().to_string(),
            "does not describe the weights",
            "embeddings.word_embeddings.weight",
            &c.model_file("model.safetensors").display().to_string(),
            "[1000, 32]",
            "[1000, 48]",
        ],
    );
}

#[test]
fn missing_tokenizer_json() {
    let c = Case::new();
    std::fs::remove_file(c.model_file("tokenizer.json")).unwrap();
    let err = c.train_fails();
    names(&err, &[&c.model_file("tokenizer.json").display().to_string(), "missing"]);
}

#[test]
fn missing_data_dir() {
    let c = Case::new();
    // a builtin task whose files would be under a data directory that does not exist
    let nodata = c.path("no-such-data");
    let mut cmd = c.cmd(&["train", "--task", "rte", "--out", &c.prev.display().to_string(), "--overwrite"]);
    cmd.env("S3PET_DATA", &nodata);
    let before = files(&c.prev);
    let err = c.fails_with(cmd, "S3PET_DATA=no-such-data");
    names(&err, &[&nodata.display().to_string(), "data directory not found", "glue/RTE/train.tsv"]);
    // no data directory at all (no --data-dir, no S3PET_DATA): the Hub, here offline with an empty cache
    let hf_home = c.path("hf-home");
    let mut cmd = c.cmd(&["train", "--task", "rte", "--out", &c.prev.display().to_string(), "--overwrite"]);
    cmd.env_remove("S3PET_DATA").env("HF_HOME", &hf_home).env("HF_HUB_OFFLINE", "1").current_dir(&c.model);
    let err = c.fails_with(cmd, "no data dir, offline");
    names(
        &err,
        &["task `rte`", "nyu-mll/glue", "not in the hub cache", "s3pet data fetch --task rte", "--data-dir"],
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error: ")).count(), 1, "one message: {err}");
    assert!(files(&c.prev) == before);
}

#[test]
fn missing_split_file() {
    let c = Case::new();
    std::fs::remove_file(c.path("dev.tsv")).unwrap();
    let err = c.train_fails();
    names(&err, &[&c.path("dev.tsv").display().to_string(), "no such file"]);
}

#[test]
fn malformed_tsv_row() {
    let c = Case::new();
    let lines = |t: String| {
        t.lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == 5 { format!("{l}\textra\n") } else { format!("{l}\n") })
            .collect()
    };
    c.edit("train.tsv", lines);
    let err = c.train_fails();
    names(&err, &[&format!("{}:5", c.path("train.tsv").display()), "expected 3", "found 4"]);
}

#[test]
fn malformed_jsonl_row() {
    let c = Case::new();
    let row = |i: usize| {
        format!("{{\"a\": \"the man {i}\", \"b\": \"the woman {i}\", \"label\": {}}}\n", i.is_multiple_of(2))
    };
    std::fs::write(c.path("train.jsonl"), (0..10).map(row).collect::<String>()).unwrap();
    let dev: String = (0..6).map(row).collect();
    std::fs::write(c.path("dev.jsonl"), format!("{dev}{{\"a\": \"x\", \"b\": \"y\", \"label\": tru}}\n"))
        .unwrap();
    std::fs::write(
        c.path("jtask.toml"),
        "name = \"j\"\nkind = \"classification\"\nformat = \"jsonl\"\ntrain = \"train.jsonl\"\n\
         dev = \"dev.jsonl\"\ntext_a = \"{a}\"\ntext_b = \"{b}\"\nlabel = \"label\"\n\
         labels = [\"false\", \"true\"]\nmetrics = [\"accuracy\"]\n",
    )
    .unwrap();
    let task = c.path("jtask.toml").display().to_string();
    let err = c.fails_keeping_prev("train", &["--task", &task]);
    names(&err, &[&format!("{}:7", c.path("dev.jsonl").display()), "invalid JSON"]);
}

#[test]
fn unknown_label_value() {
    let c = Case::new();
    let relabel = |t: String| {
        t.lines()
            .enumerate()
            .map(|(i, l)| {
                if i + 1 == 7 {
                    format!("{}\tmaybe\n", l.rsplit_once('\t').unwrap().0)
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    };
    c.edit("train.tsv", relabel);
    let err = c.train_fails();
    names(
        &err,
        &[&format!("{}:7", c.path("train.tsv").display()), "unknown label `maybe`", "different, same"],
    );
}

#[test]
fn empty_split() {
    let c = Case::new();
    // a file with only its header
    std::fs::write(c.path("dev.tsv"), "a\tb\tlabel\n\n").unwrap();
    let err = c.train_fails();
    names(&err, &[&c.path("dev.tsv").display().to_string(), "no examples"]);
    // one dev example: halved into dev and an empty test split
    std::fs::write(c.path("dev.tsv"), "a\tb\tlabel\nthe man\tthe man\tsame\n").unwrap();
    let err = c.train_fails();
    names(&err, &[&c.path("dev.tsv").display().to_string(), "the test split is empty"]);
}

#[test]
fn budget_below_smallest_candidate() {
    let c = Case::new();
    let t = c.task();
    let err = c.fails_keeping_prev("run", &["--task", &t, "--space", "mix", "--budget-params", "10"]);
    names(
        &err,
        &["budget", "10 parameters", "below the smallest candidate (32", "site `embeddings.LayerNorm`"],
    );
    let err = c.fails_keeping_prev("search", &["--task", &t, "--space", "mix", "--budget", "1e-4"]);
    names(&err, &["budget", "5 parameters (0.0001 of the backbone's 52320)", "smallest candidate"]);
}

#[test]
fn budget_at_or_above_whole_space() {
    let c = Case::new();
    let t = c.task();
    let err = c.fails_keeping_prev("run", &["--task", &t, "--space", "mix", "--budget-params", "2060"]);
    names(&err, &["budget", "2060 parameters", "whole space (2060 parameters in 38 candidates)"]);
    let err = c.fails_keeping_prev("search", &["--task", &t, "--space", "lora", "--budget", "0.5"]);
    names(&err, &["budget", "0.5 of the backbone", "whole space (896 parameters"]);
}

#[test]
fn structure_naming_an_unknown_site() {
    let c = Case::new();
    let mut s = c.lora_structure();
    s["modules"][2]["site"] = "encoder.layer.9.attention.self.value".into();
    let p = c.write_json("structure.json", &s);
    for command in ["retrain", "train"] {
        let err = c.fails_keeping_prev(command, &["--task", &c.task(), "--structure", &p]);
        names(&err, &[&p, "site `encoder.layer.9.attention.self.value`", "no such site"]);
    }
}

#[test]
fn structure_over_its_budget() {
    let c = Case::new();
    let mut s = c.lora_structure();
    s["budget_params"] = 1000.into();
    let p = c.write_json("structure.json", &s);
    let err = c.fails_keeping_prev("retrain", &["--task", &c.task(), "--structure", &p]);
    names(&err, &[&p, "2048 parameters", "over budget_params 1000"]);
}

#[test]
fn unknown_key_in_task_spec_toml() {
    let c = Case::new();
    c.edit("task.toml", |t| format!("{t}epochz = 3\n"));
    let err = c.train_fails();
    names(&err, &[&c.task(), "line 12", "unknown field `epochz`"]);
}

#[test]
fn unknown_key_in_space_toml() {
    let c = Case::new();
    let t = c.task();
    let space = c.path("space.toml");
    let s = space.display().to_string();
    // a top-level key at the start of its line, then a key inside a module template
    std::fs::write(&space, "name = \"x\"\ncolour = 1\nrules = []\n").unwrap();
    let err = c.fails_keeping_prev("run", &["--task", &t, "--space", &s, "--budget-params", "300"]);
    names(&err, &[&format!("{s}:2"), "unknown field `colour`"]);
    let text = include_str!("../src/spaces/lora.toml").replace("rank = 1", "rnk = 1");
    std::fs::write(&space, &text).unwrap();
    let line = 1 + text.lines().position(|l| l.contains("rnk")).unwrap();
    let err = c.fails_keeping_prev("search", &["--task", &t, "--space", &s, "--budget-params", "300"]);
    names(&err, &[&format!("{s}:{line}"), "unknown field `rnk`"]);
}

#[test]
fn unknown_key_in_structure_json() {
    let c = Case::new();
    let mut s = c.lora_structure();
    s["modules"][0]["rnk"] = 4.into();
    let p = c.write_json("structure.json", &s);
    let err = c.fails_keeping_prev("retrain", &["--task", &c.task(), "--structure", &p]);
    names(&err, &[&format!("{p}:"), "unknown field `rnk`"]);
    s["modules"][0].as_object_mut().unwrap().remove("rnk");
    s["colour"] = "red".into();
    let p = c.write_json("structure.json", &s);
    let err = c.fails_keeping_prev("train", &["--task", &c.task(), "--structure", &p]);
    names(&err, &[&format!("{p}:"), "unknown field `colour`"]);
}

#[test]
fn unknown_key_in_run_config_json() {
    let c = Case::new();
    let run = c.real_run("run");
    let cfg = run.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["learning_rate"] = 0.1.into();
    std::fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let before = files(&run);
    let r = run.display().to_string();
    let err = c.fails(&["train", "--task", &c.task(), "--out", &r, "--resume"]);
    names(&err, &[&format!("{}:", cfg.display()), "unknown field `learning_rate`"]);
    let err = c.fails(&["eval", "--run", &r]);
    names(&err, &[&format!("{}:", cfg.display()), "unknown field `learning_rate`"]);
    assert!(files(&run) == before, "a failed resume or eval changed the run");
}

/// Whether this process may mount a tmpfs in a private mount namespace (root, or CAP_SYS_ADMIN).
fn can_mount_tmpfs(at: &Path) -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k s3pet-probe \"$0\"", &at.display().to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn disk_full_while_saving() {
    let c = Case::new();
    let run = c.real_run("run");
    // three more steps to run on --resume: the next evaluation saves weights and a checkpoint
    let cfg = run.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["max_steps"] = 9.into();
    std::fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let before = files(&run);
    let bin = env!("CARGO_BIN_EXE_s3pet");
    let task = c.task();
    let mnt = c.path("full");
    std::fs::create_dir(&mnt).unwrap();
    let (out, dir, what) = if can_mount_tmpfs(&mnt) {
        // a real full disk: a 256 KiB tmpfs (private mount namespace, gone when the shell exits) holding
        // a copy of the run, filled up to its last 8 KiB; the run is copied back out for inspection.
        let script = r#"
            set -e
            mnt=$1; src=$2; back=$3; shift 3
            mount -t tmpfs -o size=256k s3pet-full "$mnt" || exit 99
            cp -a "$src"/. "$mnt"/
            dd if=/dev/zero of="$mnt/.filler" bs=4k 2>/dev/null || true
            truncate -s -8K "$mnt/.filler"
            set +e
            "$@"; rc=$?
            rm -f "$mnt/.filler"
            mkdir "$back" && cp -a "$mnt"/. "$back"/ || exit 98
            exit $rc"#;
        let back = c.path("back");
        let m = mnt.display().to_string();
        let out = Command::new("unshare")
            .args(["-m", "bash", "-c", script, "bash", &m, &run.display().to_string()])
            .arg(&back)
            .args([bin, "-q", "train", "--task", &task, "--out", &m, "--resume", "--threads", "1"])
            .env("S3PET_MODEL", &c.model)
            .env("S3PET_DATA", &c.data)
            .output()
            .unwrap();
        (out, back, "No space left on device")
    } else {
        // no mount allowed: the same writes fail on a file-size limit (EFBIG) instead of ENOSPC
        let r = run.display().to_string();
        let out = Command::new("bash")
            .args(["-c", "trap '' XFSZ; ulimit -f 4; exec \"$@\"", "bash", bin])
            .args(["-q", "train", "--task", &task, "--out", &r, "--resume", "--threads", "1"])
            .env("S3PET_MODEL", &c.model)
            .env("S3PET_DATA", &c.data)
            .output()
            .unwrap();
        (out, run.clone(), "File too large")
    };
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a run that cannot save must fail with status 1:\n{err}");
    let written = if what == "File too large" { run.clone() } else { mnt.clone() };
    names(&err, &[&written.display().to_string(), "cannot write safetensors", what]);
    // the saved weights, checkpoint, config, structure and report are byte for byte as before, no temporary
    // file is left behind, and the metrics log still holds every dev evaluation it had
    let after = files(&dir);
    for f in ["weights.safetensors", "checkpoint.safetensors", "config.json", "structure.json", "report.json"]
    {
        assert!(after.get(&dir.join(f)) == before.get(&run.join(f)), "{f} changed or was lost");
    }
    assert!(
        after.keys().all(|p| !p.file_name().unwrap().to_string_lossy().contains(".tmp")),
        "temporary files left: {:?}",
        after.keys()
    );
    let log = String::from_utf8(after[&dir.join("metrics.jsonl")].clone()).unwrap();
    let old = String::from_utf8(before[&run.join("metrics.jsonl")].clone()).unwrap();
    for line in old.lines().filter(|l| l.contains("\"dev\"")) {
        assert!(log.contains(line), "lost the metrics line {line}");
    }
}

#[test]
fn resume_on_a_directory_that_is_not_a_run() {
    let c = Case::new();
    let dir = c.path("notes");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let d = dir.display().to_string();
    let t = c.task();
    for args in [
        vec!["train", "--task", &t, "--out", &d, "--resume"],
        vec!["run", "--task", &t, "--budget-params", "300", "--out", &d, "--resume"],
    ] {
        let err = c.fails(&args);
        names(&err, &[&d, "not a run directory (no config.json)"]);
    }
    assert_eq!(files(&dir).len(), 1, "nothing may be written into a directory that is not a run");
    let missing = c.path("nowhere").display().to_string();
    let err = c.fails(&["train", "--task", &t, "--out", &missing, "--resume"]);
    names(&err, &[&missing, "not a run directory"]);
    assert!(!c.path("nowhere").exists(), "--resume must not create the directory");
}
