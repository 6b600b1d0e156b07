//! The report's figures with their tables: the budget sweep per task, the transfer matrix, and where the
//! search puts its budget (mean p heatmaps).
use super::render::{Block, Table};
use super::{label, manual, Ctx};
use crate::error::Result;
use crate::plot::{save_p_heatmap, Figure, Heatmap, Lines, Series};
use crate::results::{mean_p, slug, stat, Stat};
use std::collections::BTreeSet;

const SWEPT: [&str; 4] = ["s3pet-mix", "s3pet-lora", "random-mix", "random-lora"];

/// The budgets of a task's (non-transfer) cells.
fn budgets_of(ctx: &Ctx, task: &str) -> Vec<f64> {
    let set: BTreeSet<String> = ctx
        .groups
        .iter()
        .filter(|(k, _)| k.task == task && k.budget.is_some() && k.source.is_none())
        .map(|(k, _)| format!("{:e}", k.budget.unwrap_or(0.0)))
        .collect();
    let mut v: Vec<f64> = set.iter().filter_map(|b| b.parse().ok()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

/// The search order with the most budgets of a method on a task (the sweep's own).
fn sweep_order(ctx: &Ctx, task: &str, m: &str) -> Option<u64> {
    let n = |o: Option<u64>| {
        ctx.groups
            .iter()
            .filter(|(k, _)| k.task == task && k.method == m && k.source.is_none() && k.order == o)
            .count()
    };
    [Some(2), Some(1), None].into_iter().max_by_key(|o| (n(*o), o.unwrap_or(0))).flatten()
}

fn order_note(o: Option<u64>) -> &'static str {
    match o {
        Some(1) => " (1st order)",
        Some(_) => " (2nd order)",
        None => "",
    }
}

/// The curves of a sweep: each swept method at its order, each manual method as one point.
fn sweep_series(ctx: &Ctx, task: &str) -> (Vec<Series>, Vec<String>) {
    let pm = ctx.primary(task);
    let mut series: Vec<Series> = Vec::new();
    for m in SWEPT {
        let order = sweep_order(ctx, task, m);
        let mut pts: Vec<(f64, f64, f64)> = ctx
            .groups
            .iter()
            .filter(|(k, _)| k.task == task && k.method == m && k.source.is_none() && k.order == order)
            .filter_map(|(k, v)| stat(v, &pm).map(|s| (k.budget.unwrap_or(0.0), s.mean, s.std)))
            .collect();
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        if !pts.is_empty() {
            series.push((format!("{}{}", label(m), order_note(order)), pts));
        }
    }
    let mut manual_names = Vec::new();
    for m in manual().into_iter().filter(|m| *m != "full") {
        let Some(v) = ctx.find(task, m, None, None, None) else { continue };
        let fr = Stat::of(&v.iter().filter_map(|c| c.num("delta_fraction")).collect::<Vec<_>>());
        if let (Some(s), Some(f)) = (stat(v, &pm), fr) {
            let name = format!("{} (manual)", label(m));
            series.push((name.clone(), vec![(f.mean, s.mean, s.std)]));
            manual_names.push(name);
        }
    }
    (series, manual_names)
}

/// Lines under a sweep plot: skipped budgets (first seed) and fine-tuning's score.
fn sweep_notes(ctx: &Ctx, task: &str) -> (Vec<String>, Vec<String>) {
    let first_seed = ctx.cells.iter().map(|c| c.seed).min().unwrap_or(0);
    let skipped: Vec<String> = ctx
        .cells
        .iter()
        .filter(|c| c.task == task && c.skipped.is_some() && c.seed == first_seed)
        .map(|c| {
            let why: String = c.skipped.as_deref().unwrap_or("").chars().take(90).collect();
            format!("skipped: {} at {:.3e} ({why})", label(&c.method), c.budget.unwrap_or(0.0))
        })
        .collect();
    let mut notes = skipped.clone();
    if let Some(s) = ctx.find(task, "full", None, None, None).and_then(|v| stat(v, &ctx.primary(task))) {
        notes.push(format!("fine-tuning (all parameters): {}", s.cell()));
    }
    (notes, skipped)
}

/// The sweep of one task: plot, table of S3PET-M / S3PET-L / random-M per budget, skipped notes.
fn sweep(ctx: &Ctx, task: &str) -> Result<Vec<Block>> {
    let pm = ctx.primary(task);
    let (series, manual_names) = sweep_series(ctx, task);
    let (notes, skipped) = sweep_notes(ctx, task);
    let title = format!("{}: test {pm} vs trainable fraction of the backbone", slug(task));
    let files = Lines {
        title: &title,
        x_label: "budget / trainable fraction (log)",
        y_label: &pm,
        series: &series,
        log_x: true,
        notes: &notes,
        points_only: &manual_names,
    }
    .save(&ctx.plots.join(format!("budget-{}", slug(task))))?;
    let on = |m: &str| order_note(sweep_order(ctx, task, m));
    let mut t = Table::new(&["budget"]);
    t.header.extend([
        format!("S3PET-M{}", on("s3pet-mix")),
        format!("S3PET-L{}", on("s3pet-lora")),
        "random-M".into(),
    ]);
    for b in budgets_of(ctx, task) {
        let cell = |m: &str| {
            let o = sweep_order(ctx, task, m);
            ctx.groups
                .iter()
                .find(|(k, _)| {
                    k.task == task
                        && k.method == m
                        && k.budget == Some(b)
                        && k.source.is_none()
                        && k.order == o
                })
                .and_then(|(_, v)| stat(v, &pm))
                .map(|s| s.cell())
                .unwrap_or_else(|| "–".into())
        };
        t.rows.push(vec![format!("{b:.3e}"), cell("s3pet-mix"), cell("s3pet-lora"), cell("random-mix")]);
    }
    let mut out = vec![
        Block::Heading(3, slug(task)),
        Block::Image("budget sweep".into(), ctx.rel(&files[0])),
        Block::Table(t),
    ];
    out.extend(skipped.into_iter().map(Block::Para));
    Ok(out)
}

/// A budget sweep for every task with more than two budgets.
pub fn budget_sweeps(ctx: &Ctx) -> Result<Vec<Block>> {
    let tasks: Vec<&String> = ctx.tasks.iter().filter(|t| budgets_of(ctx, t).len() > 2).collect();
    let mut out = Vec::new();
    if !tasks.is_empty() {
        out.push(Block::Heading(2, "Budget sweep".into()));
    }
    for t in tasks {
        out.extend(sweep(ctx, t)?);
    }
    Ok(out)
}

/// The transfer matrix at one budget: rows searched on, columns retrained on; table and heatmap.
fn transfer_at(ctx: &Ctx, names: &[String], b: f64, space: &str) -> Result<Vec<Block>> {
    let searched = format!("s3pet-{space}");
    let short: Vec<String> = names.iter().map(|t| slug(t)).collect();
    let mut values = vec![vec![None; names.len()]; names.len()];
    let mut t = Table::new(&["searched on \\ retrained on"]);
    t.header.extend(short.iter().cloned());
    for (r, src) in names.iter().enumerate() {
        let mut row = vec![slug(src)];
        for (c, tgt) in names.iter().enumerate() {
            let v = if src == tgt {
                ctx.find(tgt, &searched, Some(b), Some(2), None)
            } else {
                ctx.find(tgt, &format!("transfer-{space}"), Some(b), None, Some(src))
            };
            let s = v.and_then(|v| stat(v, &ctx.primary(tgt)));
            values[r][c] = s.map(|s| s.mean);
            row.push(s.map(|s| s.cell()).unwrap_or_else(|| "–".into()));
        }
        t.rows.push(row);
    }
    let lo = values.iter().flatten().flatten().cloned().fold(f64::INFINITY, f64::min);
    let hi = values.iter().flatten().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
    let cols: Vec<String> = names.iter().map(|t| format!("{} ({})", slug(t), ctx.primary(t))).collect();
    let title = format!("transfer at {b:.3e}: rows searched on, columns retrained on");
    let h = Heatmap {
        title: &title,
        rows: &short,
        cols: &cols,
        values: &values,
        range: (lo, hi),
        annotate: true,
        x_label: "retrained on",
    };
    let files = h.save(&ctx.plots.join(format!("transfer-{}", format!("{b:e}").replace('.', "p"))))?;
    Ok(vec![
        Block::Para(format!("Budget {b:.3e}, space {space}; test metric (the first of the column's task):")),
        Block::Table(t),
        Block::Image("transfer".into(), ctx.rel(&files[0])),
    ])
}

/// The transfer section: one matrix per budget with transfer cells.
pub fn transfer(ctx: &Ctx) -> Result<Vec<Block>> {
    let transfers: Vec<_> = ctx.groups.iter().filter(|(k, _)| k.source.is_some()).collect();
    if transfers.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = Vec::new();
    for (k, _) in &transfers {
        for t in [k.task.clone(), k.source.clone().unwrap_or_default()] {
            if !names.contains(&t) {
                names.push(t);
            }
        }
    }
    let mut out = vec![Block::Heading(
        2,
        "Transfer (structure searched on the row's task, retrained on the column's)".into(),
    )];
    let budgets: BTreeSet<String> =
        transfers.iter().map(|(k, _)| format!("{:e}", k.budget.unwrap_or(0.0))).collect();
    for b in budgets.iter().filter_map(|b| b.parse::<f64>().ok()) {
        let space = transfers
            .iter()
            .find(|(k, _)| k.budget == Some(b))
            .map(|(k, _)| k.method.trim_start_matches("transfer-").to_string())
            .unwrap_or_else(|| "mix".into());
        out.extend(transfer_at(ctx, &names, b, &space)?);
    }
    Ok(out)
}

/// Mean best-dev p of the S3PET-M cells of each task at its largest budget, as a heatmap.
pub fn explain(ctx: &Ctx) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    let cells_dir = ctx.dir.join("cells");
    for t in &ctx.tasks {
        let mut budgets: Vec<f64> = ctx
            .groups
            .iter()
            .filter(|(k, _)| {
                &k.task == t && k.method == "s3pet-mix" && k.source.is_none() && k.order != Some(1)
            })
            .filter_map(|(k, _)| k.budget)
            .collect();
        budgets.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
        let Some(b) = budgets.first().copied() else { continue };
        let ids: Vec<&str> = ctx
            .find(t, "s3pet-mix", Some(b), Some(2), None)
            .map(|v| {
                v.iter()
                    .map(|c| c.run_dir_id())
                    .filter(|id| cells_dir.join(id).join("candidates.tsv").is_file())
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            continue;
        }
        let p = mean_p(&cells_dir, &ids)?;
        let title = format!("{}: S3PET-M p at {b:.3e} (mean of {} seeds)", slug(t), ids.len());
        let files = save_p_heatmap(&p, &title, &ctx.plots.join(format!("structure-{}", slug(t))))?;
        let mut top: Vec<(&(String, String), &f64)> = p.iter().collect();
        top.sort_by(|a, b| b.1.partial_cmp(a.1).unwrap_or(std::cmp::Ordering::Equal));
        let top: Vec<String> = top.iter().take(5).map(|((s, k), v)| format!("{s} {k} ({v:.2})")).collect();
        out.extend([
            Block::Heading(3, slug(t)),
            Block::Image("structure".into(), ctx.rel(&files[0])),
            Block::Para(format!("Mean over {} seeds. Highest p: {}.", ids.len(), top.join("; "))),
        ]);
    }
    // no searched cell yet: no section
    if !out.is_empty() {
        let title = "Where the search puts its budget (mean best-dev p over seeds, S3PET-M, second order)";
        out.insert(0, Block::Heading(2, title.into()));
    }
    Ok(out)
}
