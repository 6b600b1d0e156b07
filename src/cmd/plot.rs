//! `s3pet plot structure RUN` and `s3pet plot curves RUN`.
use crate::cli::{PlotArgs, PlotCommand};
use anyhow::{bail, Context, Result};
use s3pet::plot::{save_p_heatmap, site_grid, Figure, Heatmap, Lines, Series};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

pub fn run(c: PlotCommand) -> Result<()> {
    let files = match c {
        PlotCommand::Structure(a) => structure(&a)?,
        PlotCommand::Curves(a) => curves(&a)?,
    };
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))
        })
        .collect()
}

/// Heatmap of the searched p (a search run: candidates.tsv) or of the chosen modules (structure.json).
fn structure(a: &PlotArgs) -> Result<Vec<std::path::PathBuf>> {
    let base = a.out.clone().unwrap_or_else(|| a.run.join("structure"));
    let run_name = a.run.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if a.run.join("candidates.tsv").is_file() {
        let p = s3pet::results::mean_p(a.run.parent().unwrap_or(Path::new(".")), &[&run_name])?;
        let title = format!("{run_name}: searched p (best dev) per layer and site");
        return Ok(save_p_heatmap(&p, &title, &base)?);
    }
    let path = a.run.join("structure.json");
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))?;
    let Some(mods) = s["modules"].as_array() else {
        bail!("{}: no `modules` list (full fine-tuning has no structure to plot)", path.display());
    };
    if mods.is_empty() {
        bail!("{}: the structure has no modules", path.display());
    }
    let mut chosen = BTreeMap::new();
    for m in mods {
        let (site, kind) = (m["site"].as_str().unwrap_or(""), m["type"].as_str().unwrap_or(""));
        chosen.insert((site.to_string(), kind.to_string()), m["params"].as_f64().unwrap_or(1.0));
    }
    let (rows, cols, values) = site_grid(&chosen);
    let hi = values.iter().flatten().flatten().cloned().fold(1.0, f64::max);
    let title = format!("{run_name}: chosen modules (colour: parameters)");
    let h = Heatmap {
        title: &title,
        rows: &rows,
        cols: &cols,
        values: &values,
        range: (0.0, hi),
        annotate: false,
        x_label: "layer",
    };
    Ok(h.save(&base)?)
}

/// Loss and dev metrics against steps, from metrics.jsonl (training) and alphas.jsonl (search).
fn curves(a: &PlotArgs) -> Result<Vec<std::path::PathBuf>> {
    let base = a.out.clone().unwrap_or_else(|| a.run.join("curves"));
    let mut loss: Vec<Series> = Vec::new();
    let mut metrics: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let search = a.run.join("alphas.jsonl");
    if search.is_file() {
        let rows = read_jsonl(&search)?;
        let pts =
            |k: &str| rows.iter().filter_map(|r| Some((r["step"].as_f64()?, r[k].as_f64()?, 0.0))).collect();
        loss.push(("search: train loss (D_w)".into(), pts("train_loss")));
        loss.push(("search: validation loss (D_alpha)".into(), pts("val_loss")));
        for r in &rows {
            for (k, v) in r["dev"].as_object().into_iter().flatten() {
                if let (Some(s), Some(v)) = (r["step"].as_f64(), v.as_f64()) {
                    metrics.entry(format!("search dev {k}")).or_default().push((s, v, 0.0));
                }
            }
        }
    }
    let train = a.run.join("metrics.jsonl");
    if train.is_file() {
        let rows: Vec<Value> = read_jsonl(&train)?.into_iter().filter(|r| r["split"] == "dev").collect();
        loss.push((
            "training loss (last batch before each evaluation)".into(),
            rows.iter().filter_map(|r| Some((r["step"].as_f64()?, r["loss"].as_f64()?, 0.0))).collect(),
        ));
        for r in &rows {
            for (k, v) in r["metrics"].as_object().into_iter().flatten() {
                if let (Some(s), Some(v)) = (r["step"].as_f64(), v.as_f64()) {
                    metrics.entry(format!("dev {k}")).or_default().push((s, v, 0.0));
                }
            }
        }
    }
    loss.retain(|s| !s.1.is_empty());
    if loss.is_empty() {
        bail!("{}: no metrics.jsonl or alphas.jsonl with evaluations to plot", a.run.display());
    }
    let name = a.run.display().to_string();
    let mut out = Lines {
        title: &format!("{name}: loss"),
        x_label: "step",
        y_label: "loss",
        series: &loss,
        log_x: false,
        notes: &[],
        points_only: &[],
    }
    .save(&base.with_file_name(format!("{}-loss", base.file_name().unwrap_or_default().to_string_lossy())))?;
    let metrics: Vec<_> = metrics.into_iter().collect();
    out.extend(
        Lines {
            title: &format!("{name}: dev metrics"),
            x_label: "step",
            y_label: "metric (x100)",
            series: &metrics,
            log_x: false,
            notes: &[],
            points_only: &[],
        }
        .save(
            &base.with_file_name(format!(
                "{}-metrics",
                base.file_name().unwrap_or_default().to_string_lossy()
            )),
        )?,
    );
    Ok(out)
}
