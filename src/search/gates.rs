//! The shifted global sigmoid: p_i = sigmoid((alpha_i - b) / beta) with the shift b solved so that
//! sum_i n_i p_i = B; the rescaling of p; the logistic-noise relaxation z.
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Relative tolerance on sum n_i p_i.
pub const SHIFT_TOL: f64 = 1e-6;

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// sum_i n_i sigmoid((alpha_i - b) / beta): strictly decreasing in b.
pub fn expected_params(alpha: &[f64], n: &[f64], b: f64, beta: f64) -> f64 {
    alpha.iter().zip(n).map(|(a, n)| n * sigmoid((a - b) / beta)).sum()
}

/// Solves sum_i n_i p_i(b) = budget for b: brackets from `warm` by doubling steps, then bisects until the
/// relative error is at most [`SHIFT_TOL`]. Fails loudly when the budget is not strictly inside
/// (0, sum n) or the root is not reached.
pub fn solve_shift(alpha: &[f64], n: &[f64], budget: f64, beta: f64, warm: Option<f64>) -> Result<f64> {
    let total: f64 = n.iter().sum();
    if alpha.len() != n.len() || alpha.is_empty() {
        return Err(Error::Budget("no candidates to gate".into()));
    }
    let budget_inside = budget > 0.0 && budget < total;
    let beta_ok = beta.is_finite() && beta > 0.0;
    if !budget_inside || !beta_ok {
        return Err(Error::Budget(format!(
            "budget {budget} must lie strictly between 0 and the space's {total}"
        )));
    }
    if alpha.iter().any(|a| !a.is_finite()) {
        return Err(Error::Budget("a structure logit is not finite".into()));
    }
    let f = |b: f64| expected_params(alpha, n, b, beta) - budget;
    let start = warm.filter(|w| w.is_finite()).unwrap_or(0.0);
    let (mut lo, mut hi) = (start, start);
    let mut step = beta.max(1e-3);
    let mut tries = 0;
    while f(lo) < 0.0 {
        lo -= step;
        step *= 2.0;
        tries += 1;
        if tries > 200 {
            return Err(Error::Budget("cannot bracket the sigmoid shift (lower side)".into()));
        }
    }
    step = beta.max(1e-3);
    while f(hi) > 0.0 {
        hi += step;
        step *= 2.0;
        tries += 1;
        if tries > 400 {
            return Err(Error::Budget("cannot bracket the sigmoid shift (upper side)".into()));
        }
    }
    for _ in 0..300 {
        let mid = 0.5 * (lo + hi);
        let v = f(mid);
        if v.abs() <= SHIFT_TOL * budget {
            return Ok(mid);
        }
        if v > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mid = 0.5 * (lo + hi);
    if f(mid).abs() <= SHIFT_TOL * budget {
        return Ok(mid);
    }
    Err(Error::Budget(format!(
        "the sigmoid shift did not converge: sum n p = {} for budget {budget}",
        f(mid) + budget
    )))
}

/// p = sigmoid((alpha - b) / beta), then p * stopgrad(sum p) / sum p (same value; the gates compete for
/// the gradient). `alpha` carries the gradient; `b` is a constant.
pub fn gate_probs(alpha: &Tensor, b: f64, beta: f64) -> Tensor {
    rescaled(((alpha - b) / beta).sigmoid())
}

/// [`gate_probs`] with the shift a 0-d tensor on alpha's device (as [`DeviceShift::solve`] gives it).
pub fn gate_probs_at(alpha: &Tensor, b: &Tensor, beta: f64) -> Tensor {
    rescaled(((alpha - b.detach()) / beta).sigmoid())
}

fn rescaled(p: Tensor) -> Tensor {
    let s = p.sum(Kind::Float);
    &p * s.detach() / s
}

/// The shift solved on alpha's device with a fixed number of vectorised bisection steps, in float64 and
/// without a host round trip (so a search step can run as one CUDA graph). The root lies in
/// [min alpha - beta L, max alpha - beta L] with L = logit(B / sum n) (there sum n p is at least, and at
/// most, the budget); each step evaluates sum n p on `points` + 1 points across the bracket and keeps the
/// interval where it crosses the budget, so `steps` steps shrink it by points^steps: 4096^4 (CUDA) or
/// 64^9 (CPU) = 1e14 or more, far below the [`SHIFT_TOL`] relative error in sum n p for any bracket
/// under 1e5 wide ([`DeviceShift::solve`] also returns the residual, which the search checks).
pub struct DeviceShift {
    n: Tensor,    // (k) f64
    grid: Tensor, // (points + 1) f64, 0 ..= 1
    steps: usize,
    budget: f64,
    beta: f64,
    offset: f64, // beta L
}

impl DeviceShift {
    /// The solver for sizes `n` and `budget` on `device`; the budget must lie strictly inside (0, sum n).
    pub fn new(n: &[f64], budget: f64, beta: f64, device: tch::Device) -> Result<Self> {
        let total: f64 = n.iter().sum();
        if n.is_empty() {
            return Err(Error::Budget("no candidates to gate".into()));
        }
        if !(budget > 0.0 && budget < total && beta.is_finite() && beta > 0.0) {
            return Err(Error::Budget(format!(
                "budget {budget} must lie strictly between 0 and the space's {total}"
            )));
        }
        let (points, steps) = if device.is_cuda() { (4096, 4) } else { (64, 9) };
        Ok(DeviceShift {
            n: Tensor::from_slice(n).to_device(device),
            grid: Tensor::linspace(0.0, 1.0, points + 1, (Kind::Double, device)),
            steps,
            budget,
            beta,
            offset: beta * (budget / (total - budget)).ln(),
        })
    }

    /// sum_i n_i sigmoid((alpha_i - b_j) / beta) for each point b_j: (points).
    fn expected(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let x = (a.unsqueeze(1) - b.unsqueeze(0)) / self.beta; // (k, points)
        self.n.unsqueeze(0).matmul(&x.sigmoid()).squeeze_dim(0)
    }

    /// (b, |sum n p(b) - B| / B): the shift for `alpha` (no gradient) and its relative residual, both 0-d
    /// float64 on alpha's device (NaN when alpha is not finite).
    pub fn solve(&self, alpha: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| {
            let a = alpha.detach().to_kind(Kind::Double).reshape([-1]);
            let margin = 1e-3 * self.beta;
            let mut lo = a.min() - (self.offset + margin);
            let mut hi = a.max() - (self.offset - margin);
            let m = self.grid.size()[0] - 1;
            for _ in 0..self.steps {
                let pts = &lo + (&hi - &lo) * &self.grid; // (m + 1)
                let above = self.expected(&a, &pts).gt(self.budget).sum(Kind::Int64); // points left of the root
                let j = above.clamp(1, m).reshape([1]);
                lo = pts.index_select(0, &(&j - 1)).squeeze();
                hi = pts.index_select(0, &j).squeeze();
            }
            let b = (lo + hi) * 0.5;
            let residual = (self.expected(&a, &b.reshape([1])).squeeze() - self.budget).abs() / self.budget;
            (b, residual)
        })
    }
}

/// z = sigmoid(logit p + logit u), u ~ U(0, 1) given.
pub fn relax(p: &Tensor, u: &Tensor) -> Tensor {
    let eps = 1e-6;
    let logit = |x: &Tensor| {
        let x = x.clamp(eps, 1.0 - eps);
        x.log() - x.neg().log1p()
    };
    (logit(p) + logit(u)).sigmoid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn shift_solves_random_budgets_and_moves_monotonically() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..200 {
            let k = rng.gen_range(1..300);
            let alpha: Vec<f64> = (0..k).map(|_| rng.gen_range(-8.0..8.0)).collect();
            let n: Vec<f64> = (0..k).map(|_| rng.gen_range(1..5000) as f64).collect();
            let total: f64 = n.iter().sum();
            let mut budgets: Vec<f64> = (0..4).map(|_| rng.gen_range(0.001..0.999) * total).collect();
            budgets.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let mut last_b = f64::INFINITY;
            let mut warm = None;
            for budget in budgets {
                let b = solve_shift(&alpha, &n, budget, 1.0, warm).unwrap();
                let got = expected_params(&alpha, &n, b, 1.0);
                assert!((got - budget).abs() <= SHIFT_TOL * budget, "case {case}: {got} vs {budget}");
                assert!(b <= last_b, "case {case}: a larger budget must lower the shift");
                last_b = b;
                warm = Some(b);
            }
        }
    }

    #[test]
    fn impossible_budgets_fail() {
        assert!(solve_shift(&[0.0, 0.0], &[10.0, 20.0], 30.0, 1.0, None).is_err());
        assert!(solve_shift(&[0.0, 0.0], &[10.0, 20.0], 0.0, 1.0, None).is_err());
        assert!(solve_shift(&[f64::NAN, 0.0], &[10.0, 20.0], 5.0, 1.0, None).is_err());
    }

    /// The device solve against the host solve over random logits, sizes and budgets (both step plans).
    #[test]
    fn device_shift_matches_the_host_solve() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for case in 0..120 {
            let k = rng.gen_range(1..400);
            let spread = [0.1, 3.0, 30.0, 300.0][case % 4];
            let alpha: Vec<f64> = (0..k).map(|_| rng.gen_range(-spread..spread)).collect();
            let n: Vec<f64> = (0..k).map(|_| rng.gen_range(1..5000) as f64).collect();
            let total: f64 = n.iter().sum();
            let budget = (rng.gen_range(0.0005..0.9995) * total).floor().max(1.0);
            let beta = [1.0, 0.5, 2.0][case % 3];
            let a = Tensor::from_slice(&alpha).to_kind(Kind::Float); // alpha is fp32 in the search
            let af: Vec<f64> = Vec::try_from(&a.to_kind(Kind::Double)).unwrap();
            let host = solve_shift(&af, &n, budget, beta, None).unwrap();
            // d(sum n p)/db at the root bounds how far apart two shifts within the tolerance can be
            let slope: f64 = af
                .iter()
                .zip(&n)
                .map(|(x, n)| n * sigmoid((x - host) / beta) * (1.0 - sigmoid((x - host) / beta)) / beta)
                .sum();
            for (points, steps) in [(64, 9), (4096, 4)] {
                // both step plans (CPU, CUDA) on the CPU: the same arithmetic in float64
                let mut s = DeviceShift::new(&n, budget, beta, tch::Device::Cpu).unwrap();
                (s.grid, s.steps) =
                    (Tensor::linspace(0.0, 1.0, points + 1, (Kind::Double, tch::Device::Cpu)), steps);
                let (b, res) = s.solve(&a);
                let (b, res) = (b.double_value(&[]), res.double_value(&[]));
                let got = expected_params(&af, &n, b, beta);
                assert!(res <= SHIFT_TOL, "case {case}, {points} points: residual {res:e}");
                assert!((got - budget).abs() <= SHIFT_TOL * budget, "case {case}: {got} vs {budget}");
                let apart = 2.0 * SHIFT_TOL * budget / slope.max(1e-300) + 1e-9 * (1.0 + host.abs());
                assert!((b - host).abs() <= apart, "case {case}: device {b} vs host {host}");
            }
        }
        let s = DeviceShift::new(&[1.0, 2.0], 1.5, 1.0, tch::Device::Cpu).unwrap();
        let (b, res) = s.solve(&Tensor::from_slice(&[f32::NAN, 0.0]));
        assert!(b.double_value(&[]).is_nan() && res.double_value(&[]).is_nan());
        assert!(DeviceShift::new(&[1.0, 2.0], 3.0, 1.0, tch::Device::Cpu).is_err());
    }

    #[test]
    fn rescaling_keeps_the_value() {
        let a = Tensor::from_slice(&[0.5f32, -1.0, 2.0]);
        let p = gate_probs(&a, 0.3, 1.0);
        let plain = ((&a - 0.3) / 1.0).sigmoid();
        assert!((p - plain).abs().max().double_value(&[]) < 1e-6);
    }
}
