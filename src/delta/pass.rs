//! The parameters of one forward pass as one flat tensor, gated once.
//!
//! Every trainable tensor of a model aliases a slice of its store's flat buffer. A pass reads them
//! through [`Pass`]: `values` (the flat buffer itself as a fresh autograd leaf, or other values of the
//! same layout: the search's w' or w ± eps dw', with a leading replica dimension for several at once)
//! times one per-element multiplier, split into the store's entries. The multiplier is the segment map
//! [`GateMap`]: element i is scaled by the gate of the candidate whose gated factor holds it (LoRA's B,
//! BitFit's bias, LNFit's scale, the up factor and bias of LRA and adapters) and by a constant (LoRA's
//! alpha / r). So a pass gates every candidate with three kernels (index, multiply, multiply) instead of
//! a few per candidate, and the gradient of every parameter comes back as one flat tensor.
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// A store entry that is a gated factor or carries a constant scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaled {
    /// The entry's index in its store.
    pub entry: usize,
    /// The candidate whose gate scales it (none: the module has no gate).
    pub gate: Option<usize>,
    /// A constant factor (LoRA's alpha / r on B; 1 otherwise).
    pub scale: f64,
}

/// Per element of a store's flat buffer: which gate scales it and by what constant.
pub struct GateMap {
    sizes: Vec<i64>,
    shapes: Vec<Vec<i64>>,
    /// Index into `cat([1], z)` per element (0: no gate); `None` when no entry is gated.
    seg: Option<Tensor>,
    /// The constant per element; `None` when every constant is 1.
    konst: Option<Tensor>,
}

impl GateMap {
    /// The map of a store whose entries have `shapes` (in order), with the `scaled` entries.
    pub fn new(shapes: Vec<Vec<i64>>, scaled: &[Scaled], device: Device) -> Result<Self> {
        let sizes: Vec<i64> = shapes.iter().map(|s| s.iter().product()).collect();
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut total = 0i64;
        for n in &sizes {
            offsets.push(total);
            total += n;
        }
        let mut seg = vec![0i64; total as usize];
        let mut konst = vec![1f32; total as usize];
        for s in scaled {
            let (off, n) = match (offsets.get(s.entry), sizes.get(s.entry)) {
                (Some(&o), Some(&n)) => (o as usize, n as usize),
                _ => return Err(Error::Msg(format!("gate map: no store entry {}", s.entry))),
            };
            if let Some(g) = s.gate {
                seg[off..off + n].iter_mut().for_each(|v| *v = g as i64 + 1);
            }
            konst[off..off + n].iter_mut().for_each(|v| *v = s.scale as f32);
        }
        let gated = scaled.iter().any(|s| s.gate.is_some());
        let scaled_any = scaled.iter().any(|s| s.scale != 1.0);
        Ok(GateMap {
            sizes,
            shapes,
            seg: gated.then(|| Tensor::from_slice(&seg).to_device(device)),
            konst: scaled_any.then(|| Tensor::from_slice(&konst).to_device(device)),
        })
    }

    /// Elements of the flat buffer.
    pub fn numel(&self) -> i64 {
        self.sizes.iter().sum()
    }

    /// The per-element factor for gates `z` (`None`: every gate at 1), or `None` when it is 1 everywhere.
    fn multiplier(&self, z: Option<&Tensor>) -> Option<Tensor> {
        let gates = match (&self.seg, z) {
            (Some(seg), Some(z)) => {
                let one = Tensor::ones([1], (z.kind(), z.device()));
                Some(Tensor::cat(&[one, z.reshape([-1])], 0).index_select(0, seg))
            }
            _ => None,
        };
        match (gates, &self.konst) {
            (Some(g), Some(k)) => Some(g * k),
            (Some(g), None) => Some(g),
            (None, Some(k)) => Some(k.shallow_clone()),
            (None, None) => None,
        }
    }
}

/// The parameters of one pass: per store entry, its value (gated and scaled) shaped like the entry, with
/// a leading replica dimension when `values` has one.
pub struct Pass {
    /// What the pass reads: (N) or (R, N) in the store's flat layout.
    pub values: Tensor,
    parts: Vec<Tensor>,
    replicas: Option<i64>,
}

impl Pass {
    /// The pass over `values` ((N) or (R, N)) with gates `z` (one per candidate; `None`: gates at 1).
    pub fn new(map: &GateMap, values: Tensor, z: Option<&Tensor>) -> Result<Pass> {
        let n = *values.size().last().unwrap_or(&0);
        if n != map.numel() || values.dim() > 2 {
            return Err(Error::Tensor {
                key: "pass values".into(),
                msg: format!("shape {:?} does not fit a store of {} elements", values.size(), map.numel()),
            });
        }
        let replicas = (values.dim() == 2).then(|| values.size()[0]);
        let gated = match map.multiplier(z) {
            Some(m) => &values * m,
            None => values.shallow_clone(),
        };
        let pieces = if map.sizes.is_empty() { Vec::new() } else { gated.split_with_sizes(&map.sizes, -1) };
        let parts = pieces
            .into_iter()
            .zip(&map.shapes)
            .map(|(p, shape)| match replicas {
                Some(r) => p.view([&[r][..], shape].concat().as_slice()),
                None => p.view(shape.as_slice()),
            })
            .collect();
        Ok(Pass { values, parts, replicas })
    }

    /// A pass that reads the store's own values: `flat` detached into a fresh leaf (with `grad`, its
    /// gradient is the flat gradient of every parameter).
    pub fn over_flat(map: &GateMap, flat: &Tensor, grad: bool, z: Option<&Tensor>) -> Result<Pass> {
        let leaf = flat.detach();
        let leaf = if grad { leaf.set_requires_grad(true) } else { leaf };
        Pass::new(map, leaf, z)
    }

    /// Entry `entry`'s value in this pass.
    pub fn part(&self, entry: usize) -> Option<&Tensor> {
        self.parts.get(entry)
    }

    /// Replicas of the pass (`None`: one, without a replica dimension).
    pub fn replicas(&self) -> Option<i64> {
        self.replicas
    }

    /// The value kind of the parameters (fp32).
    pub fn kind(&self) -> Kind {
        self.values.kind()
    }
}

/// `x w^T + b` for a pass's weight (d_out, d_in) and bias (d_out), or per replica for a replica pass's
/// weight (r, d_out, d_in) and bias (r, d_out), `x` then (r, n, d_in).
pub fn pass_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    match w.dim() {
        2 => x.linear(w, Some(b)),
        _ => b.unsqueeze(-2).baddbmm(x, &w.transpose(-1, -2), 1.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_and_scales_land_on_their_entries() {
        let shapes = vec![vec![2, 1], vec![3], vec![1]];
        let scaled =
            [Scaled { entry: 0, gate: Some(1), scale: 2.0 }, Scaled { entry: 2, gate: Some(0), scale: 1.0 }];
        let map = GateMap::new(shapes, &scaled, Device::Cpu).unwrap();
        let values = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]);
        let z = Tensor::from_slice(&[0.5f32, 0.25]);
        let pass = Pass::new(&map, values, Some(&z)).unwrap();
        let v = |i: usize| Vec::<f32>::try_from(&pass.part(i).unwrap().reshape([-1])).unwrap();
        assert_eq!(v(0), vec![1.0 * 0.25 * 2.0, 2.0 * 0.25 * 2.0]);
        assert_eq!(v(1), vec![3.0, 4.0, 5.0]);
        assert_eq!(v(2), vec![6.0 * 0.5]);
        assert_eq!(pass.part(0).unwrap().size(), vec![2, 1]);
        let two = Tensor::ones([2, 6], (Kind::Float, Device::Cpu));
        let pass = Pass::new(&map, two, None).unwrap();
        assert_eq!(pass.part(0).unwrap().size(), vec![2, 2, 1]);
        assert_eq!(Vec::<f32>::try_from(&pass.part(0).unwrap().reshape([-1])).unwrap(), vec![2.0; 4]);
    }
}
