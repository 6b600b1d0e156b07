//! Data parallelism on the CPU: worlds of 1-4 ranks over threads (s3pet::dist::thread, standing in for
//! NCCL) and over processes (`s3pet launch`, the TCP backend) end with the weights of one process at
//! the same global batch; a run checkpointed by one world resumes on another; a failing rank fails the
//! launch naming it. Real model (all-MiniLM-L6-v2, with its dropout set to 0: ranks draw dropout masks
//! for their shards only, so with dropout a world matches one process in distribution, not in value)
//! and real RTE rows, cut to a few examples.
mod common;

use common::required;
use s3pet::config::{resolve, Command, Given, Method, RunConfig, Source};
use s3pet::data::TaskSpec;
use s3pet::pipeline::{resume_config, search_only, train_run, RunOpts};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use tch::Tensor;

/// Weights of one process and of a world may differ by float rounding (shards add in another order).
const WORLD_TOL: f64 = 1e-5;
/// The second-order search's finite-difference Hessian term divides the difference of two alpha
/// gradients by 2 eps (eps = 0.01 / |dw'|), which magnifies that rounding (2.1e-5 seen after 3 steps).
const SECOND_ORDER_TOL: f64 = 1e-4;

fn minilm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

/// MiniLM with dropout 0 in a temporary directory (its other files linked).
fn no_dropout_model(tmp: &Path) -> PathBuf {
    let dir = tmp.join("minilm-nodrop");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let src = minilm().join(f);
        if src.exists() {
            std::os::unix::fs::symlink(&src, dir.join(f)).unwrap();
        }
    }
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(minilm().join("config.json")).unwrap()).unwrap();
    cfg["hidden_dropout_prob"] = json!(0.0);
    cfg["attention_probs_dropout_prob"] = json!(0.0);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

/// A temporary directory with the dropout-free model in it; `None` (the test does not run) when the
/// model or the RTE data is missing.
fn setup() -> Option<(tempfile::TempDir, PathBuf)> {
    let present = required(&minilm().join("model.safetensors"), "all-MiniLM-L6-v2")
        && required(&common::shared_data().join("glue/RTE/train.tsv"), "GLUE RTE");
    present.then(|| {
        let tmp = tempfile::tempdir().unwrap();
        let model = no_dropout_model(tmp.path());
        (tmp, model)
    })
}

/// 17 training examples in batches of 8 (the last batch holds one: in a world of 2 or more one rank
/// gets none and runs a stand-in), 12 dev and test examples.
fn given(model: &Path, extra: &[(&str, Value)]) -> Given {
    let mut g = Given::new();
    let base = [
        ("task", json!("rte")),
        ("model", json!(model)),
        ("data_dir", json!(common::shared_data())),
        ("seed", json!(3)),
        ("batch_size", json!(8)),
        ("max_train_examples", json!(17)),
        ("max_eval_examples", json!(12)),
        ("max_length", json!(32)),
        ("lr", json!(5e-4)),
        ("threads", json!(1)), // the ranks are threads already: no intra-op pool each on 2 cores
    ];
    for (k, v) in base.into_iter().chain(extra.iter().cloned()) {
        g.insert(k.to_string(), (v, Source::Cli));
    }
    g
}

fn config(command: Command, method: Method, g: &Given) -> RunConfig {
    resolve(command, method, &TaskSpec::resolve("rte").unwrap(), g).unwrap()
}

fn opts(resume: bool) -> RunOpts {
    RunOpts { resume, overwrite: true, quiet: true }
}

/// Runs `f(rank, out)` on every rank of a world of `size` threads (its out directory under `dir`).
fn on_threads(size: usize, dir: &Path, f: impl Fn(usize, PathBuf) + Sync) -> Vec<PathBuf> {
    let worlds = s3pet::dist::thread::worlds(size);
    let outs: Vec<PathBuf> = (0..size).map(|r| dir.join(format!("rank{r}"))).collect();
    std::thread::scope(|s| {
        let hs: Vec<_> = worlds
            .into_iter()
            .zip(&outs)
            .enumerate()
            .map(|(r, (w, out))| {
                let f = &f;
                s.spawn(move || {
                    let _g = s3pet::dist::install(w);
                    f(r, out.clone())
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().expect("a rank panicked"));
    });
    outs
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

/// The largest difference between two safetensors files of the same tensors (a checkpoint's wall-clock
/// seconds aside).
fn max_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len(), "different tensors");
    let timed = |k: &str| k == "meta.seconds";
    a.iter()
        .filter(|(k, _)| !timed(k))
        .map(|(k, t)| (t - &b[k]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// The world's rank 0 matches one process within [`WORLD_TOL`]; every rank holds the same weights.
fn assert_world_matches(one: &Path, outs: &[PathBuf], file: &str) {
    assert_matches(&format!("world of {}", outs.len()), one, outs, file)
}

/// [`assert_world_matches`] for the directories `outs` of `what` (rank 0's first).
fn assert_matches(what: &str, one: &Path, outs: &[PathBuf], file: &str) {
    assert_within(WORLD_TOL, what, one, outs, file)
}

fn assert_within(tol: f64, what: &str, one: &Path, outs: &[PathBuf], file: &str) {
    let d = max_diff(&one.join(file), &outs[0].join(file));
    eprintln!("{what}: {file} differs from one process by {d:e}");
    assert!(d <= tol, "{what}: {file} differs from one process by {d:e} (tolerance {tol:e})");
    for o in &outs[1..] {
        assert_eq!(max_diff(&outs[0].join(file), &o.join(file)), 0.0, "the ranks' weights differ");
    }
}

#[test]
fn lora_training_on_worlds_of_1_to_4_threads_matches_one_process() {
    let Some((tmp, model)) = setup() else { return };
    let cfg = config(Command::Train, Method::Lora, &given(&model, &[("epochs", json!(2))]));
    let one = tmp.path().join("one");
    train_run(&cfg, &one, opts(false)).unwrap();
    let start = tensors(&one.join("weights.safetensors"));
    assert!(start.values().any(|t| t.abs().max().double_value(&[]) > 0.0), "training did nothing");
    for size in 1..=4 {
        let dir = tmp.path().join(format!("world{size}"));
        let outs = on_threads(size, &dir, |_, out| {
            train_run(&cfg, &out, opts(false)).unwrap();
        });
        assert_world_matches(&one, &outs, "checkpoint.safetensors");
        assert_world_matches(&one, &outs, "weights.safetensors");
        if size > 1 {
            // each rank trained on its shards only (a stand-in rank runs one example of the last batch)
            let tokens = |d: &Path| report(d)["train_tokens"].as_i64().unwrap();
            let all: i64 = outs.iter().map(|o| tokens(o)).sum();
            assert!(tokens(&outs[0]) < tokens(&one) && all >= tokens(&one), "world of {size}: not sharded");
        }
        // the dev and test metrics were gathered from every rank's part of the split
        for k in ["dev", "test"] {
            assert_eq!(report(&outs[0])[k], report(&one)[k], "world of {size}: {k} metrics");
        }
    }
}

/// A short search of `order` on worlds of `sizes` threads ends with one process's alpha, w and
/// optimiser states (the search checkpoint) and structure.
fn search_matches(order: u8, sizes: &[usize]) {
    let Some((tmp, model)) = setup() else { return };
    let extra = [
        ("search.order", json!(order)),
        ("search.space", json!("lora")),
        ("search.budget_params", json!(20000)),
        ("search.alpha_lr", json!(0.1)),
        ("search.search_batch_size", json!(3)),
        ("max_steps", json!(3)),
    ];
    let cfg = config(Command::Search, Method::Structure, &given(&model, &extra));
    let one = tmp.path().join("one");
    search_only(&cfg, &one, opts(false)).unwrap();
    let file = "search_checkpoint.safetensors";
    for &size in sizes {
        let outs = on_threads(size, &tmp.path().join(format!("world{size}")), |_, out| {
            search_only(&cfg, &out, opts(false)).unwrap();
        });
        let tol = if order == 2 { SECOND_ORDER_TOL } else { WORLD_TOL };
        assert_within(tol, &format!("order {order}, world of {size}"), &one, &outs, file);
        let structure = |d: &Path| std::fs::read_to_string(d.join("structure.json")).unwrap();
        assert_eq!(structure(&outs[0]), structure(&one), "world of {size}: another structure");
    }
    let alpha = tensors(&one.join(file));
    let moved =
        alpha.iter().filter(|(k, _)| k.contains("alpha")).any(|(_, t)| t.abs().max().double_value(&[]) > 0.0);
    assert!(moved, "the search did not move alpha: {:?}", alpha.keys().collect::<Vec<_>>());
}

#[test]
fn first_order_search_on_worlds_of_2_and_3_threads_matches_one_process() {
    search_matches(1, &[2, 3]);
}

#[test]
fn second_order_search_on_a_world_of_2_threads_matches_one_process() {
    search_matches(2, &[2]);
}

/// Raises a run's saved max_steps (what its config.json says), as a longer run resumed from its checkpoint.
fn raise_max_steps(dir: &Path, steps: usize) {
    let path = dir.join("config.json");
    let mut cfg = RunConfig::load(&path).unwrap();
    cfg.max_steps = Some(steps);
    cfg.save(&path).unwrap();
}

#[test]
fn a_run_checkpointed_by_two_ranks_resumes_on_three_like_one_process() {
    let Some((tmp, model)) = setup() else { return };
    let cfg = config(Command::Train, Method::Lora, &given(&model, &[("max_steps", json!(2))]));
    let one = tmp.path().join("one");
    train_run(&cfg, &one, opts(false)).unwrap();
    raise_max_steps(&one, 4);
    train_run(&resume_config(&one, &Given::new()).unwrap(), &one, opts(true)).unwrap();

    std::env::set_var(s3pet::dist::rank_dir::SCRATCH_ENV, tmp.path().join("scratch"));
    let run = tmp.path().join("world/run");
    on_threads(2, &tmp.path().join("world2"), |r, _| {
        let dir = s3pet::dist::rank_dir::rank_dir(&run, false).unwrap();
        assert_eq!(dir == run, r == 0, "rank 0 alone writes the run directory");
        train_run(&cfg, &dir, opts(false)).unwrap();
    });
    raise_max_steps(&run, 4);
    on_threads(3, &tmp.path().join("world3"), |_, _| {
        let dir = s3pet::dist::rank_dir::rank_dir(&run, true).unwrap();
        train_run(&resume_config(&dir, &Given::new()).unwrap(), &dir, opts(true)).unwrap();
    });
    assert_eq!(report(&run)["steps"], json!(4));
    let what = "2 ranks then 3";
    assert_matches(what, &one, std::slice::from_ref(&run), "checkpoint.safetensors");
    assert_matches(what, &one, &[run], "weights.safetensors");
}

fn s3pet(args: &[&str], tmpdir: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(args)
        .env("TMPDIR", tmpdir)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .unwrap()
}

fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut v = vec!["train", "--task", "rte", "--model", model, "--data-dir", data, "--out", out];
    v.extend(["--seed", "3", "--batch-size", "8", "--max-train-examples", "17", "--max-eval-examples", "12"]);
    v.extend([
        "--max-length",
        "32",
        "--lr",
        "5e-4",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--quiet",
        "--threads",
        "1",
    ]);
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn launch_of_two_processes_trains_like_one_and_rank_0_alone_writes_the_run() {
    let Some((tmp, model)) = setup() else { return };
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    let (m, data) = (model.display().to_string(), common::shared_data().display().to_string());
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let (o1, o2) = (one.display().to_string(), two.display().to_string());
    let r = s3pet(&train_args(&m, &data, &o1), &scratch);
    assert!(r.status.success(), "{}", stderr(&r));
    let mut launch = vec!["launch", "--nproc", "2", "--"];
    launch.extend(train_args(&m, &data, &o2));
    let r = s3pet(&launch, &scratch);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stderr(&r).contains("[rank 1]"), "rank 1's log is relayed: {}", stderr(&r));
    let stdout: Value = serde_json::from_slice(&r.stdout).expect("one report on stdout (rank 0's)");
    assert_eq!(stdout["steps"], json!(3));
    assert_matches("launch --nproc 2", &one, std::slice::from_ref(&two), "weights.safetensors");
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&two), names(&one));
    assert!(names(&scratch).is_empty(), "the ranks' scratch copies are removed: {:?}", names(&scratch));
}

#[test]
fn a_failing_rank_fails_the_launch_naming_it() {
    let Some((tmp, model)) = setup() else { return };
    let (m, data) = (model.display().to_string(), common::shared_data().display().to_string());
    let out = tmp.path().join("run").display().to_string();
    let mut launch = vec!["launch", "--nproc", "3", "--"];
    launch.extend(train_args(&m, &data, &out));
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args(&launch)
        .env(s3pet::dist::launch::FAIL_ENV, "1")
        .output()
        .unwrap();
    let err = stderr(&r);
    assert_eq!(r.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(last, "error: rank 1 failed (exit status: 1); stopped the other ranks", "{err}");
    assert!(err.contains("[rank 1] error: distributed: rank 1: failure injected"), "{err}");
}

#[test]
fn gpu_options_are_refused_without_cuda() {
    if tch::Cuda::is_available() {
        use std::io::Write; // straight to stderr: the harness captures eprintln!
        let _ =
            writeln!(std::io::stderr(), "NOTICE: this test did NOT run: it checks a machine without CUDA");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = s3pet(&["launch", "--gpus", "0,1", "--", "dist-check"], tmp.path());
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).starts_with("error: config key `--gpus`: CUDA is unavailable"), "{}", stderr(&r));
    let r = s3pet(&["launch", "--nproc", "2", "--backend", "nccl", "--", "dist-check"], tmp.path());
    assert!(stderr(&r).starts_with("error: config key `--backend`: nccl needs GPUs"), "{}", stderr(&r));
    let r = s3pet(&["experiment", "--plan", "plans/none.toml", "--gpus", "0"], tmp.path());
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).starts_with("error: config key `--gpus`: CUDA is unavailable"), "{}", stderr(&r));
    let r = s3pet(&["launch", "--nproc", "2", "--", "eval", "--run", "x"], tmp.path());
    assert!(stderr(&r).contains("`eval` cannot be launched"), "{}", stderr(&r));
}

#[test]
fn dist_check_sums_a_known_tensor_over_three_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let r = s3pet(&["launch", "--nproc", "3", "--", "dist-check", "--device", "cpu"], tmp.path());
    assert!(r.status.success(), "{}", stderr(&r));
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(
        (v["world_size"].clone(), v["backend"].clone(), v["ok"].clone()),
        (json!(3), json!("tcp"), json!(true))
    );
    assert_eq!(v["first"], json!([6.0, 12.0, 18.0, 24.0]), "(1 + 2 + 3) (i + 1)");
    // a --config after `--` is the ranks' command's (each rank expands it), not the launcher's
    let cfg = tmp.path().join("check.toml");
    std::fs::write(&cfg, "device = \"cpu\"\n").unwrap();
    let r =
        s3pet(&["launch", "--nproc", "2", "--", "dist-check", "--config", cfg.to_str().unwrap()], tmp.path());
    assert!(r.status.success(), "{}", stderr(&r));
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!((v["world_size"].clone(), v["device"].clone()), (json!(2), json!("Cpu")));
}

/// A copy of a fixture model directory with its config.json's `key` set to 0 (the other files linked).
fn without_dropout(src: &Path, key: &str, tmp: &Path) -> PathBuf {
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "config.json" {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg[key] = json!(0.0);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

/// A T5 averages its loss over label-word tokens ("different" and "same" differ in length), so ranks
/// weigh their gradients by tokens, not examples: three processes still end like one.
#[test]
fn launch_of_three_t5_ranks_weighs_label_tokens_like_one_process() {
    let d = common::task_dir();
    let model = without_dropout(&common::fixtures().join("tiny_t5_v11"), "dropout_rate", d.path());
    let task = d.path().join("task.toml");
    let (m, t, data) =
        (model.display().to_string(), task.display().to_string(), d.path().display().to_string());
    let run = |out: &str, launch: &[&str]| {
        let mut args: Vec<&str> = launch.to_vec();
        args.extend(["train", "--model", &m, "--task", &t, "--data-dir", &data, "--out", out]);
        args.extend(["--lr", "1e-2", "--max-steps", "4"]);
        args.extend(["--batch-size", "8", "--threads", "1", "--device", "cpu", "--quiet"]);
        let r = s3pet(&args, d.path());
        assert!(r.status.success(), "{}", stderr(&r));
    };
    let (one, three) = (d.path().join("one"), d.path().join("three"));
    run(one.to_str().unwrap(), &[]);
    run(three.to_str().unwrap(), &["launch", "--nproc", "3", "--"]);
    assert_matches("t5 launch --nproc 3", &one, std::slice::from_ref(&three), "weights.safetensors");
}

/// Several hosts as on paper, on loopback: two launches of one rank each (`--nnodes 2`, their
/// `--node-rank`, one `--master-port`) make one world of two ranks.
#[test]
fn two_launches_of_one_rank_each_make_a_world_of_two_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let launch = |node: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"))
            .args(["launch", "--nnodes", "2", "--node-rank", node, "--master-port", &port, "--"])
            .args(["dist-check", "--device", "cpu"])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (host0, host1) = (launch("0"), launch("1"));
    let (host0, host1) = (host0.wait_with_output().unwrap(), host1.wait_with_output().unwrap());
    assert!(host0.status.success() && host1.status.success(), "{}\n{}", stderr(&host0), stderr(&host1));
    let v: Value = serde_json::from_slice(&host0.stdout).unwrap();
    assert_eq!((v["world_size"].clone(), v["first"].clone()), (json!(2), json!([3.0, 6.0, 9.0, 12.0])));
    assert!(host1.stdout.is_empty(), "rank 1 (the second host's) prints nothing");
    let r = s3pet(&["launch", "--nnodes", "2", "--", "dist-check"], tmp.path());
    assert!(stderr(&r).starts_with("error: config key `--master-port`"), "{}", stderr(&r));
}

#[test]
fn launch_options_that_disagree_are_refused_naming_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, said) in [
        (
            &["--nproc", "3", "--gpus", "0,1"][..],
            "error: config key `--nproc`: 3 ranks but --gpus lists 2 GPUs",
        ),
        (&["--gpus", "0,0"][..], "error: config key `--gpus`: list each GPU once"),
        (
            &["--node-rank", "2", "--nnodes", "2", "--master-port", "5000"][..],
            "error: config key `--node-rank`: 2 is not below --nnodes 2",
        ),
    ] {
        let r = s3pet(&[&["launch"], args, &["--", "dist-check"]].concat(), tmp.path());
        assert_eq!(r.status.code(), Some(1), "{args:?}");
        assert!(stderr(&r).starts_with(said), "{args:?}: {}", stderr(&r));
    }
}

/// The command line's resume on another world size: 2 steps under `first`, max_steps raised to 4, then
/// `--resume` under `then` (launch prefixes; empty: one process).
fn two_steps_then_resume(first: &[&str], then: &[&str], out: &Path, model: &str, scratch: &Path) {
    let (data, o) = (common::shared_data().display().to_string(), out.display().to_string());
    let mut args = first.to_vec();
    args.extend(train_args(model, &data, &o));
    args.extend(["--max-steps", "2"]);
    let r = s3pet(&args, scratch);
    assert!(r.status.success(), "{}", stderr(&r));
    raise_max_steps(out, 4);
    let mut args = then.to_vec();
    args.extend(["train", "--task", "rte", "--out", &o, "--resume", "--quiet"]);
    let r = s3pet(&args, scratch);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(report(out)["steps"], json!(4));
}

#[test]
fn launch_resumes_a_run_of_two_ranks_on_three() {
    let Some((tmp, model)) = setup() else { return };
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    let m = model.display().to_string();
    let (one, world) = (tmp.path().join("one"), tmp.path().join("world"));
    two_steps_then_resume(&[], &[], &one, &m, &scratch);
    two_steps_then_resume(
        &["launch", "--nproc", "2", "--"],
        &["launch", "--nproc", "3", "--"],
        &world,
        &m,
        &scratch,
    );
    assert_matches(
        "launch: 2 ranks, resumed on 3",
        &one,
        std::slice::from_ref(&world),
        "weights.safetensors",
    );
    assert_matches(
        "launch: 2 ranks, resumed on 3",
        &one,
        std::slice::from_ref(&world),
        "checkpoint.safetensors",
    );
    assert!(std::fs::read_dir(&scratch).unwrap().next().is_none(), "the ranks' scratch copies are removed");
}
