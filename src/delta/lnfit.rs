//! LN-tuning (parallel, at a LayerNorm): w ⊙ normalize(x), a delta on the norm's scale, initialised to 0.
use super::SiteShape;
use tch::{Device, Kind, Tensor};

pub struct Lnfit {
    pub w: Tensor, // (d)
}

impl Lnfit {
    pub fn new(shape: SiteShape, device: Device, add: &mut dyn FnMut(&str, Tensor) -> Tensor) -> Self {
        Lnfit { w: add("lnfit", Tensor::zeros([shape.d_out()], (Kind::Float, device))) }
    }
}
