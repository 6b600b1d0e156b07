//! Batches with dynamic padding: each batch pads to its own longest row.
use crate::data::Target;
use crate::tokenize::Encoded;
use tch::{Device, Kind, Tensor};

pub struct Batch {
    pub ids: Tensor,   // (rows, t) int64
    pub mask: Tensor,  // (rows, t) int64
    pub types: Tensor, // (rows, t) int64
    /// Class indices (int64, one per example) or scores (float); for multiple choice the right choice.
    pub labels: Tensor,
    pub targets: Vec<Target>,
    pub groups: Vec<Option<String>>,
    /// Rows per example (1, or the number of choices).
    pub choices: i64,
    pub tokens: i64,
    /// A stand-in for a rank with no examples of this global batch (crate::dist::shard): its pass runs
    /// for the gradient's shape, and counts as zero examples when the ranks' gradients are averaged.
    pub stand_in: bool,
}

impl Clone for Batch {
    fn clone(&self) -> Self {
        Batch {
            ids: self.ids.shallow_clone(),
            mask: self.mask.shallow_clone(),
            types: self.types.shallow_clone(),
            labels: self.labels.shallow_clone(),
            targets: self.targets.clone(),
            groups: self.groups.clone(),
            choices: self.choices,
            tokens: self.tokens,
            stand_in: self.stand_in,
        }
    }
}

/// How far a batch's length is padded: up to a multiple of `multiple` tokens, but not past `cap` (the
/// run's max length) unless its longest row is longer already.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PadTo {
    pub multiple: usize,
    pub cap: usize,
}

impl PadTo {
    /// No padding beyond the longest row.
    pub const NONE: PadTo = PadTo { multiple: 1, cap: 0 };

    /// The padded length of a batch whose longest row has `longest` tokens.
    pub fn len(&self, longest: usize) -> usize {
        let m = self.multiple.max(1);
        (longest.div_ceil(m) * m).min(self.cap.max(longest))
    }
}

impl Batch {
    pub fn new(items: &[&Encoded], device: Device) -> Batch {
        Batch::padded(items, device, PadTo::NONE)
    }

    /// A batch of `items` padded to `pad.len` of its longest row (mask 0 on the padding).
    pub fn padded(items: &[&Encoded], device: Device, pad: PadTo) -> Batch {
        let choices = items.first().map(|e| e.rows.len()).unwrap_or(1) as i64;
        let longest = items.iter().flat_map(|e| e.rows.iter().map(|r| r.0.len())).max().unwrap_or(1);
        let t = pad.len(longest) as i64;
        let n = items.len() as i64 * choices;
        let mut ids = vec![0i64; (n * t) as usize];
        let mut mask = vec![0i64; (n * t) as usize];
        let mut types = vec![0i64; (n * t) as usize];
        let mut tokens = 0;
        for (r, (row_ids, row_types)) in items.iter().flat_map(|e| e.rows.iter()).enumerate() {
            let off = r * t as usize;
            ids[off..off + row_ids.len()].copy_from_slice(row_ids);
            types[off..off + row_types.len()].copy_from_slice(row_types);
            mask[off..off + row_ids.len()].iter_mut().for_each(|m| *m = 1);
            tokens += row_ids.len() as i64;
        }
        // copied to the device without waiting for it (the driver stages the host data at once)
        let mk = |v: Vec<i64>| crate::optim::upload(&Tensor::from_slice(&v).view([n, t]), device);
        let targets: Vec<Target> = items.iter().map(|e| e.target).collect();
        let labels = match targets.first() {
            Some(Target::Score(_)) => {
                let s: Vec<f32> =
                    targets.iter().map(|t| if let Target::Score(s) = t { *s } else { 0.0 }).collect();
                Tensor::from_slice(&s)
            }
            _ => {
                let c: Vec<i64> =
                    targets.iter().map(|t| if let Target::Class(c) = t { *c as i64 } else { 0 }).collect();
                Tensor::from_slice(&c)
            }
        };
        let labels = crate::optim::upload(&labels, device);
        Batch {
            ids: mk(ids),
            mask: mk(mask),
            types: mk(types),
            labels,
            targets,
            groups: items.iter().map(|e| e.group.clone()).collect(),
            choices,
            tokens,
            stand_in: false,
        }
    }

    /// The batch `r` times over, one copy after the other (rows r n .. (r + 1) n are copy r): the input of
    /// a replica pass.
    pub fn repeated(&self, r: i64) -> Batch {
        if r == 1 {
            return self.clone();
        }
        let rep = |t: &Tensor| t.repeat([r, 1]);
        let n = self.targets.len() * r as usize;
        Batch {
            ids: rep(&self.ids),
            mask: rep(&self.mask),
            types: rep(&self.types),
            labels: self.labels.repeat([r]),
            targets: self.targets.iter().cycle().take(n).copied().collect(),
            groups: self.groups.iter().cycle().take(n).cloned().collect(),
            choices: self.choices,
            tokens: self.tokens * r,
            stand_in: self.stand_in,
        }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// A copy whose tensors are new device copies (a CUDA graph's own inputs); host fields cloned.
    pub fn device_copy(&self) -> Batch {
        Batch {
            ids: self.ids.copy(),
            mask: self.mask.copy(),
            types: self.types.copy(),
            labels: self.labels.copy(),
            ..self.clone()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn is_regression(&self) -> bool {
        self.labels.kind() == Kind::Float
    }
}

/// Splits `order` (indices into `data`) into batches of `batch_size` examples.
pub fn batches<'a>(data: &'a [Encoded], order: &[usize], batch_size: usize) -> Vec<Vec<&'a Encoded>> {
    order.chunks(batch_size.max(1)).map(|c| c.iter().map(|&i| &data[i]).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::PadTo;

    #[test]
    fn padding_rounds_up_to_the_multiple_within_the_cap() {
        let p = PadTo { multiple: 16, cap: 128 };
        assert_eq!([p.len(1), p.len(16), p.len(17), p.len(120), p.len(128)], [16, 16, 32, 128, 128]);
        // never past the cap, unless the longest row is longer (then no padding)
        let p = PadTo { multiple: 16, cap: 100 };
        assert_eq!([p.len(90), p.len(100), p.len(130)], [96, 100, 130]);
        assert_eq!([PadTo::NONE.len(7), PadTo::NONE.len(128)], [7, 128]);
    }
}
