//! Data parallelism over ranks (one process per GPU, or one thread per rank in tests): every rank takes a
//! disjoint shard of every global batch ([`shard`]), a pass's flat gradient (deltas + head, or alpha) and
//! its loss are summed over the ranks in one all-reduce weighted by each rank's examples, and divided by
//! the global count ([`reduce_pass`]): every rank then holds the gradient of the whole global batch, and
//! the same seeds, optimiser steps and shift solves keep the ranks' parameters identical.
//!
//! The reduction is a [`Reducer`]: NCCL on GPUs ([`nccl`], `cuda` feature), a TCP star on loopback across
//! processes on the CPU ([`tcp`]), a barrier over threads in one process ([`thread`], tests). The world of
//! the calling thread is [`current`]; without a launcher it is [`World::single`], whose reductions do
//! nothing, so one process computes exactly what it did before this module existed.
pub mod check;
pub mod gather;
pub mod launch;
pub mod nccl;
pub mod rank_dir;
pub mod shard;
pub mod tcp;
pub mod thread;

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

pub use shard::{part, shard, shard_batch};

/// Sums a flat float32 tensor over every rank, in place; every rank receives the same sum.
pub trait Reducer: Send + Sync {
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()>;
    /// The backend's name (`nccl`, `tcp`, `thread`).
    fn name(&self) -> &'static str;
}

/// This rank's place in the world and its reducer (`None`: one process, no launcher).
#[derive(Clone)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The rank on its host: its GPU is `cuda:LOCAL_RANK`.
    pub local_rank: usize,
    reducer: Option<Arc<dyn Reducer>>,
}

impl World {
    /// One process without a launcher: nothing is sharded or reduced.
    pub fn single() -> Self {
        World { rank: 0, size: 1, local_rank: 0, reducer: None }
    }

    pub fn new(rank: usize, size: usize, local_rank: usize, reducer: Arc<dyn Reducer>) -> Self {
        World { rank, size, local_rank, reducer: Some(reducer) }
    }

    /// Whether this world reduces (a launched world, even of one rank).
    pub fn is_distributed(&self) -> bool {
        self.reducer.is_some()
    }

    /// The backend's name, `none` without a launcher.
    pub fn backend(&self) -> &'static str {
        self.reducer.as_ref().map_or("none", |r| r.name())
    }

    /// Sums `t` (flat float32) over the ranks in place; nothing without a launcher.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        self.reducer.as_ref().map_or(Ok(()), |r| r.all_reduce_sum(t))
    }
}

thread_local! {
    static CURRENT: RefCell<World> = RefCell::new(World::single());
}

/// The calling thread's world.
pub fn current() -> World {
    CURRENT.with(|c| c.borrow().clone())
}

/// Makes `w` the calling thread's world until the returned guard drops (then the previous one again).
pub fn install(w: World) -> Installed {
    Installed(Some(CURRENT.with(|c| c.replace(w))))
}

pub struct Installed(Option<World>);

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            CURRENT.with(|c| c.replace(w));
        }
    }
}

/// Set when a reducer lost a peer (its connection closed): the process then exits with
/// [`PEER_LOST_EXIT`], so the launcher blames the rank that failed first rather than its peers.
pub static PEER_LOST: AtomicBool = AtomicBool::new(false);

/// The exit status of a rank that stopped because another rank did.
pub const PEER_LOST_EXIT: i32 = 3;

pub(crate) fn peer_lost(msg: String) -> Error {
    PEER_LOST.store(true, Ordering::SeqCst);
    Error::Msg(format!("distributed: {msg}"))
}

/// A pass's mean loss and flat gradient over the global batch: each rank's weighted by the terms its
/// mean averages (`terms`: 0-d, its examples or tokens, 0 for a stand-in shard; see
/// crate::model::Model::loss_terms), summed in one all-reduce with the weights, divided by their sum.
/// Without a launcher the inputs come back unchanged (and `terms` is not called).
pub fn reduce_pass(loss: &Tensor, g: &Tensor, terms: impl FnOnce() -> Tensor) -> Result<(Tensor, Tensor)> {
    let w = current();
    if !w.is_distributed() {
        return Ok((loss.shallow_clone(), g.shallow_clone()));
    }
    let n = g.size()[0];
    let buf = tch::no_grad(|| {
        let k = terms().to_device(g.device()).to_kind(Kind::Float).reshape([1]);
        let l = loss.detach().to_kind(Kind::Float).reshape([1]);
        Tensor::cat(&[g.detach().to_kind(Kind::Float) * &k, l * &k, k], 0)
    });
    w.all_reduce_sum(&buf)?;
    tch::no_grad(|| {
        let total = buf.narrow(0, n + 1, 1);
        let g = (buf.narrow(0, 0, n) / &total).to_kind(g.kind());
        let l = (buf.narrow(0, n, 1) / &total).reshape([]).to_kind(loss.kind());
        Ok((l, g))
    })
}

/// The values of a flat tensor on the host (float32).
pub(crate) fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    let c = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    Vec::<f32>::try_from(&c).map_err(|e| Error::Msg(format!("distributed: cannot read a tensor back: {e}")))
}

/// Writes `v` into `t` in place.
pub(crate) fn write_values(t: &Tensor, v: &[f32]) {
    tch::no_grad(|| {
        let src = Tensor::from_slice(v).to_device(t.device()).to_kind(t.kind());
        t.shallow_clone().copy_(&src);
    });
}

/// The sum of every rank's values, added in rank order (so every backend over the host adds alike).
pub(crate) fn sum_in_rank_order(parts: &[Vec<f32>]) -> Result<Vec<f32>> {
    let first = parts.first().ok_or_else(|| Error::Msg("distributed: no rank to reduce".into()))?;
    let mut sum = first.clone();
    for (r, p) in parts.iter().enumerate().skip(1) {
        if p.len() != sum.len() {
            return Err(Error::Msg(format!(
                "distributed: rank {r} reduces {} values but rank 0 {} (the ranks run different work)",
                p.len(),
                sum.len()
            )));
        }
        sum.iter_mut().zip(p).for_each(|(s, x)| *s += x);
    }
    Ok(sum)
}

/// The device of this rank: a CUDA device becomes `cuda:LOCAL_RANK` in a launched world (the launcher
/// makes `--gpus` the visible devices, in order).
pub fn place(d: Device) -> Result<Device> {
    let w = current();
    match d {
        Device::Cuda(_) if w.is_distributed() => {
            let n = tch::Cuda::device_count();
            if (w.local_rank as i64) >= n {
                return Err(Error::config(
                    "--device",
                    format!(
                        "rank {} has LOCAL_RANK {} but only {n} GPU(s) are visible",
                        w.rank, w.local_rank
                    ),
                ));
            }
            Ok(Device::Cuda(w.local_rank))
        }
        d => Ok(d),
    }
}
