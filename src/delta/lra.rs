//! Low-rank adapter (sequential, after a whole attention or FFN block): Up(gelu(Down(h))) where Down and
//! Up are rank-1 factorised linears with bias; bottleneck k = d/32. Factors xavier-uniform with gain
//! sqrt 2, biases 0: the output is NOT zero at initialisation.
use super::{ModuleSpec, SiteShape};
use tch::{Device, Kind, Tensor};

pub struct Lra {
    pub down_left: Tensor,  // (k)    Down weight (k, d) = down_left ⊗ down_right
    pub down_right: Tensor, // (d)
    pub down_bias: Tensor,  // (k)
    pub up_left: Tensor,    // (d)    Up weight (d, k) = up_left ⊗ up_right
    pub up_right: Tensor,   // (k)
    pub up_bias: Tensor,    // (d)
}

/// Xavier-uniform with gain sqrt 2 for a factor seen as a (rows, cols) matrix.
fn xavier(n: i64, rows: i64, cols: i64, device: Device) -> Tensor {
    let bound = 2f64.sqrt() * (6.0 / (rows + cols) as f64).sqrt();
    Tensor::empty([n], (Kind::Float, device)).uniform_(-bound, bound)
}

impl Lra {
    pub fn new(
        spec: &ModuleSpec,
        shape: SiteShape,
        device: Device,
        add: &mut dyn FnMut(&str, Tensor) -> Tensor,
    ) -> Self {
        let d = shape.d_out();
        let k = spec.bottleneck(d);
        let zeros = |n: i64| Tensor::zeros([n], (Kind::Float, device));
        Lra {
            down_left: add("lra.down_left", xavier(k, k, 1, device)),
            down_right: add("lra.down_right", xavier(d, 1, d, device)),
            down_bias: add("lra.down_bias", zeros(k)),
            up_left: add("lra.up_left", xavier(d, d, 1, device)),
            up_right: add("lra.up_right", xavier(k, 1, k, device)),
            up_bias: add("lra.up_bias", zeros(d)),
        }
    }

    pub fn leaves(&self) -> Vec<&Tensor> {
        let s = self;
        vec![&s.down_left, &s.down_right, &s.down_bias, &s.up_left, &s.up_right, &s.up_bias]
    }

    /// u = gelu((h · down_right) down_left + down_bias) · up_right, (.., n, 1) for h (.., n, d): the
    /// rank-1 Down without building the (k, d) matrix. `p` holds the leaves' values in a pass (with a
    /// leading replica dimension when h has one).
    pub fn inner(p: &[Tensor], h: &Tensor) -> Tensor {
        let s = h.matmul(&p[1].unsqueeze(-1)); // (.., n, 1)
        let pre = if s.dim() == 2 {
            p[2].addmm(&s, &p[0].unsqueeze(0)) // (n, k)
        } else {
            p[2].unsqueeze(-2).baddbmm(&s, &p[0].unsqueeze(-2), 1.0, 1.0) // (r, n, k)
        };
        pre.gelu("none").matmul(&p[4].unsqueeze(-1)) // (.., n, 1)
    }

    /// The output factor (.., 1, d) = up_left and the bias up_bias: out = u m + bias.
    pub fn outer(p: &[Tensor]) -> (Tensor, Tensor) {
        (p[3].unsqueeze(-2), p[5].shallow_clone())
    }

    /// Zeroes the up factor so that the output is exactly zero (for invariant tests).
    pub fn zero_up(&self) {
        tch::no_grad(|| {
            let _ = self.up_left.shallow_clone().zero_();
            let _ = self.up_bias.shallow_clone().zero_();
        });
    }
}
