//! `s3pet launch`: one process per rank (this same binary), ranks and world in the environment as
//! torchrun sets them (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) plus
//! the backend and the ranks' scratch directory; [`init_from_env`] is the rank's side. The launcher
//! watches its ranks: when one fails it kills the others and fails naming that rank.
use super::nccl::NcclReducer;
use super::tcp::TcpStar;
use super::{Reducer, World, PEER_LOST_EXIT};
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const BACKEND_ENV: &str = "S3PET_DIST_BACKEND";
/// Seconds a rank waits for the others at the rendezvous (default 300).
pub const TIMEOUT_ENV: &str = "S3PET_DIST_TIMEOUT";
/// A rank that stops with an injected failure right after the rendezvous (to test the launcher).
pub const FAIL_ENV: &str = "S3PET_DIST_FAIL_RANK";

/// How the ranks reduce: NCCL (GPUs) or the TCP star (CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nccl,
    Tcp,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nccl => "nccl",
            Backend::Tcp => "tcp",
        }
    }
}

pub struct LaunchSpec {
    pub nproc: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: Option<u16>,
    pub gpus: Option<Vec<usize>>,
    pub backend: Option<Backend>,
    /// The binary each rank runs, and its arguments (a train, retrain, search, run or dist-check).
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl LaunchSpec {
    /// The backend (NCCL with --gpus, else TCP), refused where it cannot run.
    fn backend(&self) -> Result<Backend> {
        if self.gpus.is_some() && !tch::Cuda::is_available() {
            return Err(Error::config("--gpus", "CUDA is unavailable on this machine (a build with --features cuda on a GPU machine); without --gpus the ranks run on the CPU"));
        }
        if self.node_rank >= self.nnodes {
            return Err(Error::config(
                "--node-rank",
                format!("{} is not below --nnodes {}", self.node_rank, self.nnodes),
            ));
        }
        if self.nnodes > 1 && self.master_port.is_none() {
            return Err(Error::config(
                "--master-port",
                "several hosts (--nnodes above 1) need one port, the same on every host",
            ));
        }
        let b = self.backend.unwrap_or(if self.gpus.is_some() { Backend::Nccl } else { Backend::Tcp });
        if b == Backend::Nccl && !(cfg!(feature = "cuda") && tch::Cuda::is_available()) {
            return Err(Error::config(
                "--backend",
                "nccl needs GPUs and a build with --features cuda; --backend tcp runs on the CPU",
            ));
        }
        Ok(b)
    }
}

/// A free TCP port on `addr` (the operating system's pick).
fn free_port(addr: &str) -> Result<u16> {
    let l = std::net::TcpListener::bind((addr, 0))
        .map_err(|e| Error::config("--master-addr", format!("cannot listen on {addr}: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| Error::Msg(e.to_string()))
}

struct Rank {
    rank: usize,
    child: Child,
    relay: Option<std::thread::JoinHandle<()>>,
}

/// Runs the world's ranks of this host and waits for them; an error naming the rank that failed.
pub fn launch(spec: &LaunchSpec) -> Result<()> {
    let backend = spec.backend()?;
    let port = match spec.master_port {
        Some(p) => p,
        None => free_port(&spec.master_addr)?,
    };
    let scratch = std::env::temp_dir().join(format!("s3pet-launch-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let mut ranks = Vec::new();
    let mut spawned = Ok(());
    for local in 0..spec.nproc {
        match spawn(spec, local, (backend, port), &scratch) {
            Ok(r) => ranks.push(r),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    let result = spawned.and_then(|_| watch(&mut ranks));
    stop(&mut ranks);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn spawn(
    spec: &LaunchSpec,
    local: usize,
    (backend, port): (Backend, u16),
    scratch: &std::path::Path,
) -> Result<Rank> {
    let rank = spec.node_rank * spec.nproc + local;
    let mut cmd = Command::new(&spec.exe);
    cmd.args(&spec.args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", (spec.nnodes * spec.nproc).to_string())
        .env("LOCAL_RANK", local.to_string())
        .env("LOCAL_WORLD_SIZE", spec.nproc.to_string())
        .env("MASTER_ADDR", &spec.master_addr)
        .env("MASTER_PORT", port.to_string())
        .env(BACKEND_ENV, backend.name())
        .env(super::rank_dir::SCRATCH_ENV, scratch);
    if let Some(g) = &spec.gpus {
        cmd.env("CUDA_VISIBLE_DEVICES", g.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","));
    }
    if rank != 0 {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| Error::io(&spec.exe, e))?;
    let relay = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(|l| l.ok()) {
                eprintln!("[rank {rank}] {line}");
            }
        })
    });
    Ok(Rank { rank, child, relay })
}

/// Waits until every rank succeeded, or one failed: the first to fail on its own is named (a rank that
/// stopped because it lost a peer exits with [`PEER_LOST_EXIT`] and is named only when no other failed).
fn watch(ranks: &mut [Rank]) -> Result<()> {
    loop {
        let (mut failed, mut running) = (Vec::new(), 0);
        for r in ranks.iter_mut() {
            match r.child.try_wait() {
                Ok(Some(st)) if !st.success() => failed.push((r.rank, st)),
                Ok(Some(_)) => {}
                Ok(None) => running += 1,
                Err(e) => return Err(Error::Msg(format!("rank {}: cannot wait for it: {e}", r.rank))),
            }
        }
        if !failed.is_empty() && crate::checkpoint::interrupted() {
            return Err(Error::Interrupted(
                "the ranks saved their checkpoints and stopped (rank 0's in the run directory); continue with --resume".into(),
            ));
        }
        if let Some((rank, st)) = failed.iter().min_by_key(|(r, st)| (st.code() == Some(PEER_LOST_EXIT), *r))
        {
            let others = if ranks.len() > 1 { "; stopped the other ranks" } else { "" };
            return Err(Error::Msg(format!("rank {rank} failed ({st}){others}")));
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the ranks still running (ours, by their ids) and reaps every one.
fn stop(ranks: &mut [Rank]) {
    for r in ranks.iter_mut() {
        if matches!(r.child.try_wait(), Ok(None)) {
            let _ = r.child.kill();
        }
        let _ = r.child.wait();
        if let Some(h) = r.relay.take() {
            let _ = h.join();
        }
    }
}

fn env_usize(key: &str) -> Result<usize> {
    let v = std::env::var(key)
        .map_err(|_| Error::config(key, "not set (start the ranks with `s3pet launch`)"))?;
    v.parse().map_err(|_| Error::config(key, format!("`{v}` is not a whole number")))
}

/// This process's world when `s3pet launch` started it (`None` otherwise): the rendezvous at
/// MASTER_ADDR:MASTER_PORT, then the backend's communicator.
pub fn init_from_env() -> Result<Option<World>> {
    let Ok(backend) = std::env::var(BACKEND_ENV) else { return Ok(None) };
    let (rank, size, local) = (env_usize("RANK")?, env_usize("WORLD_SIZE")?, env_usize("LOCAL_RANK")?);
    if rank >= size {
        return Err(Error::config("RANK", format!("{rank} is not below WORLD_SIZE {size}")));
    }
    let addr = format!(
        "{}:{}",
        std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into()),
        env_usize("MASTER_PORT")?
    );
    let timeout =
        Duration::from_secs(std::env::var(TIMEOUT_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(300));
    let star = TcpStar::connect(&addr, rank, size, timeout)?;
    if std::env::var(FAIL_ENV).ok().and_then(|s| s.parse::<usize>().ok()) == Some(rank) {
        return Err(Error::Msg(format!("distributed: rank {rank}: failure injected by {FAIL_ENV}")));
    }
    let reducer: Arc<dyn Reducer> = match backend.as_str() {
        "tcp" => Arc::new(star),
        "nccl" => Arc::new(NcclReducer::new(star, rank, size, local)?),
        b => return Err(Error::config(BACKEND_ENV, format!("unknown backend `{b}` (nccl, tcp)"))),
    };
    tracing::info!(rank, size, local_rank = local, backend = %backend, "joined the world at {addr}");
    Ok(Some(World::new(rank, size, local, reducer)))
}
