//! AdamW over one flat buffer: every trainable tensor of a [`ParamStore`] aliases a slice of a single
//! contiguous tensor, so an update is a dozen kernels whatever the number of tensors (a search space
//! has hundreds). The state is explicit (the search takes a virtual step from a copy of it; checkpoints
//! save it). The update is torch.optim.AdamW's (decoupled weight decay, bias correction).
//!
//! The step-dependent scalars (learning rate, bias corrections) reach the kernels as a 3-element tensor
//! on the device ([`AdamW::coefs`]), not as kernel arguments: a step can then be captured once as a CUDA
//! graph and replayed with new values written into that tensor.
use crate::params::ParamStore;
use tch::Tensor;

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

/// Elements per chunk of a CPU update: p, g, m, v and the temporaries of a chunk (about 1.5 MiB) stay in
/// cache.
const CPU_CHUNK: i64 = 1 << 16;

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

    /// The step scalars of update `t` at learning rate `lr`: [1 - lr wd, c / sqrt(bc2), c eps] with
    /// c = -bc1 / lr, so that p = p (1 - lr wd) + m / (sqrt(v) c / sqrt(bc2) + c eps) is torch's
    /// p (1 - lr wd) - lr / bc1 · m / (sqrt(v / bc2) + eps). At lr 0 the denominator is infinite: p stays.
    pub fn coefs(&self, t: i64, lr: f64) -> [f32; 3] {
        let (b1, b2) = self.cfg.betas;
        let decay = (1.0 - lr * self.cfg.weight_decay) as f32;
        if lr == 0.0 {
            return [decay, 0.0, f32::INFINITY];
        }
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        let c = -bc1 / lr;
        [decay, (c / bc2.sqrt()) as f32, (c * self.cfg.eps) as f32]
    }

    /// p' for gradient `g` with the step scalars `coef` ([`AdamW::coefs`], on p's device), advancing
    /// (m, v) in place. On the CPU the flat buffers are updated chunk by chunk, so that a chunk's p, g, m,
    /// v stay in cache across the update's passes (one pass over the whole buffer each would stream it
    /// from memory every time); on CUDA in one piece (there, kernel launches are the cost).
    fn update(&self, p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, coef: &Tensor) {
        let n = p.numel() as i64;
        let chunk = if p.device().is_cuda() { n.max(1) } else { CPU_CHUNK };
        let c = [coef.get(0), coef.get(1), coef.get(2)];
        let mut s = 0;
        while s < n {
            let len = chunk.min(n - s);
            let (mut pc, mut mc, mut vc) = (p.narrow(0, s, len), m.narrow(0, s, len), v.narrow(0, s, len));
            self.update_chunk(&mut pc, &g.narrow(0, s, len), &mut mc, &mut vc, &c);
            s += len;
        }
    }

    /// torch.optim.AdamW's update in five in-place passes and two temporaries:
    /// m = lerp(m, g, 1 - b1); v = lerp(v, g², 1 - b2); p = p c0 + m / (sqrt(v) c1 + c2).
    fn update_chunk(&self, p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, c: &[Tensor; 3]) {
        let (b1, b2) = self.cfg.betas;
        if self.cfg.weight_decay != 0.0 {
            let _ = p.g_mul_(&c[0]);
        }
        let _ = m.lerp_(g, 1.0 - b1);
        let _ = v.lerp_(&g.square(), 1.0 - b2);
        let mut d = v.sqrt();
        let _ = d.g_mul_(&c[1]);
        let _ = d.g_add_(&c[2]);
        let _ = p.addcdiv_(m, &d);
    }

    /// The step scalars as a tensor on `device` (copied without waiting for the device).
    pub fn coef_tensor(c: &[f32], device: tch::Device) -> Tensor {
        upload(&Tensor::from_slice(c), device)
    }

    /// One step on the store's values with the flat gradient `g`.
    pub fn step(&mut self, store: &ParamStore, g: &Tensor, lr: f64) {
        self.step += 1;
        let coef = Self::coef_tensor(&self.coefs(self.step, lr), g.device());
        self.apply(store, g, &coef);
    }

    /// The update with step scalars `coef` given (the step counter is the caller's: see
    /// [`AdamW::coefs`]); device work only, nothing read back.
    pub fn apply(&self, store: &ParamStore, g: &Tensor, coef: &Tensor) {
        tch::no_grad(|| {
            let (mut p, mut m, mut v) =
                (store.flat().shallow_clone(), self.m.shallow_clone(), self.v.shallow_clone());
            self.update(&mut p, g, &mut m, &mut v, coef);
        });
    }

    /// The values one step would give, from a COPY of the state (the real state is untouched): the
    /// search's virtual step.
    pub fn virtual_values(&self, store: &ParamStore, g: &Tensor, lr: f64) -> Tensor {
        let coef = Self::coef_tensor(&self.coefs(self.step + 1, lr), g.device());
        self.virtual_with(store, g, &coef)
    }

    /// [`AdamW::virtual_values`] with the step scalars of step `self.step + 1` given.
    pub fn virtual_with(&self, store: &ParamStore, g: &Tensor, coef: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let (mut p, mut m, mut v) = (store.flat().copy(), self.m.copy(), self.v.copy());
            self.update(&mut p, g, &mut m, &mut v, coef);
            p
        })
    }
}

/// `t` (on the CPU) copied to `device` without the wait of a blocking copy (the source is staged by the
/// driver at once, so it may be dropped right after).
pub fn upload(t: &Tensor, device: tch::Device) -> Tensor {
    if device.is_cuda() {
        t.to_device_(device, t.kind(), true, false)
    } else {
        t.to_device(device)
    }
}

/// Scales `g` so that its L2 norm is at most `max_norm` (as torch.nn.utils.clip_grad_norm_, on the
/// device, without a host round trip); returns the norm before clipping as a 0-d tensor (g's dtype).
pub fn clip_grad_norm(g: &Tensor, max_norm: f64) -> Tensor {
    tch::no_grad(|| {
        let norm = g.norm();
        let coef = (max_norm / (&norm + 1e-6)).clamp_max(1.0);
        let _ = g.shallow_clone().g_mul_(&coef);
        norm
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
    use tch::{Device, Kind};

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

    /// The chunked CPU update equals the same update in one piece, element for element, over a buffer
    /// of several chunks with a ragged end (weight decay, warm-up lr 0 and later steps included).
    #[test]
    fn chunked_update_equals_whole() {
        let n = 3 * CPU_CHUNK + 123;
        tch::manual_seed(4);
        let mut store = ParamStore::new(Device::Cpu);
        let _ = store.add("p", Tensor::randn([n], (Kind::Float, Device::Cpu)));
        let opt = AdamW::new(&store, AdamWConfig::new(1e-3, 0.01));
        let (mut p1, mut m1, mut v1) = (store.flat().copy(), opt.m.copy(), opt.v.copy());
        let (mut p2, mut m2, mut v2) = (p1.copy(), m1.copy(), v1.copy());
        for (t, lr) in [(1, 0.0), (2, 1e-3), (3, 5e-4)] {
            let g = Tensor::randn([n], (Kind::Float, Device::Cpu));
            let coef = AdamW::coef_tensor(&opt.coefs(t, lr), Device::Cpu);
            let c = [coef.get(0), coef.get(1), coef.get(2)];
            tch::no_grad(|| {
                opt.update(&mut p1, &g, &mut m1, &mut v1, &coef);
                opt.update_chunk(&mut p2, &g, &mut m2, &mut v2, &c);
            });
            for (a, b) in [(&p1, &p2), (&m1, &m2), (&v1, &v2)] {
                assert!(a.equal(b), "step {t}");
            }
        }
        assert!(p1.isfinite().all().int64_value(&[]) == 1);
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
