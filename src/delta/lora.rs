//! LoRA (parallel, at a Linear): s * B(A dropout(x)), A kaiming-uniform, B = 0, s = alpha / r.
use super::{kaiming_uniform, ModuleSpec, SiteShape};
use tch::{Device, Kind, Tensor};

pub struct Lora {
    pub a: Tensor, // (r, d_in)
    pub b: Tensor, // (d_out, r)
    pub scale: f64,
    pub dropout: f64,
}

impl Lora {
    pub fn new(
        spec: &ModuleSpec,
        shape: SiteShape,
        device: Device,
        add: &mut dyn FnMut(&str, Tensor) -> Tensor,
    ) -> Self {
        let (d_in, d_out) = match shape {
            SiteShape::Linear { d_in, d_out, .. } => (d_in, d_out),
            SiteShape::Norm { d } => (d, d), // not reached: ModuleSpec::check refuses LoRA at a norm
        };
        let r = spec.rank();
        let a = add("lora_A", kaiming_uniform(&[r, d_in], d_in, device));
        let b = add("lora_B", Tensor::zeros([d_out, r], (Kind::Float, device)));
        Lora { a, b, scale: spec.alpha() / r as f64, dropout: spec.dropout() }
    }

    /// The weight update s * B A, shaped like the Linear's weight (d_out, d_in).
    pub fn delta_weight(&self) -> Tensor {
        self.b.matmul(&self.a) * self.scale
    }
}
