//! Learning rates chosen per task and method (the protocol of issue 21): the plan's `[lr_sweep]` runs
//! each group's cell of one seed at every rate of a grid, picks the rate with the best dev score, and runs
//! every other seed at that rate; the chosen seed's own cell is the sweep cell at that rate (not run
//! twice). Searched and random structures share the delta grid; full fine-tuning has its own.
use super::plan::{fmt_budget, Cell};
use crate::error::{Error, Result};
use crate::results::slug;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSweep {
    /// The seed whose dev split chooses the rate.
    pub seed: u64,
    /// Rates of every delta method (searched, random, manual but full).
    pub grid: Vec<f64>,
    /// Rates of full fine-tuning.
    #[serde(default)]
    pub full: Vec<f64>,
    /// Methods swept (default: every method but transfer, which takes the rate of its task's S3PET
    /// cells).
    #[serde(default)]
    pub methods: Vec<String>,
}

/// A cell's part in a sweep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LrChoice {
    /// A sweep cell at this rate.
    pub rate: Option<f64>,
    /// The sweep cells whose best dev score gives this cell's rate.
    pub from: Vec<String>,
    /// This cell is the chosen sweep cell itself (its record is copied, nothing runs).
    pub copy: bool,
}

/// A cell's group across seeds: its id without `.s<seed>`.
fn group(c: &Cell) -> String {
    c.id.strip_suffix(&format!(".s{}", c.seed)).unwrap_or(&c.id).to_string()
}

fn sweep_id(group: &str, rate: f64, seed: u64) -> String {
    format!("{group}.lr{}.s{seed}", fmt_budget(rate))
}

/// `args` without any `--lr V`, then `--lr rate`.
pub fn with_rate(args: &[String], rate: f64) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--lr" {
            it.next();
        } else if !a.starts_with("--lr=") {
            out.push(a.clone());
        }
    }
    out.extend(["--lr".into(), format!("{rate:e}")]);
    out
}

impl LrSweep {
    fn rates(&self, method: &str) -> &[f64] {
        if method == "full" {
            &self.full
        } else {
            &self.grid
        }
    }

    fn swept(&self, method: &str) -> bool {
        let listed = self.methods.is_empty() && !method.starts_with("transfer-")
            || self.methods.iter().any(|m| m == method);
        listed && !self.rates(method).is_empty()
    }

    /// The sweep group a transfer cell takes its rate from: its task's S3PET cells of the same space,
    /// budget and order.
    fn transfer_group(c: &Cell) -> Option<String> {
        let space = c.method.strip_prefix("transfer-")?;
        let mut g = format!("{}.s3pet-{space}", slug(&c.task));
        if let Some(b) = c.budget {
            g += &format!(".b{}", fmt_budget(b));
        }
        if let Some(o) = c.order {
            g += &format!(".o{o}");
        }
        Some(g)
    }

    /// The plan's cells with the sweep applied: sweep cells added, every swept group's cells told where
    /// their rate comes from.
    pub fn apply(&self, cells: Vec<Cell>) -> Result<Vec<Cell>> {
        if self.grid.iter().chain(&self.full).any(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(Error::config("lr_sweep", "every rate must be a finite number above 0"));
        }
        let mut out = Vec::new();
        for mut c in cells {
            let g = group(&c);
            let target =
                if self.swept(&c.method) { Some((g.clone(), self.rates(&c.method).to_vec())) } else { None };
            let target = target.or_else(|| {
                let tg = Self::transfer_group(&c)?;
                self.swept(&format!("s3pet-{}", c.method.strip_prefix("transfer-")?))
                    .then(|| (tg, self.grid.clone()))
            });
            let Some((src, rates)) = target else {
                out.push(c);
                continue;
            };
            c.lr.from = rates.iter().map(|&r| sweep_id(&src, r, self.seed)).collect();
            if src == g && c.seed == self.seed {
                for &r in &rates {
                    let mut s = c.clone();
                    (s.id, s.args, s.lr) = (
                        sweep_id(&g, r, c.seed),
                        with_rate(&c.args, r),
                        LrChoice { rate: Some(r), ..Default::default() },
                    );
                    out.push(s);
                }
                c.lr.copy = true;
            }
            out.push(c);
        }
        Ok(out)
    }
}

/// The primary dev score of a runs.jsonl record (its task's first metric).
fn dev_score(record: &Value) -> Option<f64> {
    let metric = record["metrics"].as_array()?.first()?.as_str()?;
    record["dev"][metric].as_f64()
}

/// The sweep cell with the best dev score among `from` (ties: the first listed) and its rate.
pub fn best<'a>(from: &[String], records: &'a HashMap<String, Value>) -> Result<(&'a Value, f64)> {
    let mut best: Option<(&Value, f64, f64)> = None;
    for id in from {
        let r = records.get(id).ok_or_else(|| Error::Msg(format!("sweep cell {id} has not finished")))?;
        let score = dev_score(r).ok_or_else(|| Error::Msg(format!("sweep cell {id} has no dev score")))?;
        let rate =
            r["lr"].as_f64().ok_or_else(|| Error::Msg(format!("sweep cell {id} has no recorded lr")))?;
        if best.is_none_or(|(_, s, _)| score > s) {
            best = Some((r, score, rate));
        }
    }
    best.map(|(r, _, rate)| (r, rate)).ok_or_else(|| Error::Msg("an empty learning-rate sweep".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(id: &str, method: &str, seed: u64) -> Cell {
        Cell {
            id: id.into(),
            task: "mrpc".into(),
            method: method.into(),
            budget: None,
            seed,
            order: None,
            source_task: None,
            needs: None,
            skip: None,
            args: vec!["train".into(), "--lr".into(), "1e-3".into()],
            lr: LrChoice::default(),
        }
    }

    #[test]
    fn sweeps_the_choosing_seed_and_points_the_others_at_it() {
        let sw = LrSweep { seed: 1, grid: vec![1e-3, 3e-3], full: vec![1e-5], methods: vec![] };
        let cells = sw
            .apply(vec![
                cell("mrpc.lora.s1", "lora", 1),
                cell("mrpc.lora.s2", "lora", 2),
                cell("mrpc.full.s1", "full", 1),
            ])
            .unwrap();
        let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "mrpc.lora.lr1e-3.s1",
                "mrpc.lora.lr3e-3.s1",
                "mrpc.lora.s1",
                "mrpc.lora.s2",
                "mrpc.full.lr1e-5.s1",
                "mrpc.full.s1"
            ]
        );
        assert_eq!(cells[1].args, ["train", "--lr", "3e-3"]);
        assert!(cells[2].lr.copy && !cells[3].lr.copy);
        assert_eq!(cells[3].lr.from, ["mrpc.lora.lr1e-3.s1", "mrpc.lora.lr3e-3.s1"]);
        let rec = |lr: f64, f1: f64| serde_json::json!({"lr": lr, "metrics": ["f1"], "dev": {"f1": f1}});
        let records: HashMap<String, Value> = [
            ("mrpc.lora.lr1e-3.s1".to_string(), rec(1e-3, 80.0)),
            ("mrpc.lora.lr3e-3.s1".to_string(), rec(3e-3, 82.0)),
        ]
        .into();
        assert_eq!(best(&cells[3].lr.from, &records).unwrap().1, 3e-3);
    }
}
