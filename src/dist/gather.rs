//! Sharded evaluation: each rank predicts its part of a split, and the predictions are gathered on every
//! rank with one all-reduce (each rank writes its part into a zero buffer of the whole split), so every
//! rank computes the same metrics and makes the same best-checkpoint decision.
use super::World;
use crate::data::Target;
use crate::error::{Error, Result};
use std::ops::Range;
use tch::{Device, Tensor};

const CLASS: f32 = 1.0;
const SCORE: f32 = 2.0;

/// Every rank's predictions of `n` examples, given this rank's (`mine`, for examples `range`).
pub fn gather_targets(
    w: &World,
    mine: &[Target],
    range: Range<usize>,
    n: usize,
    device: Device,
) -> Result<Vec<Target>> {
    let mut buf = vec![0f32; 2 * n];
    for (i, t) in range.zip(mine) {
        (buf[2 * i], buf[2 * i + 1]) = match *t {
            Target::Class(c) => (CLASS, c as f32),
            Target::Score(s) => (SCORE, s),
        };
    }
    let t = Tensor::from_slice(&buf).to_device(device);
    w.all_reduce_sum(&t)?;
    let all = super::host_values(&t)?;
    all.chunks(2)
        .enumerate()
        .map(|(i, p)| match p[0] {
            CLASS => Ok(Target::Class(p[1] as usize)),
            SCORE => Ok(Target::Score(p[1])),
            tag => Err(Error::Msg(format!(
                "distributed: prediction {i} was gathered with tag {tag} (no rank or two ranks predicted it)"
            ))),
        })
        .collect()
}
