//! Aggregates an experiment's runs.jsonl: cells grouped by (task, method, budget, order, source), test
//! metrics as mean ± std over seeds, and the searched p of each candidate per task.
use crate::data::TaskSpec;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One finished (or skipped) cell of runs.jsonl.
#[derive(Debug, Clone)]
pub struct Cell {
    pub id: String,
    pub task: String,
    pub method: String,
    pub budget: Option<f64>,
    pub order: Option<u64>,
    pub source: Option<String>,
    pub seed: u64,
    pub skipped: Option<String>,
    /// A learning-rate sweep cell (reported in the sweep table only).
    pub sweep: bool,
    pub raw: Value,
}

/// What groups cells across seeds.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct Key {
    pub task: String,
    pub method: String,
    pub budget: Option<f64>,
    pub order: Option<u64>,
    pub source: Option<String>,
}

/// The sweep cell a runs.jsonl record copies (seed 1 of a swept group runs nothing of its own), if any.
pub fn copy_of(record: &Value) -> Option<&str> {
    record["lr_copy_of"].as_str()
}

impl Cell {
    /// The id of the directory under cells/ that holds this cell's run: that of the sweep cell it copies,
    /// else its own.
    pub fn run_dir_id(&self) -> &str {
        copy_of(&self.raw).unwrap_or(&self.id)
    }

    pub fn key(&self) -> Key {
        Key {
            task: self.task.clone(),
            method: self.method.clone(),
            budget: self.budget,
            order: self.order,
            source: self.source.clone(),
        }
    }
    /// A test metric (x100 as the metrics module reports them).
    pub fn test(&self, metric: &str) -> Option<f64> {
        self.raw["test"][metric].as_f64()
    }
    pub fn num(&self, key: &str) -> Option<f64> {
        self.raw[key].as_f64()
    }
}

pub fn load(path: &Path) -> Result<Vec<Cell>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| Error::parse(path, i + 1, e.to_string()))?;
        let s = |k: &str| v[k].as_str().map(String::from);
        let (Some(id), Some(task), Some(method)) = (s("id"), s("task"), s("method")) else {
            return Err(Error::parse(path, i + 1, "a cell needs `id`, `task` and `method`"));
        };
        out.push(Cell {
            id,
            task,
            method,
            budget: v["budget"].as_f64(),
            order: v["order"].as_u64(),
            source: s("source_task"),
            seed: v["seed"].as_u64().unwrap_or(0),
            skipped: s("skipped"),
            sweep: v["lr_sweep"].as_bool().unwrap_or(false),
            raw: v,
        });
    }
    Ok(out)
}

/// Mean, sample standard deviation and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(xs: &[f64]) -> Option<Stat> {
        if xs.is_empty() {
            return None;
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var =
            if n > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Some(Stat { mean, std: var.sqrt(), n })
    }
    /// `mean ± std`, or `mean (1 seed)` where one value leaves the spread unknown.
    pub fn cell(&self) -> String {
        match self.n {
            1 => format!("{:.1} (1 seed)", self.mean),
            _ => format!("{:.1} ± {:.1}", self.mean, self.std),
        }
    }
}

/// A task as a file-name part: a builtin's name, a spec file's stem.
pub fn slug(task: &str) -> String {
    let stem = Path::new(task).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The metric that selects checkpoints for a task (its first), and all of them.
pub fn task_metrics(task: &str) -> Vec<String> {
    TaskSpec::resolve(task).map(|s| s.metrics.clone()).unwrap_or_default()
}

/// Test values of `metric` over seeds, per group.
pub fn grouped(cells: &[Cell]) -> Vec<(Key, Vec<&Cell>)> {
    let mut groups: Vec<(Key, Vec<&Cell>)> = Vec::new();
    for c in cells.iter().filter(|c| c.skipped.is_none() && !c.sweep) {
        let k = c.key();
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(c),
            None => groups.push((k, vec![c])),
        }
    }
    groups
}

pub fn stat(cells: &[&Cell], metric: &str) -> Option<Stat> {
    Stat::of(&cells.iter().filter_map(|c| c.test(metric)).collect::<Vec<_>>())
}

/// Mean best-dev p of every candidate site/type over the given search cells, read from each cell's
/// candidates.tsv (`site`, `type`, `best_p` columns): (site, type) -> mean p.
pub fn mean_p(cells_dir: &Path, ids: &[&str]) -> Result<BTreeMap<(String, String), f64>> {
    let mut sum: BTreeMap<(String, String), (f64, usize)> = BTreeMap::new();
    for id in ids {
        let path = cells_dir.join(id).join("candidates.tsv");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| Error::parse(&path, 1, format!("no `{name}` column")))
        };
        let (cs, ct, cp) = (col("site")?, col("type")?, col("best_p")?);
        for (i, l) in lines.enumerate() {
            let f: Vec<&str> = l.split('\t').collect();
            let p: f64 = f
                .get(cp)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| Error::parse(&path, i + 2, "bad best_p"))?;
            let e = sum.entry((f[cs].to_string(), f[ct].to_string())).or_default();
            (e.0, e.1) = (e.0 + p, e.1 + 1);
        }
    }
    Ok(sum.into_iter().map(|(k, (s, n))| (k, s / n as f64)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_sample_statistics() {
        let s = Stat::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (2.0, 1.0, 3));
        assert_eq!(Stat::of(&[5.0]).unwrap().std, 0.0);
        assert!(Stat::of(&[]).is_none());
    }
}
