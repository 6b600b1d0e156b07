//! AdamW over one flat buffer: every trainable tensor of a [`ParamStore`] aliases a slice of a single
//! contiguous tensor, so an update is a dozen kernels whatever the number of tensors (a search space
//! has hundreds). The state is explicit (the search takes a virtual step from a copy of it; checkpoints
//! save it). The update is torch.optim.AdamW's (decoupled weight decay, bias correction).
use crate::params::ParamStore;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        AdamWConfig { lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay }
    }
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    /// First and second moments, flat like the store.
    pub m: Tensor,
    pub v: Tensor,
    pub step: i64,
}

impl AdamW {
    pub fn new(store: &ParamStore, cfg: AdamWConfig) -> Self {
        let m = store.flat().zeros_like();
        AdamW { cfg, v: m.zeros_like(), m, step: 0 }
    }

    /// p' for gradient `g` at learning rate `lr`, advancing (m, v) in place, at step `t`.
    fn update(&self, p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, t: i64, lr: f64) {
        let (b1, b2) = self.cfg.betas;
        if self.cfg.weight_decay != 0.0 {
            let _ = p.g_mul_scalar_(1.0 - lr * self.cfg.weight_decay);
        }
        let _ = m.lerp_(g, 1.0 - b1); // m = b1 m + (1 - b1) g, as torch
        let _ = v.g_mul_scalar_(b2).g_add_(&(g * g * (1.0 - b2))); // v = b2 v + (1 - b2) g^2
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        let denom = v.sqrt() / bc2.sqrt() + self.cfg.eps;
        let _ = p.g_sub_(&(m.shallow_clone() / denom * (lr / bc1)));
    }

    /// One step on the store's values with the flat gradient `g`.
    pub fn step(&mut self, store: &ParamStore, g: &Tensor, lr: f64) {
        self.step += 1;
        let t = self.step;
        tch::no_grad(|| {
            let (mut p, mut m, mut v) =
                (store.flat().shallow_clone(), self.m.shallow_clone(), self.v.shallow_clone());
            self.update(&mut p, g, &mut m, &mut v, t, lr);
        });
    }

    /// The values one step would give, from a COPY of the state (the real state is untouched): the
    /// search's virtual step.
    pub fn virtual_values(&self, store: &ParamStore, g: &Tensor, lr: f64) -> Tensor {
        tch::no_grad(|| {
            let (mut p, mut m, mut v) = (store.flat().copy(), self.m.copy(), self.v.copy());
            self.update(&mut p, g, &mut m, &mut v, self.step + 1, lr);
            p
        })
    }
}

/// Scales `g` so that its L2 norm is at most `max_norm` (as torch.nn.utils.clip_grad_norm_, on the
/// device, without a host round trip); returns the norm before clipping as a 0-d tensor.
pub fn clip_grad_norm(g: &Tensor, max_norm: f64) -> Tensor {
    tch::no_grad(|| {
        let norm = g.norm();
        let coef = (max_norm / (&norm + 1e-6)).clamp_max(1.0);
        let _ = g.shallow_clone().g_mul_(&coef);
        norm.to_kind(Kind::Double)
    })
}

/// Linear warm-up over `warmup` steps, then linear decay to 0 at `total` steps.
pub fn linear_lr(base: f64, step: i64, warmup: i64, total: i64) -> f64 {
    if warmup > 0 && step < warmup {
        return base * step as f64 / warmup as f64;
    }
    let left = (total - step).max(0) as f64;
    base * left / (total - warmup).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn schedule_decays_linearly_to_zero() {
        assert_eq!(linear_lr(1.0, 0, 0, 10), 1.0);
        assert!((linear_lr(1.0, 5, 0, 10) - 0.5).abs() < 1e-12);
        assert_eq!(linear_lr(1.0, 10, 0, 10), 0.0);
        assert!((linear_lr(1.0, 1, 2, 10) - 0.5).abs() < 1e-12);
        assert!((linear_lr(1.0, 6, 2, 10) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn adamw_matches_the_reference_update() {
        // two steps by hand: m, v with bias correction, decoupled weight decay
        let mut store = ParamStore::new(Device::Cpu);
        let p = store.add("p", Tensor::from_slice(&[1.0f32, -2.0]));
        let mut opt = AdamW::new(&store, AdamWConfig::new(0.1, 0.01));
        let grads = [[3.0f64, -0.5], [1.0, 2.0]];
        let (mut want, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for (t, g) in grads.iter().enumerate() {
            let virt = opt.virtual_values(&store, &Tensor::from_slice(g).to_kind(Kind::Float), 0.1);
            opt.step(&store, &Tensor::from_slice(g).to_kind(Kind::Float), 0.1);
            for i in 0..2 {
                want[i] *= 1.0 - 0.1 * 0.01;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let (bc1, bc2) = (1.0 - 0.9f64.powi(t as i32 + 1), 1.0 - 0.999f64.powi(t as i32 + 1));
                want[i] -= 0.1 / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + 1e-8);
            }
            let got = Vec::<f32>::try_from(&p.detach()).unwrap();
            let vg = Vec::<f32>::try_from(&virt).unwrap();
            for i in 0..2 {
                assert!((got[i] as f64 - want[i]).abs() < 1e-6, "step {t}: {got:?} vs {want:?}");
            }
            assert_eq!(vg, got, "the virtual step equals the real one");
        }
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let g = Tensor::from_slice(&[3.0f32, 4.0]);
        let n = clip_grad_norm(&g, 1.0).double_value(&[]);
        assert!((n - 5.0).abs() < 1e-5);
        let v = Vec::<f32>::try_from(&g).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-5 && (v[1] - 0.8).abs() < 1e-5, "{v:?}");
        let small = Tensor::from_slice(&[0.3f32]);
        let _ = clip_grad_norm(&small, 1.0);
        assert_eq!(Vec::<f32>::try_from(&small).unwrap(), vec![0.3]);
    }
}
