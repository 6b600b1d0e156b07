//! `s3pet bench`'s named shapes of the other families (mpnet-base, roberta-base, deberta-v3-base): their
//! compiled-in configs are the real ones of ../shared/configs (the same parameter count and search space
//! as `inspect --model-config` gives from those files), and the workloads run a step on each.
mod common;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn shared_config(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/configs").join(dir).join("config.json")
}

fn run(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3pet")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn family_shapes_are_the_real_configs() {
    for (shape, dir) in [
        ("mpnet-base", "all-mpnet-base-v2"),
        ("roberta-base", "roberta-base"),
        ("deberta-v3-base", "deberta-v3-base"),
    ] {
        let path = shared_config(dir);
        let inspect: Value = serde_json::from_str(&run(&[
            "inspect",
            "--model-config",
            path.to_str().unwrap(),
            "--space",
            "mix",
            "--json",
        ]))
        .unwrap();
        let cfg = s3pet::bench::shape_config(shape).unwrap();
        assert_eq!(inspect["backbone_params"].as_i64(), Some(cfg.param_count()), "{shape}");
        let cands = s3pet::space::Space::builtin("mix").unwrap().candidates(&cfg).unwrap();
        assert_eq!(inspect["candidates"].as_u64(), Some(cands.len() as u64), "{shape}");
        let params: i64 = cands.iter().map(|c| c.params.unwrap_or(0)).sum();
        assert_eq!(inspect["candidate_params"].as_i64(), Some(params), "{shape}");
    }
    // the float parameters issue 15 gives for all-mpnet-base-v2's checkpoint (pooler included)
    assert_eq!(s3pet::bench::shape_config("mpnet-base").unwrap().param_count(), 109_486_464);
}

/// Every workload on mpnet-base; LoRA and the second-order search step on the two others.
#[test]
fn the_workloads_run_on_the_family_shapes() {
    let tiny = ["--batch-size", "2", "--seq-len", "8", "--warmup", "0", "--steps", "1", "--threads", "2"];
    let bench = |shapes: &str, workloads: &str| -> Vec<Value> {
        let mut args = vec!["bench", "-q", "--shape", shapes, "--workload", workloads];
        args.extend(tiny);
        run(&args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let mut rows = bench("mpnet-base", "all");
    rows.extend(bench("roberta-base,deberta-v3-base", "lora,search2"));
    assert_eq!(rows.len(), 5 + 2 * 2, "{rows:?}");
    for r in &rows {
        let shape = r["shape"].as_str().unwrap();
        let backbone = s3pet::bench::shape_config(shape).unwrap().param_count();
        assert_eq!(r["backbone_params"].as_i64(), Some(backbone), "{r}");
        assert!(r["ms_per_step"].as_f64().is_some_and(|ms| ms.is_finite() && ms > 0.0), "{r}");
        let trainable = r["trainable_params"].as_i64().unwrap();
        match r["workload"].as_str().unwrap() {
            "full" => assert!(trainable > backbone / 2, "{r}"),
            _ => assert!(trainable > 0 && trainable < backbone / 50, "{r}"),
        }
    }
}

/// `--graph-check` over two batch shapes in the order long, short, short, long (on a GPU two graphs in
/// one shared memory pool, replayed in both orders; on this CPU both runs are eager): 12 steps of each
/// order, the graph run equal to the eager one.
#[test]
fn the_graph_check_runs_two_shapes_and_agrees() {
    let args = ["bench", "-q", "--shape", "minilm", "--workload", "search1,search2", "--graph-check"];
    let tiny = ["--batch-size", "2", "--seq-len", "16", "--steps", "1", "--threads", "2", "--device", "cpu"];
    let out = run(&[&args[..], &tiny[..]].concat());
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for r in &rows {
        assert_eq!(r["steps"].as_u64(), Some(12), "{r}");
        assert_eq!(r["passed"].as_bool(), Some(true), "{r}");
        assert_eq!(r["shapes_captured"].as_u64(), Some(0), "{r}");
        for key in ["max_loss_diff", "max_alpha_diff", "max_w_diff", "max_p_diff"] {
            assert_eq!(r[key].as_f64(), Some(0.0), "{key}: {r}");
        }
    }
}

/// The training step's check (the graph step a CUDA run takes by default) for each training workload: on the CPU
/// both runs are eager and agree exactly; a search-only or unknown workload name is refused.
#[test]
fn the_training_graph_check_runs_each_training_workload() {
    let args = ["bench", "-q", "--shape", "minilm", "--workload", "full,lora,retrain", "--graph-check"];
    let tiny = ["--batch-size", "2", "--seq-len", "16", "--steps", "1", "--threads", "2", "--device", "cpu"];
    let out = run(&[&args[..], &tiny[..]].concat());
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<_> = rows.iter().map(|r| r["workload"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["full", "lora", "retrain"], "{out}");
    for r in &rows {
        assert_eq!((r["steps"].as_u64(), r["passed"].as_bool()), (Some(12), Some(true)), "{r}");
        assert_eq!((r["max_loss_diff"].as_f64(), r["max_w_diff"].as_f64()), (Some(0.0), Some(0.0)), "{r}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"))
        .args([&args[..5], &["nope", "--graph-check"], &tiny[..]].concat())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
