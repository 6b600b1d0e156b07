//! Evaluation metrics, all scaled x100. Degenerate cases (zero variance, no positives) give 0.0,
//! never NaN.
use std::collections::BTreeMap;

use crate::data::Target;
use crate::error::{Error, Result};

/// Every metric name `compute` knows.
pub const NAMES: &[&str] = &[
    "accuracy",
    "f1",
    "matthews",
    "pearson",
    "spearman",
    "macro_f1",
    "multirc_f1a",
    "multirc_em",
    "exact_match",
    "response_loglik",
];

/// Metrics of generation tasks (computed by `causal::evaluate_generation`, not by [`compute`]):
/// greedy output equal to the reference reply (x100), mean log-likelihood per reply token.
pub fn is_generation_metric(name: &str) -> bool {
    matches!(name, "exact_match" | "response_loglik")
}

/// Metrics over scores (regression); the others are over class indices.
pub fn is_regression_metric(name: &str) -> bool {
    matches!(name, "pearson" | "spearman")
}

/// Computes the named metrics. `f1` and `multirc_f1a` are binary with class 1 positive;
/// `multirc_em` needs `groups` (the fraction of groups whose examples are all right).
pub fn compute(
    metrics: &[String],
    preds: &[Target],
    golds: &[Target],
    groups: Option<&[Option<String>]>,
) -> Result<BTreeMap<String, f64>> {
    if preds.len() != golds.len() {
        return Err(Error::Msg(format!("metrics: {} predictions for {} golds", preds.len(), golds.len())));
    }
    if golds.is_empty() {
        return Err(Error::Msg("metrics: no examples to score".into()));
    }
    let mut out = BTreeMap::new();
    for name in metrics {
        let value = match name.as_str() {
            "pearson" | "spearman" => {
                let (p, g) = scores(preds, golds)?;
                if name == "pearson" {
                    pearson(&p, &g)
                } else {
                    pearson(&ranks(&p), &ranks(&g))
                }
            }
            "multirc_em" => exact_match(preds, golds, groups)?,
            other => {
                let (p, g) = classes(preds, golds)?;
                match other {
                    "accuracy" => accuracy(&p, &g),
                    "f1" | "multirc_f1a" => binary_f1(&p, &g),
                    "matthews" => matthews(&p, &g),
                    "macro_f1" => macro_f1(&p, &g),
                    _ => {
                        let known = NAMES.join(", ");
                        return Err(Error::config(
                            "metrics",
                            format!("unknown metric `{name}` (known: {known})"),
                        ));
                    }
                }
            }
        };
        out.insert(name.clone(), if value.is_finite() { 100.0 * value } else { 0.0 });
    }
    Ok(out)
}

fn classes(preds: &[Target], golds: &[Target]) -> Result<(Vec<usize>, Vec<usize>)> {
    let class = |t: &Target| match t {
        Target::Class(c) => Ok(*c),
        Target::Score(_) => Err(Error::Msg("metrics: a class metric got a score".into())),
    };
    Ok((preds.iter().map(class).collect::<Result<_>>()?, golds.iter().map(class).collect::<Result<_>>()?))
}

fn scores(preds: &[Target], golds: &[Target]) -> Result<(Vec<f64>, Vec<f64>)> {
    let score = |t: &Target| match t {
        Target::Score(s) => Ok(f64::from(*s)),
        Target::Class(_) => Err(Error::Msg("metrics: a correlation metric got a class".into())),
    };
    Ok((preds.iter().map(score).collect::<Result<_>>()?, golds.iter().map(score).collect::<Result<_>>()?))
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

fn accuracy(p: &[usize], g: &[usize]) -> f64 {
    ratio(p.iter().zip(g).filter(|(a, b)| a == b).count() as f64, g.len() as f64)
}

/// F1 of class `c` against the rest: 2tp / (2tp + fp + fn).
fn f1_of(p: &[usize], g: &[usize], c: usize) -> f64 {
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (&a, &b) in p.iter().zip(g) {
        match (a == c, b == c) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    ratio(2.0 * tp as f64, (2 * tp + fp + fneg) as f64)
}

fn binary_f1(p: &[usize], g: &[usize]) -> f64 {
    f1_of(p, g, 1)
}

/// Mean F1 over the classes present in golds or predictions (as sklearn's `average="macro"`).
fn macro_f1(p: &[usize], g: &[usize]) -> f64 {
    let mut present: Vec<usize> = p.iter().chain(g).copied().collect();
    present.sort_unstable();
    present.dedup();
    ratio(present.iter().map(|&c| f1_of(p, g, c)).sum(), present.len() as f64)
}

/// Matthews correlation, multiclass form (Gorodkin's R_K); binary MCC for two classes.
fn matthews(p: &[usize], g: &[usize]) -> f64 {
    let k = p.iter().chain(g).max().map_or(0, |m| m + 1);
    let (mut pred_n, mut true_n) = (vec![0f64; k], vec![0f64; k]);
    let mut correct = 0f64;
    for (&a, &b) in p.iter().zip(g) {
        pred_n[a] += 1.0;
        true_n[b] += 1.0;
        if a == b {
            correct += 1.0;
        }
    }
    let s = g.len() as f64;
    let pt: f64 = pred_n.iter().zip(&true_n).map(|(x, y)| x * y).sum();
    let pp: f64 = pred_n.iter().map(|x| x * x).sum();
    let tt: f64 = true_n.iter().map(|x| x * x).sum();
    ratio(correct * s - pt, ((s * s - pp) * (s * s - tt)).sqrt())
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    ratio(sxy, (sxx * syy).sqrt())
}

/// 1-based ranks; ties get the average of the ranks they span.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            r[o] = avg;
        }
        i = j + 1;
    }
    r
}

/// Fraction of groups whose every example is predicted right.
fn exact_match(preds: &[Target], golds: &[Target], groups: Option<&[Option<String>]>) -> Result<f64> {
    let groups = groups.ok_or_else(|| Error::Msg("metrics: multirc_em needs question groups".into()))?;
    if groups.len() != golds.len() {
        return Err(Error::Msg(format!("metrics: {} groups for {} examples", groups.len(), golds.len())));
    }
    let (p, g) = classes(preds, golds)?;
    let mut all_right: BTreeMap<&str, bool> = BTreeMap::new();
    for ((a, b), group) in p.iter().zip(&g).zip(groups) {
        let group = group
            .as_deref()
            .ok_or_else(|| Error::Msg("metrics: multirc_em: an example has no group".into()))?;
        *all_right.entry(group).or_insert(true) &= a == b;
    }
    Ok(ratio(all_right.values().filter(|&&ok| ok).count() as f64, all_right.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cls(v: &[usize]) -> Vec<Target> {
        v.iter().map(|&c| Target::Class(c)).collect()
    }

    fn sc(v: &[f32]) -> Vec<Target> {
        v.iter().map(|&s| Target::Score(s)).collect()
    }

    fn run(
        names: &[&str],
        p: &[Target],
        g: &[Target],
        groups: Option<&[Option<String>]>,
    ) -> BTreeMap<String, f64> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        compute(&names, p, g, groups).unwrap()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    // Reference values from sklearn 1.9.1 / scipy 1.17.1 (x100).
    #[test]
    fn binary_metrics_match_sklearn() {
        let p = cls(&[1, 0, 1, 1, 0, 1, 0, 0, 1, 1]);
        let g = cls(&[1, 0, 0, 1, 0, 1, 1, 0, 1, 0]);
        let m = run(&["accuracy", "f1", "matthews", "macro_f1", "multirc_f1a"], &p, &g, None);
        close(m["accuracy"], 70.0);
        close(m["f1"], 72.72727272727273);
        close(m["multirc_f1a"], 72.72727272727273);
        close(m["matthews"], 40.8248290463863);
        close(m["macro_f1"], 69.6969696969697);
    }

    #[test]
    fn multiclass_metrics_match_sklearn() {
        let p = cls(&[0, 2, 1, 0, 0, 1, 2, 2]);
        let g = cls(&[0, 1, 1, 0, 2, 1, 2, 0]);
        let m = run(&["accuracy", "matthews", "macro_f1"], &p, &g, None);
        close(m["accuracy"], 62.5);
        close(m["matthews"], 45.23809523809524);
        close(m["macro_f1"], 62.22222222222222);
        // class 2 never appears: sklearn averages over the present classes only
        let m = run(&["macro_f1"], &cls(&[0, 1, 1]), &cls(&[0, 1, 0]), None);
        close(m["macro_f1"], 66.66666666666667);
    }

    #[test]
    fn correlations_match_scipy() {
        let p = sc(&[2.5, 0.0, 2.0, 8.0, 2.0, 3.5]);
        let g = sc(&[3.0, -0.5, 2.0, 7.0, 4.0, 4.0]);
        let m = run(&["pearson", "spearman"], &p, &g, None);
        close(m["pearson"], 92.34465826660777);
        close(m["spearman"], 83.82352941176471);
    }

    #[test]
    fn degenerate_cases_are_zero() {
        let m = run(&["f1", "matthews"], &cls(&[0, 0, 0]), &cls(&[0, 0, 0]), None);
        assert_eq!((m["f1"], m["matthews"]), (0.0, 0.0));
        let m = run(&["pearson", "spearman"], &sc(&[1.0, 1.0, 1.0]), &sc(&[1.0, 2.0, 3.0]), None);
        assert_eq!((m["pearson"], m["spearman"]), (0.0, 0.0));
    }

    #[test]
    fn exact_match_by_group() {
        let groups: Vec<Option<String>> =
            ["a", "a", "b", "b", "c"].iter().map(|s| Some(s.to_string())).collect();
        let m = run(&["multirc_em"], &cls(&[1, 0, 1, 1, 0]), &cls(&[1, 0, 0, 1, 0]), Some(&groups));
        close(m["multirc_em"], 200.0 / 3.0);
    }

    #[test]
    fn misuse_is_an_error() {
        let names = vec!["accuracy".to_string()];
        assert!(compute(&names, &cls(&[1]), &cls(&[1, 0]), None).is_err());
        assert!(compute(&names, &sc(&[1.0]), &sc(&[1.0]), None).is_err());
        assert!(compute(&["bleu".to_string()], &cls(&[1]), &cls(&[1]), None).is_err());
        assert!(compute(&["multirc_em".to_string()], &cls(&[1]), &cls(&[1]), None).is_err());
        assert!(compute(&names, &[], &[], None).is_err());
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }
}
