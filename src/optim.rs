//! AdamW with explicit state (so that the search can take a virtual step from a copy of it, and
//! checkpoints can save it), a linear schedule with optional warm-up, and gradient-norm clipping.
//! The update is torch.optim.AdamW's (decoupled weight decay, bias correction).
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

pub struct AdamW {
    pub cfg: AdamWConfig,
    pub params: Vec<Tensor>,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub step: i64,
}

impl AdamW {
    pub fn new(params: Vec<Tensor>, cfg: AdamWConfig) -> Self {
        let m = params.iter().map(|p| p.zeros_like()).collect();
        let v = params.iter().map(|p| p.zeros_like()).collect();
        AdamW { cfg, params, m, v, step: 0 }
    }

    /// The update direction each parameter would take at learning rate `lr` (without applying it),
    /// advancing copies of the moments by the current gradients: returns the new values p'.
    /// The real state is untouched (the search's virtual step).
    pub fn virtual_values(&self, lr: f64) -> Vec<Tensor> {
        tch::no_grad(|| {
            let t = self.step + 1;
            self.params
                .iter()
                .zip(self.m.iter().zip(&self.v))
                .map(|(p, (m, v))| {
                    let g = p.grad();
                    let g = if g.defined() { g } else { p.zeros_like() };
                    let (m, v) = (m.copy(), v.copy());
                    self.update(&p.detach().copy(), &g, m, v, t, lr)
                })
                .collect()
        })
    }

    fn update(&self, p: &Tensor, g: &Tensor, mut m: Tensor, mut v: Tensor, t: i64, lr: f64) -> Tensor {
        let (b1, b2) = self.cfg.betas;
        let mut p = p.shallow_clone();
        if self.cfg.weight_decay != 0.0 {
            let _ = p.g_mul_scalar_(1.0 - lr * self.cfg.weight_decay);
        }
        let _ = m.g_mul_scalar_(b1);
        let _ = m.g_add_(&(g * (1.0 - b1)));
        let _ = v.g_mul_scalar_(b2);
        let _ = v.g_add_(&(g * g * (1.0 - b2)));
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        let denom = v.sqrt() / bc2.sqrt() + self.cfg.eps;
        let _ = p.g_sub_(&(m / denom * (lr / bc1)));
        p
    }

    /// One AdamW step at learning rate `lr` with the parameters' current gradients.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step;
        tch::no_grad(|| {
            for i in 0..self.params.len() {
                let g = self.params[i].grad();
                if !g.defined() {
                    continue;
                }
                let p = self.params[i].shallow_clone();
                let (m, v) = (self.m[i].shallow_clone(), self.v[i].shallow_clone());
                let _ = self.update(&p, &g, m, v, t, lr);
            }
        });
    }

    pub fn zero_grad(&self) {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Rescales all gradients so that their global L2 norm is at most `max_norm` (as
    /// torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        clip_grad_norm(&self.params, max_norm)
    }
}

pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().unsqueeze(0)).collect();
        let total = Tensor::cat(&norms, 0).norm().double_value(&[]);
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            for g in &grads {
                let _ = g.shallow_clone().g_mul_scalar_(coef);
            }
        }
        total
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

    #[test]
    fn schedule_decays_linearly_to_zero() {
        assert_eq!(linear_lr(1.0, 0, 0, 10), 1.0);
        assert!((linear_lr(1.0, 5, 0, 10) - 0.5).abs() < 1e-12);
        assert_eq!(linear_lr(1.0, 10, 0, 10), 0.0);
        assert!((linear_lr(1.0, 1, 2, 10) - 0.5).abs() < 1e-12);
        assert!((linear_lr(1.0, 6, 2, 10) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn adamw_first_step_moves_by_lr_times_sign() {
        // with bias correction the first step is lr * g / (|g| + eps') = lr * sign(g)
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let loss = (&p * Tensor::from_slice(&[3.0f32, -0.5])).sum(tch::Kind::Float);
        loss.backward();
        let virt = AdamW::new(vec![p.shallow_clone()], AdamWConfig::new(0.1, 0.0)).virtual_values(0.1);
        let mut opt = AdamW::new(vec![p.shallow_clone()], AdamWConfig::new(0.1, 0.0));
        opt.step(0.1);
        let got = Vec::<f32>::try_from(&p.detach()).unwrap();
        assert!((got[0] - 0.9).abs() < 1e-6 && (got[1] + 1.9).abs() < 1e-6, "{got:?}");
        let v = Vec::<f32>::try_from(&virt[0]).unwrap();
        assert_eq!(v, got, "virtual step equals the real one");
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let p = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[3.0f32, 4.0])).sum(tch::Kind::Float).backward();
        let n = clip_grad_norm(&[p.shallow_clone()], 1.0);
        assert!((n - 5.0).abs() < 1e-5);
        let g = Vec::<f32>::try_from(&p.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
    }
}
