//! `s3pet bench`: training-step throughput per shape and workload, one JSON line per row.
use crate::cli::BenchArgs;
use anyhow::Result;
use s3pet::bench::{bench, random_weights, shape_config, BenchOpts, SHAPES};
use s3pet::config::{DeviceSpec, Dtype, Precision};
use s3pet::model::ModelDir;

pub fn run(a: BenchArgs) -> Result<()> {
    if let Some(n) = a.threads {
        tch::set_num_threads(n as i32);
    }
    let device = DeviceSpec::parse(&a.device)?.resolve()?;
    let o = BenchOpts {
        batch: a.batch_size,
        seq_len: a.seq_len,
        warmup: a.warmup,
        steps: a.steps,
        device,
        budget: a.budget,
        cuda_graphs: a.cuda_graphs == "on",
        replicas: a.hvp_replicas == "on" || (a.hvp_replicas == "auto" && device.is_cuda()),
    };
    let workloads: Vec<&str> = if a.workload == "all" {
        vec!["full", "lora", "retrain", "search1", "search2"]
    } else {
        a.workload.split(',').collect()
    };
    for shape in a.shape.split(',') {
        let cfg = shape_config(shape)?;
        if let Some(dir) = &a.emit_structures {
            s3pet::bench::emit_structures(dir, shape, &cfg, a.budget)?;
        }
        let mut weights = match shape {
            "minilm" if a.real_minilm => ModelDir::open(&a.model)?.load_weights(device)?,
            named if SHAPES.contains(&named) => random_weights(&cfg, device),
            dir => ModelDir::open(std::path::Path::new(dir))?.load_weights(device)?,
        };
        weights.set_frozen_kind(Dtype::parse(&a.backbone_dtype)?.kind());
        weights.set_precision(Precision::parse(&a.precision)?);
        if a.graph_check {
            graph_checks(shape, &cfg, &weights, &workloads, &o, a.graph_tol)?;
            continue;
        }
        for w in &workloads {
            s3pet::progress::reset_peak_rss();
            s3pet::gpu_mem::reset_peak(device);
            let row = bench(shape, &cfg, &weights, w, &o)?;
            println!("{}", serde_json::to_string(&row)?);
        }
    }
    Ok(())
}

/// `--graph-check`: the CUDA-graph step against the eager one for each workload (search1/2: the search
/// step; full, lora, retrain: the training step); an error when one differs by more than `tol`.
fn graph_checks(
    shape: &str,
    cfg: &s3pet::backbone::ModelConfig,
    weights: &s3pet::backbone::Weights,
    workloads: &[&str],
    o: &BenchOpts,
    tol: f64,
) -> Result<()> {
    for w in workloads {
        let (row, passed) = if matches!(*w, "search1" | "search2") {
            let order = if *w == "search1" { 1 } else { 2 };
            let row = s3pet::bench::graph_check(shape, cfg, weights, order, o, tol)?;
            (serde_json::to_string(&row)?, row.passed)
        } else {
            let row = s3pet::bench::train_graph_check(shape, cfg, weights, w, o, tol)?;
            (serde_json::to_string(&row)?, row.passed)
        };
        println!("{row}");
        if !passed {
            anyhow::bail!("{shape} {w}: the CUDA-graph step differs from the eager one by more than {tol:e}");
        }
    }
    Ok(())
}
