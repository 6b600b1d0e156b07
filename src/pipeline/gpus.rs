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
