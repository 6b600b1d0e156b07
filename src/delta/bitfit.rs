//! BitFit (sequential, after a Linear or LayerNorm): adds a bias vector b, initialised to 0.
use super::SiteShape;
use tch::{Device, Kind, Tensor};

pub struct Bitfit {
    pub b: Tensor, // (d_out)
}

impl Bitfit {
    pub fn new(shape: SiteShape, device: Device, add: &mut dyn FnMut(&str, Tensor) -> Tensor) -> Self {
        Bitfit { b: add("bitfit", Tensor::zeros([shape.d_out()], (Kind::Float, device))) }
    }
}
