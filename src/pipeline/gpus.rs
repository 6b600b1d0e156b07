//! `experiment --gpus`: which GPU a cell starts on. A cell runs alone on its GPU (the child sees only
//! that one, as `cuda:0`); the next cell takes the idle listed GPU with the most free memory.
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::process::Command;

/// Free memory (MiB) of every GPU, by index, as nvidia-smi reports it.
pub fn free_mib() -> Result<HashMap<usize, u64>> {
    let query = ["--query-gpu=index,memory.free", "--format=csv,noheader,nounits"];
    let out = Command::new("nvidia-smi").args(query).output().map_err(|e| {
        Error::config("--gpus", format!("cannot run nvidia-smi to read free GPU memory: {e}"))
    })?;
    Ok(parse_free(&String::from_utf8_lossy(&out.stdout)))
}

/// Free memory (MiB) of the GPU that cells started without `--gpus` use: the first one
/// CUDA_VISIBLE_DEVICES lists, else GPU 0 (nvidia-smi numbers every GPU of the machine); `None` when
/// nvidia-smi cannot tell.
pub fn free_mib_of_visible() -> Option<u64> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let index = visible.and_then(|v| v.split(',').next()?.trim().parse().ok()).unwrap_or(0);
    free_mib().ok()?.get(&index).copied()
}

/// `index, free` lines (nvidia-smi's csv without header or units).
pub fn parse_free(text: &str) -> HashMap<usize, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split(',').map(str::trim);
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Among `gpus` not `busy`, the one with the most free memory (ties and unknowns: the first listed).
pub fn pick(gpus: &[usize], busy: &[usize], free: &HashMap<usize, u64>) -> Option<usize> {
    let idle = gpus.iter().copied().filter(|g| !busy.contains(g));
    idle.enumerate()
        .max_by_key(|&(i, g)| (free.get(&g).copied().unwrap_or(0), std::cmp::Reverse(i)))
        .map(|(_, g)| g)
}

/// The least memory (MiB) a cell is assumed to need on a shared GPU before any cell has been measured.
pub const CELL_FLOOR_MIB: u64 = 4096;

/// Whether one more cell fits on a GPU that `running` cells share: its free memory must hold a cell as
/// large as the largest seen so far (at least [`CELL_FLOOR_MIB`]) for the new one and for each of the
/// `ramping` cells that started too recently to have reached their peak. With nothing running a cell
/// always starts.
pub fn room_for_one_more(free_mib: u64, running: usize, ramping: usize, largest_mib: u64) -> bool {
    let need = largest_mib.max(CELL_FLOOR_MIB);
    running == 0 || free_mib >= need * (1 + ramping as u64)
}

/// Refuses a `--gpus` list this machine cannot honour: no CUDA, an index past its GPUs, a repeat.
pub fn check(gpus: &[usize]) -> Result<()> {
    if !tch::Cuda::is_available() {
        return Err(Error::config("--gpus", "CUDA is unavailable on this machine (a build with --features cuda on a GPU machine); without --gpus the cells run where the plan's device says"));
    }
    let n = tch::Cuda::device_count() as usize;
    let mut seen = gpus.to_vec();
    seen.sort_unstable();
    seen.dedup();
    match gpus.iter().find(|&&g| g >= n) {
        Some(g) => Err(Error::config("--gpus", format!("GPU {g} does not exist (this machine has {n})"))),
        None if gpus.is_empty() || seen.len() != gpus.len() => {
            Err(Error::config("--gpus", "list each GPU once, e.g. --gpus 0,1"))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_starts_only_where_the_largest_cell_fits() {
        assert!(room_for_one_more(0, 0, 0, 90_000), "nothing running: always");
        assert!(room_for_one_more(CELL_FLOOR_MIB, 3, 0, 100), "unmeasured cells count the floor");
        assert!(!room_for_one_more(CELL_FLOOR_MIB - 1, 3, 0, 100));
        assert!(room_for_one_more(12_000, 2, 0, 12_000));
        assert!(!room_for_one_more(12_000, 2, 1, 12_000), "a ramping cell still takes its share");
        assert!(room_for_one_more(24_000, 2, 1, 12_000));
    }

    #[test]
    fn the_idle_gpu_with_the_most_free_memory_wins() {
        let free = parse_free("0, 1000\n1, 80000\n2, 80000\nnot a line\n3, 500\n");
        assert_eq!(free.len(), 4);
        assert_eq!(pick(&[0, 1, 2, 3], &[], &free), Some(1)); // a tie: the first listed
        assert_eq!(pick(&[2, 1], &[], &free), Some(2));
        assert_eq!(pick(&[0, 1, 2, 3], &[1, 2], &free), Some(0));
        assert_eq!(pick(&[0, 1], &[0, 1], &free), None);
        assert_eq!(pick(&[5, 3], &[], &free), Some(3)); // unknown counts as no free memory
    }
}
