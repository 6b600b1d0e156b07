//! The report's tables: the main table, every metric per task, first against second order, costs.
use super::render::{Block, Table};
use super::{label, manual, row_label, Ctx};
use crate::results::{slug, stat, Key, Stat};

fn dash() -> String {
    "–".into()
}

/// The rows of the main table: manual methods, then searched / random at each budget (second order),
/// largest budget first.
fn main_rows(ctx: &Ctx) -> Vec<(String, Option<f64>)> {
    let mut rows: Vec<(String, Option<f64>)> = manual()
        .into_iter()
        .filter(|m| ctx.groups.iter().any(|(k, _)| k.method == *m))
        .map(|m| (m.to_string(), None))
        .collect();
    let mut searched: Vec<(String, Option<f64>)> = ctx
        .groups
        .iter()
        .filter(|(k, _)| !manual().contains(&k.method.as_str()) && k.source.is_none() && k.order != Some(1))
        .map(|(k, _)| (k.method.clone(), k.budget))
        .collect();
    searched.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(&b.0)));
    searched.dedup();
    rows.extend(searched);
    rows
}

/// Mean over `tasks` of the per-task mean of the first metric, and how many tasks had the method.
fn avg_over(ctx: &Ctx, tasks: &[String], method: &str, budget: Option<f64>) -> (f64, usize) {
    let vals: Vec<f64> = tasks
        .iter()
        .filter_map(|t| ctx.find(t, method, budget, Some(2), None).and_then(|v| stat(v, &ctx.primary(t))))
        .map(|s| s.mean)
        .collect();
    (vals.iter().sum::<f64>() / vals.len().max(1) as f64, vals.len())
}

/// One main-table row: label, trainable fraction, each task, average, % of fine-tuning.
fn main_row(ctx: &Ctx, tasks: &[String], m: &str, b: Option<f64>, full_avg: (f64, usize)) -> Vec<String> {
    let key = Key { task: String::new(), method: m.into(), budget: b, order: None, source: None };
    let mut row = vec![row_label(&key)];
    let fr: Vec<f64> = tasks
        .iter()
        .filter_map(|t| ctx.find(t, m, b, Some(2), None))
        .flat_map(|v| v.iter().filter_map(|c| c.num("delta_fraction")))
        .collect();
    row.push(match Stat::of(&fr) {
        Some(s) if m == "full" => format!("{:.0}", 100.0 * s.mean),
        Some(s) => format!("{:.4}", 100.0 * s.mean),
        None => String::new(),
    });
    for t in tasks {
        row.push(
            ctx.find(t, m, b, Some(2), None)
                .and_then(|v| stat(v, &ctx.primary(t)))
                .map(|s| s.cell())
                .unwrap_or_else(dash),
        );
    }
    let (avg, n) = avg_over(ctx, tasks, m, b);
    if n == tasks.len() && n > 0 {
        row.push(format!("{avg:.1}"));
        row.push(match full_avg {
            (f, k) if k == tasks.len() && f != 0.0 => format!("{:.1}", 100.0 * avg / f),
            _ => dash(),
        });
    } else {
        row.extend([dash(), dash()]);
    }
    row
}

/// The main table: the tasks with fine-tuning (else every task where a main-table method has finished
/// cells beyond its learning-rate sweep), the rows present on all of them.
pub fn main_table(ctx: &Ctx) -> Vec<Block> {
    let with_full: Vec<String> =
        ctx.tasks.iter().filter(|t| ctx.find(t, "full", None, None, None).is_some()).cloned().collect();
    let rows = main_rows(ctx);
    let with_rows = || -> Vec<String> {
        let has_row = |t: &String| rows.iter().any(|(m, b)| ctx.find(t, m, *b, Some(2), None).is_some());
        ctx.tasks.iter().filter(|t| has_row(t)).cloned().collect()
    };
    let with_full_columns = !with_full.is_empty();
    let tasks = if with_full_columns { with_full } else { with_rows() };
    let mut t = Table::new(&["method", "trainable % of backbone"]);
    t.header.extend(tasks.iter().map(|task| format!("{} ({})", slug(task), ctx.primary(task))));
    t.header.extend(["average".into(), "% of fine-tuning".into()]);
    let full_avg = avg_over(ctx, &tasks, "full", None);
    for (m, b) in
        rows.into_iter().filter(|(m, b)| tasks.iter().all(|t| ctx.find(t, m, *b, Some(2), None).is_some()))
    {
        t.rows.push(main_row(ctx, &tasks, &m, b, full_avg));
    }
    let heading = Block::Heading(2, "Main table (test, first metric of each task)".into());
    if t.rows.is_empty() {
        let names: Vec<String> = tasks.iter().map(|t| slug(t)).collect();
        let why = format!(
            "No method has finished cells on every one of these tasks yet ({}): the per-task tables below \
             hold what has finished.",
            names.join(", ")
        );
        return vec![heading, Block::Para(why)];
    }
    vec![
        heading,
        Block::Table(t),
        Block::Para(format!(
            "Columns: {}. Rows: the methods with finished cells on every one of them. Average: the mean \
                 over these tasks of the per-task means. \"% of fine-tuning\" = that average / fine-tuning's \
                 average.",
            if with_full_columns {
                "the tasks that have fine-tuning"
            } else {
                "the tasks where a method has finished cells beyond its learning-rate sweep (fine-tuning has \
                     none yet)"
            }
        )),
    ]
}

/// Mean of a numeric field over cells, formatted without decimals.
fn mean_of(cells: &[&crate::results::Cell], key: &str, scale: f64) -> String {
    Stat::of(&cells.iter().filter_map(|c| c.num(key)).map(|x| x / scale).collect::<Vec<_>>())
        .map(|s| format!("{:.0}", s.mean))
        .unwrap_or_else(dash)
}

/// Every metric of every group, per task, with the search and retrain seconds.
pub fn per_task(ctx: &Ctx) -> Vec<Block> {
    let mut out = vec![Block::Heading(2, "Every metric, per task".into())];
    for task in &ctx.tasks {
        let ms = ctx.metrics(task);
        let mut t = Table::new(&["method", "seeds"]);
        t.header.extend(ms.iter().cloned());
        t.header.extend(["search s".into(), "retrain s".into()]);
        for (k, v) in ctx.groups.iter().filter(|(k, _)| &k.task == task) {
            let from = k.source.as_ref().map(|s| format!(" from {}", slug(s))).unwrap_or_default();
            let mut row = vec![format!("{}{from}", row_label(k)), v.len().to_string()];
            row.extend(ms.iter().map(|m| stat(v, m).map(|s| s.cell()).unwrap_or_else(dash)));
            row.push(mean_of(v, "search_seconds", 1.0));
            row.push(mean_of(v, "retrain_seconds", 1.0));
            t.rows.push(row);
        }
        let body = if t.rows.is_empty() {
            Block::Para(
                "Only learning-rate sweep cells have finished here (the learning-rate table above).".into(),
            )
        } else {
            Block::Table(t)
        };
        out.extend([Block::Heading(3, slug(task)), body]);
    }
    out
}

/// First against second order, for every group searched with the first order.
pub fn orders(ctx: &Ctx) -> Vec<Block> {
    let firsts: Vec<_> = ctx.groups.iter().filter(|(k, _)| k.order == Some(1)).collect();
    if firsts.is_empty() {
        return Vec::new();
    }
    let mut t = Table::new(&["task", "method", "budget", "order 1", "order 2", "search s (1 / 2)"]);
    for (k, v1) in firsts {
        let pm = ctx.primary(&k.task);
        let v2 = ctx.find(&k.task, &k.method, k.budget, Some(2), None);
        let cell = |v: Option<&Vec<&crate::results::Cell>>| {
            v.and_then(|v| stat(v, &pm)).map(|s| s.cell()).unwrap_or_else(dash)
        };
        t.rows.push(vec![
            k.task.clone(),
            label(&k.method),
            format!("{:.3e}", k.budget.unwrap_or(0.0)),
            cell(Some(v1)),
            cell(v2),
            format!(
                "{} / {}",
                mean_of(v1, "search_seconds", 1.0),
                v2.map(|v| mean_of(v, "search_seconds", 1.0)).unwrap_or_else(dash)
            ),
        ]);
    }
    vec![Block::Heading(2, "First vs second order".into()), Block::Table(t)]
}

/// Mean search and retrain seconds and peak memory per method.
pub fn costs(ctx: &Ctx) -> Vec<Block> {
    let mut methods: Vec<String> = Vec::new();
    for c in ctx.cells.iter().filter(|c| c.skipped.is_none() && !c.sweep) {
        if !methods.contains(&c.method) {
            methods.push(c.method.clone());
        }
    }
    let mut t = Table::new(&["method", "search s", "retrain s", "peak RSS MiB", "peak GPU MiB"]);
    for m in methods {
        let cells: Vec<&crate::results::Cell> =
            ctx.cells.iter().filter(|c| c.method == m && c.skipped.is_none() && !c.sweep).collect();
        t.rows.push(vec![
            label(&m),
            mean_of(&cells, "search_seconds", 1.0),
            mean_of(&cells, "retrain_seconds", 1.0),
            mean_of(&cells, "peak_rss_bytes", 1048576.0),
            mean_of(&cells, "peak_gpu_memory_mib", 1.0),
        ]);
    }
    vec![Block::Heading(2, "Cost per cell (mean over tasks and seeds)".into()), Block::Table(t)]
}
