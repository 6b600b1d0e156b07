//! `s3pet report results/`: results/RESULTS.md (tables of mean ± std over seeds, the fraction of full
//! fine-tuning kept, budget sweep, orders, transfer, costs) and plots under results/plots/.
use crate::cli::ReportArgs;
use anyhow::{Context, Result};
use s3pet::plot::{save_p_heatmap, Figure, Heatmap, Lines, Series};
use s3pet::results::{grouped, load, mean_p, slug, stat, task_metrics, Cell, Key, Stat};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

const MANUAL: [&str; 6] = ["full", "lora", "adapter", "bitfit", "lnfit", "lra"];

fn label(method: &str) -> String {
    match method {
        "full" => "Fine-tuning".into(),
        "lora" => "LoRA r8 (q, v)".into(),
        "adapter" => "Adapter".into(),
        "bitfit" => "BitFit".into(),
        "lnfit" => "LNFit".into(),
        "lra" => "LRA".into(),
        "s3pet-mix" => "S3PET-M".into(),
        "s3pet-lora" => "S3PET-L".into(),
        "random-mix" => "random-M".into(),
        "random-lora" => "random-L".into(),
        "transfer-mix" => "S3PET-M (transferred)".into(),
        m => m.into(),
    }
}

fn row_label(k: &Key) -> String {
    let mut s = label(&k.method);
    if let Some(b) = k.budget {
        s += &format!(" @ {b:.3e}");
    }
    if k.order == Some(1) {
        s += " (1st order)";
    }
    s
}

/// The groups of the main table: manual methods, then searched / random at each budget, second order.
fn main_rows(groups: &[(Key, Vec<&Cell>)]) -> Vec<(String, Option<f64>)> {
    let mut rows: Vec<(String, Option<f64>)> = Vec::new();
    for m in MANUAL {
        if groups.iter().any(|(k, _)| k.method == m) {
            rows.push((m.into(), None));
        }
    }
    let mut searched: Vec<(String, Option<f64>)> = groups
        .iter()
        .filter(|(k, _)| !MANUAL.contains(&k.method.as_str()) && k.source.is_none() && k.order != Some(1))
        .map(|(k, _)| (k.method.clone(), k.budget))
        .collect();
    searched.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(&b.0)));
    searched.dedup();
    rows.extend(searched);
    rows
}

fn find<'a>(
    groups: &'a [(Key, Vec<&'a Cell>)],
    task: &str,
    method: &str,
    budget: Option<f64>,
    order: Option<u64>,
    source: Option<&str>,
) -> Option<&'a Vec<&'a Cell>> {
    groups
        .iter()
        .find(|(k, _)| {
            k.task == task
                && k.method == method
                && k.budget == budget
                && k.source.as_deref() == source
                && (order.is_none() || k.order == order || (k.order.is_none() && order == Some(2)))
        })
        .map(|(_, v)| v)
}

pub fn run(a: ReportArgs) -> Result<()> {
    let dir = &a.dir;
    let cells =
        load(&dir.join("runs.jsonl")).with_context(|| format!("{}: no runs to report", dir.display()))?;
    let cells_dir = dir.join("cells");
    let plots = dir.join("plots");
    let groups = grouped(&cells);
    let mut tasks: Vec<String> = Vec::new();
    for c in &cells {
        if !tasks.contains(&c.task) {
            tasks.push(c.task.clone());
        }
    }
    let primary = |t: &str| task_metrics(t).first().cloned().unwrap_or_default();
    let mut md = String::new();
    let finished = cells.iter().filter(|c| c.skipped.is_none()).count();
    let seeds: BTreeSet<u64> = cells.iter().map(|c| c.seed).collect();
    let machines: BTreeSet<String> = cells
        .iter()
        .filter(|c| c.skipped.is_none())
        .map(|c| {
            let m = &c.raw["machine"];
            format!(
                "{} ({} CPUs{})",
                m["host"].as_str().unwrap_or("?"),
                m["cpus"],
                m["gpu"].as_str().map(|g| format!(", {g}")).unwrap_or_default()
            )
        })
        .collect();
    writeln!(md, "# Results\n")?;
    writeln!(
        md,
        "{finished} finished cells ({} skipped), seeds {:?}, on {}. Test metrics (x100) are mean ± sample \
         std over seeds; each cell is one line of `runs.jsonl`, its run directory is `cells/<id>/`.\n",
        cells.len() - finished,
        seeds,
        machines.into_iter().collect::<Vec<_>>().join("; ")
    )?;
    if dir.join("plan.toml").is_file() {
        writeln!(
            md,
            "Regenerate: `s3pet experiment --plan {0}/plan.toml --out {0} && s3pet report {0}` (the plan as run \
             is `plan.toml` here; finished cells are skipped, so delete runs.jsonl and cells/ to start over).\n",
            dir.display()
        )?;
    }

    // main table: the tasks with fine-tuning (else every task), the rows present on all of them
    let main_tasks: Vec<String> = {
        let with_full: Vec<String> =
            tasks.iter().filter(|t| find(&groups, t, "full", None, None, None).is_some()).cloned().collect();
        if with_full.is_empty() {
            tasks.clone()
        } else {
            with_full
        }
    };
    let rows: Vec<(String, Option<f64>)> = main_rows(&groups)
        .into_iter()
        .filter(|(m, b)| main_tasks.iter().all(|t| find(&groups, t, m, *b, Some(2), None).is_some()))
        .collect();
    let tasks_all = tasks.clone();
    let tasks = main_tasks;
    writeln!(md, "## Main table (test, first metric of each task)\n")?;
    let mut head = String::from("| method | trainable % of backbone |");
    let mut rule = String::from("|---|---|");
    for t in &tasks {
        head += &format!(" {} ({}) |", slug(t), primary(t));
        rule += "---|";
    }
    head += " average | % of fine-tuning |";
    rule += "---|---|";
    writeln!(md, "{head}\n{rule}")?;
    let full_avg = avg_over(&groups, &tasks, "full", None, &primary);
    for (m, b) in &rows {
        let mut line = format!(
            "| {} |",
            row_label(&Key { task: String::new(), method: m.clone(), budget: *b, order: None, source: None })
        );
        let fr: Vec<f64> = tasks
            .iter()
            .filter_map(|t| find(&groups, t, m, *b, Some(2), None))
            .flat_map(|v| v.iter().filter_map(|c| c.num("delta_fraction")))
            .collect();
        line += &match Stat::of(&fr) {
            Some(s) if m == "full" => format!(" {:.0} |", 100.0 * s.mean),
            Some(s) => format!(" {:.4} |", 100.0 * s.mean),
            None => " |".into(),
        };
        for t in &tasks {
            line += &match find(&groups, t, m, *b, Some(2), None).and_then(|v| stat(v, &primary(t))) {
                Some(s) => format!(" {} |", s.cell()),
                None => " – |".into(),
            };
        }
        let (avg, n) = avg_over(&groups, &tasks, m, *b, &primary);
        if n == tasks.len() && n > 0 {
            line += &format!(" {avg:.1} |");
            line += &match full_avg {
                (f, k) if k == tasks.len() && f != 0.0 => format!(" {:.1} |", 100.0 * avg / f),
                _ => " – |".into(),
            };
        } else {
            line += " – | – |";
        }
        writeln!(md, "{line}")?;
    }
    writeln!(
        md,
        "\nRows: the methods run on every task that has fine-tuning. Average: the mean over these tasks of the \
         per-task means. \"% of fine-tuning\" = that average / fine-tuning's average.\n"
    )?;

    // per-task detail with every metric
    let tasks = tasks_all;
    writeln!(md, "## Every metric, per task\n")?;
    for t in &tasks {
        let ms = task_metrics(t);
        writeln!(md, "### {}\n", slug(t))?;
        writeln!(md, "| method | seeds | {} | search s | retrain s |", ms.join(" | "))?;
        writeln!(md, "|---|---|{}---|---|", "---|".repeat(ms.len()))?;
        for (k, v) in groups.iter().filter(|(k, _)| &k.task == t) {
            let mut line = format!(
                "| {}{} | {} |",
                row_label(k),
                k.source.as_ref().map(|s| format!(" from {}", slug(s))).unwrap_or_default(),
                v.len()
            );
            for m in &ms {
                line += &stat(v, m).map(|s| format!(" {} |", s.cell())).unwrap_or(" – |".into());
            }
            let mean = |key: &str| Stat::of(&v.iter().filter_map(|c| c.num(key)).collect::<Vec<_>>());
            line += &mean("search_seconds").map(|s| format!(" {:.0} |", s.mean)).unwrap_or(" – |".into());
            line += &mean("retrain_seconds").map(|s| format!(" {:.0} |", s.mean)).unwrap_or(" – |".into());
            writeln!(md, "{line}")?;
        }
        writeln!(md)?;
    }

    // budget sweep
    let sweep_tasks: Vec<&String> = tasks
        .iter()
        .filter(|t| {
            let b: BTreeSet<String> = groups
                .iter()
                .filter(|(k, _)| &&k.task == t && k.budget.is_some() && k.source.is_none())
                .map(|(k, _)| format!("{:e}", k.budget.unwrap_or(0.0)))
                .collect();
            b.len() > 2
        })
        .collect();
    if !sweep_tasks.is_empty() {
        writeln!(md, "## Budget sweep\n")?;
    }
    for t in sweep_tasks {
        let pm = primary(t);
        let mut series: Vec<Series> = Vec::new();
        // each method at the search order with the most budgets (the sweep's own)
        let sweep_order = |m: &str| -> Option<u64> {
            let n = |o: Option<u64>| {
                groups
                    .iter()
                    .filter(|(k, _)| &k.task == t && k.method == m && k.source.is_none() && k.order == o)
                    .count()
            };
            [Some(2), Some(1), None].into_iter().max_by_key(|o| (n(*o), o.unwrap_or(0))).flatten()
        };
        for m in ["s3pet-mix", "s3pet-lora", "random-mix", "random-lora"] {
            let order = sweep_order(m);
            let mut pts: Vec<(f64, f64, f64)> = groups
                .iter()
                .filter(|(k, _)| &k.task == t && k.method == m && k.source.is_none() && k.order == order)
                .filter_map(|(k, v)| stat(v, &pm).map(|s| (k.budget.unwrap_or(0.0), s.mean, s.std)))
                .collect();
            pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
            if !pts.is_empty() {
                let o = match order {
                    Some(1) => " (1st order)",
                    Some(_) => " (2nd order)",
                    None => "",
                };
                series.push((format!("{}{o}", label(m)), pts));
            }
        }
        let mut manual_names = Vec::new();
        for m in MANUAL.iter().filter(|m| **m != "full") {
            if let Some(v) = find(&groups, t, m, None, None, None) {
                let fr = Stat::of(&v.iter().filter_map(|c| c.num("delta_fraction")).collect::<Vec<_>>());
                if let (Some(s), Some(f)) = (stat(v, &pm), fr) {
                    series.push((format!("{} (manual)", label(m)), vec![(f.mean, s.mean, s.std)]));
                    manual_names.push(format!("{} (manual)", label(m)));
                }
            }
        }
        let skipped: Vec<String> = cells
            .iter()
            .filter(|c| &c.task == t && c.skipped.is_some() && c.seed == *seeds.iter().next().unwrap_or(&0))
            .map(|c| {
                format!(
                    "skipped: {} at {:.3e} ({})",
                    label(&c.method),
                    c.budget.unwrap_or(0.0),
                    short(c.skipped.as_deref().unwrap_or(""))
                )
            })
            .collect();
        let mut notes = skipped.clone();
        if let Some(s) = find(&groups, t, "full", None, None, None).and_then(|v| stat(v, &pm)) {
            notes.push(format!("fine-tuning (all parameters): {}", s.cell()));
        }
        let title = format!("{}: test {pm} vs trainable fraction of the backbone", slug(t));
        let files = Lines {
            title: &title,
            x_label: "budget / trainable fraction (log)",
            y_label: &pm,
            series: &series,
            log_x: true,
            notes: &notes,
            points_only: &manual_names,
        }
        .save(&plots.join(format!("budget-{}", slug(t))))?;
        writeln!(md, "### {}\n\n![budget sweep]({})\n", slug(t), rel(dir, &files[0]))?;
        let on = |m: &str| match sweep_order(m) {
            Some(1) => " (1st order)",
            Some(_) => " (2nd order)",
            None => "",
        };
        writeln!(
            md,
            "| budget | S3PET-M{} | S3PET-L{} | random-M |\n|---|---|---|---|",
            on("s3pet-mix"),
            on("s3pet-lora")
        )?;
        let budgets: BTreeSet<String> = groups
            .iter()
            .filter(|(k, _)| &k.task == t && k.budget.is_some())
            .map(|(k, _)| format!("{:e}", k.budget.unwrap_or(0.0)))
            .collect();
        let mut budgets: Vec<f64> = budgets.iter().filter_map(|b| b.parse().ok()).collect();
        budgets.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        for b in budgets {
            let c = |m: &str| {
                let o = sweep_order(m);
                groups
                    .iter()
                    .find(|(k, _)| {
                        &k.task == t
                            && k.method == m
                            && k.budget == Some(b)
                            && k.source.is_none()
                            && k.order == o
                    })
                    .and_then(|(_, v)| stat(v, &pm))
                    .map(|s| s.cell())
                    .unwrap_or("–".into())
            };
            writeln!(md, "| {b:.3e} | {} | {} | {} |", c("s3pet-mix"), c("s3pet-lora"), c("random-mix"))?;
        }
        for s in &skipped {
            writeln!(md, "\n{s}")?;
        }
        writeln!(md)?;
    }

    // first vs second order
    let firsts: Vec<&(Key, Vec<&Cell>)> = groups.iter().filter(|(k, _)| k.order == Some(1)).collect();
    if !firsts.is_empty() {
        writeln!(md, "## First vs second order\n\n| task | method | budget | order 1 | order 2 | search s (1 / 2) |\n|---|---|---|---|---|---|")?;
        for (k, v1) in firsts {
            let pm = primary(&k.task);
            let v2 = find(&groups, &k.task, &k.method, k.budget, Some(2), None);
            let secs = |v: &Vec<&Cell>| {
                Stat::of(&v.iter().filter_map(|c| c.num("search_seconds")).collect::<Vec<_>>())
                    .map(|s| format!("{:.0}", s.mean))
                    .unwrap_or("–".into())
            };
            writeln!(
                md,
                "| {} | {} | {:.3e} | {} | {} | {} / {} |",
                k.task,
                label(&k.method),
                k.budget.unwrap_or(0.0),
                stat(v1, &pm).map(|s| s.cell()).unwrap_or("–".into()),
                v2.and_then(|v| stat(v, &pm)).map(|s| s.cell()).unwrap_or("–".into()),
                secs(v1),
                v2.map(secs).unwrap_or("–".into())
            )?;
        }
        writeln!(md)?;
    }

    // transfer
    let transfers: Vec<&(Key, Vec<&Cell>)> = groups.iter().filter(|(k, _)| k.source.is_some()).collect();
    if !transfers.is_empty() {
        writeln!(md, "## Transfer (structure searched on the row's task, retrained on the column's)\n")?;
        let mut names: Vec<String> = Vec::new();
        for (k, _) in &transfers {
            for t in [k.task.clone(), k.source.clone().unwrap_or_default()] {
                if !names.contains(&t) {
                    names.push(t);
                }
            }
        }
        let budgets: BTreeSet<String> =
            transfers.iter().map(|(k, _)| format!("{:e}", k.budget.unwrap_or(0.0))).collect();
        for b in budgets.iter().filter_map(|b| b.parse::<f64>().ok()) {
            let space = transfers
                .iter()
                .find(|(k, _)| k.budget == Some(b))
                .map(|(k, _)| k.method.trim_start_matches("transfer-").to_string())
                .unwrap_or("mix".into());
            let searched = format!("s3pet-{space}");
            let mut values = vec![vec![None; names.len()]; names.len()];
            writeln!(md, "Budget {b:.3e}, space {space}; test metric (the first of the column's task):\n")?;
            let short: Vec<String> = names.iter().map(|t| slug(t)).collect();
            writeln!(
                md,
                "| searched on \\ retrained on | {} |\n|---|{}",
                short.join(" | "),
                "---|".repeat(names.len())
            )?;
            for (r, src) in names.iter().enumerate() {
                let mut line = format!("| {} |", slug(src));
                for (c, tgt) in names.iter().enumerate() {
                    let v = if src == tgt {
                        find(&groups, tgt, &searched, Some(b), Some(2), None)
                    } else {
                        find(&groups, tgt, &format!("transfer-{space}"), Some(b), None, Some(src))
                    };
                    let s = v.and_then(|v| stat(v, &primary(tgt)));
                    values[r][c] = s.map(|s| s.mean);
                    line += &s.map(|s| format!(" {} |", s.cell())).unwrap_or(" – |".into());
                }
                writeln!(md, "{line}")?;
            }
            let lo = values.iter().flatten().flatten().cloned().fold(f64::INFINITY, f64::min);
            let hi = values.iter().flatten().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
            let cols: Vec<String> = names.iter().map(|t| format!("{} ({})", slug(t), primary(t))).collect();
            let title = format!("transfer at {b:.3e}: rows searched on, columns retrained on");
            let files = Heatmap {
                title: &title,
                rows: &short,
                cols: &cols,
                values: &values,
                range: (lo, hi),
                annotate: true,
                x_label: "retrained on",
            }
            .save(&plots.join(format!("transfer-{}", format!("{b:e}").replace('.', "p"))))?;
            writeln!(md, "\n![transfer]({})\n", rel(dir, &files[0]))?;
        }
    }

    // explainability: mean searched p per task
    writeln!(
        md,
        "## Where the search puts its budget (mean best-dev p over seeds, S3PET-M, second order)\n"
    )?;
    for t in &tasks {
        let mut budgets: Vec<f64> = groups
            .iter()
            .filter(|(k, _)| {
                &k.task == t && k.method == "s3pet-mix" && k.source.is_none() && k.order != Some(1)
            })
            .filter_map(|(k, _)| k.budget)
            .collect();
        budgets.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
        let Some(b) = budgets.first().copied() else { continue };
        let ids: Vec<&str> = find(&groups, t, "s3pet-mix", Some(b), Some(2), None)
            .map(|v| {
                v.iter()
                    .map(|c| c.id.as_str())
                    .filter(|id| cells_dir.join(id).join("candidates.tsv").is_file())
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            continue;
        }
        let p = mean_p(&cells_dir, &ids)?;
        let title = format!("{}: S3PET-M p at {b:.3e} (mean of {} seeds)", slug(t), ids.len());
        let files = save_p_heatmap(&p, &title, &plots.join(format!("structure-{}", slug(t))))?;
        let mut top: Vec<(&(String, String), &f64)> = p.iter().collect();
        top.sort_by(|a, b| b.1.partial_cmp(a.1).unwrap_or(std::cmp::Ordering::Equal));
        let top: Vec<String> = top.iter().take(5).map(|((s, k), v)| format!("{s} {k} ({v:.2})")).collect();
        writeln!(
            md,
            "### {}\n\n![structure]({})\n\nHighest p: {}.\n",
            slug(t),
            rel(dir, &files[0]),
            top.join("; ")
        )?;
    }

    // costs
    writeln!(md, "## Cost per cell (mean over tasks and seeds)\n\n| method | search s | retrain s | peak RSS MiB | peak GPU MiB |\n|---|---|---|---|---|")?;
    let mut methods: Vec<String> = Vec::new();
    for c in cells.iter().filter(|c| c.skipped.is_none()) {
        if !methods.contains(&c.method) {
            methods.push(c.method.clone());
        }
    }
    for m in methods {
        let of = |key: &str, scale: f64| {
            Stat::of(
                &cells
                    .iter()
                    .filter(|c| c.method == m && c.skipped.is_none())
                    .filter_map(|c| c.num(key))
                    .map(|x| x / scale)
                    .collect::<Vec<_>>(),
            )
            .map(|s| format!("{:.0}", s.mean))
            .unwrap_or("–".into())
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            label(&m),
            of("search_seconds", 1.0),
            of("retrain_seconds", 1.0),
            of("peak_rss_bytes", 1048576.0),
            of("peak_gpu_memory_mib", 1.0)
        )?;
    }
    writeln!(md)?;
    let discussion = dir.join("discussion.md");
    if discussion.is_file() {
        md += &std::fs::read_to_string(&discussion)?;
    }
    s3pet::artifact::write_bytes(&dir.join("RESULTS.md"), md.as_bytes())?;
    println!("{}", dir.join("RESULTS.md").display());
    Ok(())
}

/// Mean over tasks of the per-task mean of the first metric; and how many tasks had the method.
fn avg_over(
    groups: &[(Key, Vec<&Cell>)],
    tasks: &[String],
    method: &str,
    budget: Option<f64>,
    primary: &dyn Fn(&str) -> String,
) -> (f64, usize) {
    let vals: Vec<f64> = tasks
        .iter()
        .filter_map(|t| find(groups, t, method, budget, Some(2), None).and_then(|v| stat(v, &primary(t))))
        .map(|s| s.mean)
        .collect();
    (vals.iter().sum::<f64>() / vals.len().max(1) as f64, vals.len())
}

fn short(s: &str) -> String {
    s.chars().take(90).collect()
}

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).display().to_string()
}
