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

    /// With the gate `g`, the up projection's weight and bias are scaled by it (not the output).
    pub fn forward(&self, h: &Tensor, g: Option<&Tensor>) -> Tensor {
        let (w, b) = (super::gated(&self.up_w, g), super::gated(&self.up_b, g));
        h.linear(&self.down_w, Some(&self.down_b)).gelu("none").linear(&w, Some(&b))
    }

    pub fn zero_up(&self) {
        tch::no_grad(|| {
            let _ = self.up_w.shallow_clone().zero_();
            let _ = self.up_b.shallow_clone().zero_();
        });
    }
}
