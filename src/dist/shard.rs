//! Which examples a rank takes: a contiguous, balanced part of every global batch (and of every split
//! it evaluates), so the ranks' parts are disjoint and together the whole batch.
use crate::batch::{Batch, PadTo};
use crate::tokenize::Encoded;
use std::ops::Range;
use tch::Device;

/// Rank `rank`'s part of `n` items among `size` ranks: `[rank n / size, (rank + 1) n / size)`.
pub fn part(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    rank * n / size..(rank + 1) * n / size
}

/// This rank's part of a global batch, and whether it is a stand-in: a rank whose part is empty (a
/// global batch smaller than the world) runs the batch's first example so that its pass has the
/// gradient's shape, and counts it as zero examples.
pub fn shard<T>(items: &[T]) -> (&[T], bool) {
    let w = super::current();
    if !w.is_distributed() {
        return (items, false);
    }
    let r = part(items.len(), w.rank, w.size);
    if r.is_empty() && !items.is_empty() {
        return (&items[..1], true);
    }
    (&items[r], false)
}

/// The batch of this rank's part of `items` (see [`shard`]), padded as `pad` says.
pub fn shard_batch(items: &[&Encoded], device: Device, pad: PadTo) -> Batch {
    let (mine, stand_in) = shard(items);
    let mut b = Batch::padded(mine, device, pad);
    b.stand_in = stand_in;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_disjoint_balanced_and_cover_everything() {
        for n in 0..20 {
            for size in 1..6 {
                let parts: Vec<Range<usize>> = (0..size).map(|r| part(n, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1, "{n} {size} {lens:?}");
            }
        }
    }
}
