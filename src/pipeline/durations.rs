//! How long a cell is expected to take, for `experiment --cells-end-by`: the longest wall time of the
//! finished cells of its kind (task, method, search order), from runs.jsonl and from the cells finishing
//! now; for a kind with none finished yet, the longest of the same method and order on any task, and
//! for an order of a search not yet run anywhere, the longest of the method at a higher order (a task's
//! first cells of a method, or a plan's first first-order searches, would otherwise start blind and be
//! cut: the fourteenth MPNet lease lost three first-order cells so). A lease that ends at a known
//! time then starts only cells that can end before it, and fills its tail with shorter kinds instead of
//! cells that would be cut.
use super::plan::Cell;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// Expected wall times are the longest seen times this: cells that share a GPU slow down as more start.
const MARGIN: f64 = 1.2;

/// Longest wall seconds seen per kind (`task/method/order`) and per method and search order (any task;
/// `None` for a method without a search).
#[derive(Debug, Default)]
pub struct Durations {
    by_kind: HashMap<String, f64>,
    by_method: HashMap<String, BTreeMap<Option<u64>, f64>>,
}

fn kind(task: &str, method: &str, order: Option<u64>) -> String {
    format!("{task}/{method}/{}", order.map_or_else(|| "-".to_string(), |o| o.to_string()))
}

fn keep_longest(longest: &mut f64, wall: f64) {
    *longest = longest.max(wall);
}

impl Durations {
    /// From runs.jsonl's records (`task`, `method`, `order`, `wall_seconds`); records without a wall time
    /// (skipped cells) and cells resumed from a checkpoint (whose wall time is their last attempt's) are
    /// left out.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut d = Durations::default();
        for r in records.into_iter().filter(|r| ran_in_one_attempt(r)) {
            if let (Some(task), Some(method), Some(wall)) =
                (r["task"].as_str(), r["method"].as_str(), r["wall_seconds"].as_f64())
            {
                d.add(task, method, r["order"].as_u64(), wall);
            }
        }
        d
    }

    fn add(&mut self, task: &str, method: &str, order: Option<u64>, wall: f64) {
        keep_longest(self.by_kind.entry(kind(task, method, order)).or_insert(0.0), wall);
        let by_order = self.by_method.entry(method.to_string()).or_default();
        keep_longest(by_order.entry(order).or_insert(0.0), wall);
    }

    /// A cell of `cell`'s kind finished after `wall` seconds (from its start, not resumed).
    pub fn note(&mut self, cell: &Cell, wall: f64) {
        self.add(&cell.task, &cell.method, cell.order.map(u64::from), wall);
    }

    /// Seconds a cell of this kind is expected to take, with [`MARGIN`]: the longest of its kind so far,
    /// else the longest of its method and order on any task, else of its method at a higher search
    /// order (a second-order search bounds a first-order one, not the other way); `None` while none
    /// has finished.
    pub fn expected(&self, cell: &Cell) -> Option<f64> {
        let order = cell.order.map(u64::from);
        let of_kind = self.by_kind.get(&kind(&cell.task, &cell.method, order)).copied();
        of_kind.or_else(|| self.longest_of_method(&cell.method, order)).map(|s| s * MARGIN)
    }

    /// The longest of `method` on any task at `order`, else at a higher order.
    fn longest_of_method(&self, method: &str, order: Option<u64>) -> Option<f64> {
        let by_order = self.by_method.get(method)?;
        let higher =
            || by_order.range((Bound::Excluded(order), Bound::Unbounded)).map(|(_, &w)| w).reduce(f64::max);
        by_order.get(&order).copied().or_else(higher)
    }
}

/// Whether a record's search and retraining each ran in one attempt (attempt seconds equal to the total).
fn ran_in_one_attempt(r: &Value) -> bool {
    let one = |total: &str, attempt: &str| match (r[total].as_f64(), r[attempt].as_f64()) {
        (Some(t), Some(a)) => (t - a).abs() <= 1e-6 * t.max(1.0),
        _ => true,
    };
    one("search_seconds", "search_attempt_seconds") && one("retrain_seconds", "retrain_attempt_seconds")
}

/// Whether a cell expected to take `expected` seconds (`None`: unknown) may start with `left` seconds
/// to the end (`None`: no end given). A cell of unknown length starts (the caller's `--max-minutes`
/// bounds those); a known one only when it is expected to end in time.
pub fn ends_in_time(expected: Option<f64>, left: Option<f64>) -> bool {
    match (expected, left) {
        (Some(e), Some(l)) => e <= l,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_longest_cell_of_a_kind_with_its_margin_is_expected() {
        let runs = [
            json!({"task": "cola", "method": "s3pet-mix", "order": 2, "wall_seconds": 300.0}),
            json!({"task": "cola", "method": "s3pet-mix", "order": 2, "wall_seconds": 500.0}),
            json!({"task": "cola", "method": "s3pet-mix", "order": 1, "wall_seconds": 100.0}),
            json!({"task": "cola", "method": "lora", "order": null, "wall_seconds": 50.0}),
            json!({"task": "cola", "method": "bitfit", "skip": "no budget"}),
            // resumed: its wall time is its last attempt's
            json!({"task": "cola", "method": "lora", "wall_seconds": 10.0, "retrain_seconds": 50.0,
                   "retrain_attempt_seconds": 9.0}),
        ];
        let mut d = Durations::from_records(&runs);
        let cell = |method: &str, order: Option<u8>| Cell {
            task: "cola".into(),
            method: method.into(),
            order,
            ..Cell::default()
        };
        assert_eq!(d.expected(&cell("s3pet-mix", Some(2))), Some(500.0 * MARGIN));
        assert_eq!(d.expected(&cell("s3pet-mix", Some(1))), Some(100.0 * MARGIN));
        assert_eq!(d.expected(&cell("lora", None)), Some(50.0 * MARGIN));
        let d_resumed_only = Durations::from_records(&runs[5..]);
        assert_eq!(d_resumed_only.expected(&cell("lora", None)), None);
        assert_eq!(d.expected(&cell("bitfit", None)), None);
        d.note(&cell("lora", None), 80.0);
        d.note(&cell("lora", None), 60.0);
        assert_eq!(d.expected(&cell("lora", None)), Some(80.0 * MARGIN));
    }

    #[test]
    fn a_kind_not_yet_seen_takes_the_longest_of_its_method_and_order_on_other_tasks() {
        let runs = [
            json!({"task": "copa", "method": "full", "wall_seconds": 200.0}),
            json!({"task": "stsb", "method": "full", "wall_seconds": 380.0}),
            json!({"task": "cola", "method": "s3pet-mix", "order": 1, "wall_seconds": 90.0}),
        ];
        let mut d = Durations::from_records(&runs);
        let cell = |task: &str, method: &str, order: Option<u8>| Cell {
            task: task.into(),
            method: method.into(),
            order,
            ..Cell::default()
        };
        assert_eq!(d.expected(&cell("rte", "full", None)), Some(380.0 * MARGIN));
        assert_eq!(d.expected(&cell("copa", "full", None)), Some(200.0 * MARGIN));
        assert_eq!(d.expected(&cell("rte", "s3pet-mix", Some(1))), Some(90.0 * MARGIN));
        assert_eq!(d.expected(&cell("rte", "s3pet-mix", Some(2))), None);
        d.note(&cell("rte", "full", None), 250.0);
        assert_eq!(d.expected(&cell("rte", "full", None)), Some(250.0 * MARGIN));
        assert_eq!(d.expected(&cell("mrpc", "full", None)), Some(380.0 * MARGIN));
    }

    #[test]
    fn an_order_not_yet_run_takes_the_longest_of_its_method_at_a_higher_order() {
        let runs = [
            json!({"task": "mrpc", "method": "s3pet-mix", "order": 2, "wall_seconds": 360.0}),
            json!({"task": "cola", "method": "s3pet-mix", "order": 2, "wall_seconds": 340.0}),
            json!({"task": "cola", "method": "lora", "order": null, "wall_seconds": 30.0}),
        ];
        let mut d = Durations::from_records(&runs);
        let cell = |task: &str, order: Option<u8>| Cell {
            task: task.into(),
            method: "s3pet-mix".into(),
            order,
            ..Cell::default()
        };
        assert_eq!(d.expected(&cell("mrpc", Some(1))), Some(360.0 * MARGIN));
        assert_eq!(d.expected(&cell("stsb", Some(1))), Some(360.0 * MARGIN));
        d.note(&cell("cola", Some(1)), 150.0);
        assert_eq!(d.expected(&cell("mrpc", Some(1))), Some(150.0 * MARGIN));
        assert_eq!(d.expected(&cell("cola", Some(2))), Some(340.0 * MARGIN));
        let first_order_only = Durations::from_records(&[json!({"task": "mrpc", "method": "s3pet-mix",
            "order": 1, "wall_seconds": 100.0})]);
        assert_eq!(first_order_only.expected(&cell("stsb", Some(2))), None);
    }

    #[test]
    fn a_known_cell_starts_only_when_it_ends_in_time() {
        assert!(ends_in_time(Some(100.0), Some(100.0)));
        assert!(!ends_in_time(Some(100.0), Some(99.0)));
        assert!(ends_in_time(None, Some(1.0)));
        assert!(ends_in_time(Some(1e9), None));
    }
}
