//! Houlsby adapter (sequential, after attention and FFN blocks): Up(gelu(Down(h))), bottleneck m.
//! Down small normal (std 0.01), biases 0, Up = 0: zero output at initialisation.
use super::{ModuleSpec, SiteShape};
use tch::{Device, Kind, Tensor};

pub struct Adapter {
    pub down_w: Tensor, // (m, d)
    pub down_b: Tensor, // (m)
    pub up_w: Tensor,   // (d, m)
    pub up_b: Tensor,   // (d)
}

impl Adapter {
    pub fn new(
        spec: &ModuleSpec,
        shape: SiteShape,
        device: Device,
        add: &mut dyn FnMut(&str, Tensor) -> Tensor,
    ) -> Self {
        let d = shape.d_out();
        let m = spec.bottleneck(d);
        let opts = (Kind::Float, device);
        Adapter {
            down_w: add("adapter.down.weight", Tensor::empty([m, d], opts).normal_(0.0, 0.01)),
            down_b: add("adapter.down.bias", Tensor::zeros([m], opts)),
            up_w: add("adapter.up.weight", Tensor::zeros([d, m], opts)),
            up_b: add("adapter.up.bias", Tensor::zeros([d], opts)),
        }
    }

    /// gelu(Down h), (.., n, m) for h (.., n, d); `p` holds the leaves' values in a pass.
    pub fn inner(p: &[Tensor], h: &Tensor) -> Tensor {
        super::pass::pass_linear(h, &p[0], &p[1]).gelu("none")
    }

    /// The output factor (.., m, d) = up weight transposed and the up bias: out = inner m + bias.
    pub fn outer(p: &[Tensor]) -> (Tensor, Tensor) {
        (p[2].transpose(-1, -2), p[3].shallow_clone())
    }

    pub fn zero_up(&self) {
        tch::no_grad(|| {
            let _ = self.up_w.shallow_clone().zero_();
            let _ = self.up_b.shallow_clone().zero_();
        });
    }
}
