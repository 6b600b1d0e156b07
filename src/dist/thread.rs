//! An in-process stand-in for NCCL: one thread per rank, a barrier and a slot per rank. Each rank copies
//! its values into its slot, and after the barrier every rank adds the slots in rank order. Used by the
//! tests to run a world of several ranks in one process.
use super::{Reducer, World};
use crate::error::{Error, Result};
use std::sync::{Arc, Barrier, Mutex};
use tch::Tensor;

struct Group {
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

pub struct ThreadReducer {
    group: Arc<Group>,
    rank: usize,
}

/// The worlds of `size` ranks over threads: give world r to the thread that runs rank r (every rank must
/// run the same sequence of reductions, or the others wait at the barrier forever).
pub fn worlds(size: usize) -> Vec<World> {
    let group = Arc::new(Group { slots: Mutex::new(vec![Vec::new(); size]), barrier: Barrier::new(size) });
    (0..size)
        .map(|rank| World::new(rank, size, rank, Arc::new(ThreadReducer { group: group.clone(), rank })))
        .collect()
}

fn poisoned<T>(_: T) -> Error {
    Error::Msg("distributed: a rank thread panicked during a reduction".into())
}

impl Reducer for ThreadReducer {
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        let mine = super::host_values(t)?;
        self.group.slots.lock().map_err(poisoned)?[self.rank] = mine;
        self.group.barrier.wait();
        let sum = super::sum_in_rank_order(&self.group.slots.lock().map_err(poisoned)?);
        self.group.barrier.wait(); // nobody overwrites a slot before every rank has added them all
        super::write_values(t, &sum?);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "thread"
    }
}
