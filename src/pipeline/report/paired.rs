//! Is searching worth it: paired differences of S3PET-M against random-M and each manual baseline over
//! (task, seed) with a paired bootstrap interval; the learning rates the sweep chose; the compute of each
//! method against one LoRA run.
use super::render::{Block, Table};
use super::{label, manual, Ctx};
use crate::results::{slug, Cell, Stat};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Resamples of the paired bootstrap.
const RESAMPLES: usize = 10_000;

/// The test score of a cell on its task's first metric.
fn score(ctx: &Ctx, c: &Cell) -> Option<f64> {
    c.test(&ctx.primary(&c.task))
}

/// (task, seed) -> score of the group of (method, budget) at second order.
fn scores(ctx: &Ctx, method: &str, budget: Option<f64>) -> BTreeMap<(String, u64), f64> {
    let mut out = BTreeMap::new();
    for t in &ctx.tasks {
        for c in ctx.find(t, method, budget, Some(2), None).into_iter().flatten() {
            if let Some(s) = score(ctx, c) {
                out.insert((t.clone(), c.seed), s);
            }
        }
    }
    out
}

/// Mean of the differences and the 2.5 / 97.5 percentiles of the mean over resampled pairs (seed 0).
pub fn paired_bootstrap(diffs: &[f64]) -> Option<(f64, f64, f64)> {
    if diffs.is_empty() {
        return None;
    }
    let n = diffs.len();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut means: Vec<f64> =
        (0..RESAMPLES).map(|_| (0..n).map(|_| diffs[rng.gen_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    Some((mean, at(0.025), at(0.975)))
}

/// One row: `method` at `budget` minus `other` (at `other_budget`), paired by (task, seed).
fn diff_row(ctx: &Ctx, (m, b): (&str, Option<f64>), (o, ob): (&str, Option<f64>)) -> Option<Vec<String>> {
    let (mine, theirs) = (scores(ctx, m, b), scores(ctx, o, ob));
    let diffs: Vec<f64> = mine.iter().filter_map(|(k, s)| theirs.get(k).map(|t| s - t)).collect();
    let tasks: std::collections::BTreeSet<&String> =
        mine.keys().filter(|k| theirs.contains_key(*k)).map(|(t, _)| t).collect();
    let (mean, lo, hi) = paired_bootstrap(&diffs)?;
    let at = |b: Option<f64>| b.map(|b| format!(" @ {b:.3e}")).unwrap_or_default();
    Some(vec![
        format!("{}{}", label(m), at(b)),
        format!("{}{}", label(o), at(ob)),
        format!("{mean:+.1}"),
        format!("[{lo:+.1}, {hi:+.1}]"),
        pairs_cell(diffs.len(), tasks.len()),
    ])
}

/// The "pairs (task, seed)" cell: how many pairs, over how many tasks.
fn pairs_cell(pairs: usize, tasks: usize) -> String {
    format!("{pairs} ({tasks} task{})", if tasks == 1 { "" } else { "s" })
}

/// S3PET-M minus random-M (same budget) and minus each manual baseline, for every S3PET-M budget.
pub fn differences(ctx: &Ctx) -> Vec<Block> {
    let mut budgets: Vec<f64> = ctx
        .groups
        .iter()
        .filter(|(k, _)| k.method == "s3pet-mix" && k.source.is_none())
        .filter_map(|(k, _)| k.budget)
        .collect();
    budgets.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    budgets.dedup();
    let mut t = Table::new(&[
        "method",
        "against",
        "mean difference (test, x100)",
        "95% paired bootstrap",
        "pairs (task, seed)",
    ]);
    for b in budgets {
        let me = ("s3pet-mix", Some(b));
        let others = std::iter::once(("random-mix", Some(b))).chain(manual().into_iter().map(|m| (m, None)));
        t.rows.extend(others.filter_map(|o| diff_row(ctx, me, o)));
    }
    if t.rows.is_empty() {
        return Vec::new();
    }
    vec![
        Block::Heading(2, "Paired differences (S3PET-M minus the others)".into()),
        Block::Table(t),
        Block::Para(format!(
            "Differences of the test score (each task's first metric) over the (task, seed) pairs both methods ran; \
             the interval is the 2.5-97.5 percentile of the mean over {RESAMPLES} resamples of those pairs (seeded)."
        )),
    ]
}

/// The sweep table: each swept group's dev score at every rate and the rate chosen, which is the rate of
/// the choosing seed's cell (the runner copies the best sweep cell under that cell's id once every rate of
/// the group has finished); a group still sweeping says so instead of naming its best rate so far.
pub fn lr_choices(ctx: &Ctx) -> Vec<Block> {
    let sweeps: Vec<&Cell> = ctx.cells.iter().filter(|c| c.sweep).collect();
    if sweeps.is_empty() {
        return Vec::new();
    }
    let mut groups: BTreeMap<(String, String, String), Vec<SweepPoint>> = BTreeMap::new();
    for c in &sweeps {
        let (Some(lr), Some(dev)) = (c.num("lr"), c.raw["dev"][ctx.primary(&c.task)].as_f64()) else {
            continue;
        };
        let at = c.budget.map(|b| format!(" @ {b:.3e}")).unwrap_or_default();
        groups
            .entry((slug(&c.task), format!("{}{at}", label(&c.method)), ctx.primary(&c.task)))
            .or_default()
            .push((lr, dev, c.id.as_str()));
    }
    let mut t = Table::new(&["task", "method", "dev metric", "dev score per learning rate", "chosen"]);
    for ((task, method, metric), mut v) in groups {
        v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let cells: Vec<String> = v.iter().map(|(lr, d, _)| format!("{lr:.0e}: {d:.1}")).collect();
        let chosen = chosen_rate(ctx, &v.iter().map(|x| x.2).collect::<Vec<_>>())
            .map(|lr| format!("{lr:.0e}"))
            .unwrap_or_else(|| "not yet (sweep running)".into());
        t.rows.push(vec![task, method, metric, cells.join("; "), chosen]);
    }
    vec![Block::Heading(2, "Learning rates (chosen on one seed's dev split)".into()), Block::Table(t)]
}

/// One sweep cell: its learning rate, dev score and id.
type SweepPoint<'a> = (f64, f64, &'a str);

/// The rate of the cell that the runner copied from one of these sweep cells, if it has chosen yet.
fn chosen_rate(ctx: &Ctx, sweep_ids: &[&str]) -> Option<f64> {
    ctx.cells
        .iter()
        .find(|c| crate::results::copy_of(&c.raw).is_some_and(|of| sweep_ids.contains(&of)))
        .and_then(|c| c.num("lr"))
}

/// Search + retrain seconds per method against one LoRA run of the same task (mean over cells).
pub fn compute(ctx: &Ctx) -> Vec<Block> {
    let secs = |c: &Cell| c.num("search_seconds").unwrap_or(0.0) + c.num("retrain_seconds").unwrap_or(0.0);
    let lora: BTreeMap<&str, f64> = ctx
        .tasks
        .iter()
        .filter_map(|t| {
            ctx.find(t, "lora", None, None, None)
                .and_then(|v| Stat::of(&v.iter().map(|c| secs(c)).collect::<Vec<_>>()))
                .map(|s| (t.as_str(), s.mean))
        })
        .collect();
    if lora.is_empty() {
        return Vec::new();
    }
    let mut t = Table::new(&["method", "search + retrain s", "x one LoRA run of the task"]);
    for (k, v) in ctx.groups.iter().filter(|(k, _)| k.source.is_none()) {
        let Some(base) = lora.get(k.task.as_str()) else { continue };
        let s = Stat::of(&v.iter().map(|c| secs(c)).collect::<Vec<_>>());
        if let Some(s) = s {
            t.rows.push(vec![
                format!("{} {}", slug(&k.task), super::row_label(k)),
                format!("{:.0}", s.mean),
                format!("{:.2}", s.mean / base),
            ]);
        }
    }
    vec![Block::Heading(2, "Compute per method (against one LoRA run)".into()), Block::Table(t)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_shrinks_with_agreement() {
        let (m, lo, hi) = paired_bootstrap(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((m - 2.5).abs() < 1e-12 && lo < m && m < hi && lo >= 1.0 && hi <= 4.0);
        let (m, lo, hi) = paired_bootstrap(&[2.0; 6]).unwrap();
        assert_eq!((m, lo, hi), (2.0, 2.0, 2.0));
        assert!(paired_bootstrap(&[]).is_none());
    }

    #[test]
    fn the_pairs_cell_says_task_for_one_and_tasks_for_more() {
        assert_eq!(pairs_cell(3, 1), "3 (1 task)");
        assert_eq!(pairs_cell(30, 6), "30 (6 tasks)");
    }
}
