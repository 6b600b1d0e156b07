//! From gate probabilities to a structure: greedy by p (descending; ties by candidate order), add each
//! candidate that still fits the budget. The random baseline shuffles instead, then fills the same way.
use crate::delta::ModuleSpec;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Greedy fill in `order`; never exceeds `budget`. Returns the chosen candidate indices in `order`.
pub fn greedy_fill(order: &[usize], params: &[i64], budget: i64) -> Vec<usize> {
    let mut left = budget;
    let mut chosen = Vec::new();
    for &i in order {
        if params[i] <= left {
            left -= params[i];
            chosen.push(i);
        }
    }
    chosen
}

/// Candidates sorted by p descending, ties broken by index (deterministic; NaN sorts last).
pub fn order_by_p(p: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (p[a], p[b]);
        pb.partial_cmp(&pa).unwrap_or_else(|| pa.is_nan().cmp(&pb.is_nan())).then(a.cmp(&b))
    });
    order
}

pub fn discretize(p: &[f64], candidates: &[ModuleSpec], budget: i64) -> Vec<usize> {
    let params: Vec<i64> = candidates.iter().map(|c| c.params.unwrap_or(0)).collect();
    greedy_fill(&order_by_p(p), &params, budget)
}

pub fn random_structure(candidates: &[ModuleSpec], budget: i64, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let params: Vec<i64> = candidates.iter().map(|c| c.params.unwrap_or(0)).collect();
    greedy_fill(&order, &params, budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn never_over_budget_and_deterministic() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..500 {
            let k = rng.gen_range(1..200);
            let params: Vec<i64> = (0..k).map(|_| rng.gen_range(1..2000)).collect();
            let p: Vec<f64> = (0..k).map(|_| rng.gen_range(0.0..1.0)).collect();
            let budget = rng.gen_range(0..params.iter().sum::<i64>() + 10);
            let a = greedy_fill(&order_by_p(&p), &params, budget);
            let b = greedy_fill(&order_by_p(&p), &params, budget);
            assert_eq!(a, b);
            assert!(a.iter().map(|&i| params[i]).sum::<i64>() <= budget);
            // maximal: nothing left out would still fit
            let used: i64 = a.iter().map(|&i| params[i]).sum();
            let min_out = (0..k).filter(|i| !a.contains(i)).map(|i| params[i]).min().unwrap_or(i64::MAX);
            assert!(min_out > budget - used);
        }
    }

    #[test]
    fn ties_break_by_index_and_nan_last() {
        assert_eq!(order_by_p(&[0.5, 0.9, 0.5, f64::NAN, 0.1]), vec![1, 0, 2, 4, 3]);
    }
}
