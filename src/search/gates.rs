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
    let p = ((alpha - b) / beta).sigmoid();
    let s = p.sum(Kind::Float);
    &p * s.detach() / s
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

    #[test]
    fn rescaling_keeps_the_value() {
        let a = Tensor::from_slice(&[0.5f32, -1.0, 2.0]);
        let p = gate_probs(&a, 0.3, 1.0);
        let plain = ((&a - 0.3) / 1.0).sigmoid();
        assert!((p - plain).abs().max().double_value(&[]) < 1e-6);
    }
}
