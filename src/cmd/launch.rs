//! `s3pet launch` (one process per rank) and `s3pet dist-check` (one checked all-reduce).
use crate::cli::{DistCheckArgs, LaunchArgs};
use anyhow::Result;
use s3pet::config::DeviceSpec;
use s3pet::dist::launch::{launch, Backend, LaunchSpec};
use s3pet::Error;

/// The commands a launch runs on every rank.
const LAUNCHABLE: [&str; 5] = ["train", "retrain", "search", "run", "dist-check"];

/// Ranks on this host: --nproc, else one per --gpus, else 1; refused when they disagree.
fn nproc(a: &LaunchArgs) -> Result<usize, Error> {
    let Some(gpus) = &a.gpus else { return Ok(a.nproc.unwrap_or(1)) };
    let mut seen = gpus.clone();
    seen.sort_unstable();
    seen.dedup();
    if gpus.is_empty() || seen.len() != gpus.len() {
        return Err(Error::config("--gpus", "list each GPU once, e.g. --gpus 0,1"));
    }
    match a.nproc {
        Some(n) if n != gpus.len() => Err(Error::config(
            "--nproc",
            format!("{n} ranks but --gpus lists {} GPUs (one rank per GPU)", gpus.len()),
        )),
        _ => Ok(gpus.len()),
    }
}

pub fn run(a: LaunchArgs) -> Result<()> {
    let first = a.command.first().and_then(|s| s.to_str()).unwrap_or_default();
    if !LAUNCHABLE.contains(&first) {
        return Err(Error::config(
            "launch",
            format!("`{first}` cannot be launched on several ranks (after `--`: {})", LAUNCHABLE.join(", ")),
        )
        .into());
    }
    let backend = a.backend.as_deref().map(|b| if b == "nccl" { Backend::Nccl } else { Backend::Tcp });
    let spec = LaunchSpec {
        nproc: nproc(&a)?,
        nnodes: a.nnodes,
        node_rank: a.node_rank,
        master_addr: a.master_addr.clone(),
        master_port: a.master_port.map(|p| p as u16),
        gpus: a.gpus.clone(),
        backend,
        exe: std::env::current_exe()?,
        args: a.command,
    };
    Ok(launch(&spec)?)
}

pub fn dist_check(a: DistCheckArgs) -> Result<()> {
    let device = DeviceSpec::parse(&a.device)?.resolve()?;
    println!("{}", s3pet::dist::check::dist_check(device)?);
    Ok(())
}
