//! `s3pet report results/`: RESULTS.md (tables of mean ± std over seeds, the fraction of full
//! fine-tuning kept, budget sweep, orders, transfer, explainability, costs) and plots under plots/.
//! Table builders return data ([`render::Block`]); one renderer writes markdown.
mod figures;
mod paired;
pub mod render;
mod tables;

use crate::error::{Error, Result};
use crate::results::{grouped, load, Cell, Key};
use render::Block;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Everything a table builder reads: the cells, their groups over seeds, the tasks in order, and where
/// plots go.
pub struct Ctx<'a> {
    pub dir: &'a Path,
    pub cells: &'a [Cell],
    pub groups: Vec<(Key, Vec<&'a Cell>)>,
    pub tasks: Vec<String>,
    pub plots: PathBuf,
}

impl<'a> Ctx<'a> {
    fn new(dir: &'a Path, cells: &'a [Cell]) -> Self {
        let mut tasks: Vec<String> = Vec::new();
        for c in cells {
            if !tasks.contains(&c.task) {
                tasks.push(c.task.clone());
            }
        }
        Ctx { dir, cells, groups: grouped(cells), tasks, plots: dir.join("plots") }
    }

    /// The metrics of a task: those its cells recorded (a user task's own), else the builtin spec's.
    pub fn metrics(&self, task: &str) -> Vec<String> {
        let recorded = self.cells.iter().filter(|c| c.task == task).find_map(|c| {
            c.raw["metrics"]
                .as_array()
                .map(|a| a.iter().filter_map(|m| m.as_str().map(String::from)).collect::<Vec<_>>())
        });
        recorded.filter(|m| !m.is_empty()).unwrap_or_else(|| crate::results::task_metrics(task))
    }

    /// The metric that selects checkpoints for a task (its first).
    pub fn primary(&self, task: &str) -> String {
        self.metrics(task).first().cloned().unwrap_or_else(|| "score".into())
    }

    /// The group of (task, method, budget, source) at `order` (None: any; second order also matches
    /// cells without an order).
    pub fn find(
        &self,
        task: &str,
        method: &str,
        budget: Option<f64>,
        order: Option<u64>,
        source: Option<&str>,
    ) -> Option<&Vec<&'a Cell>> {
        self.groups
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

    /// A path under the report directory, as written in RESULTS.md.
    pub fn rel(&self, p: &Path) -> String {
        p.strip_prefix(self.dir).unwrap_or(p).display().to_string()
    }
}

/// The opening paragraph: cells, seeds, machines, and how to regenerate.
fn preamble(ctx: &Ctx) -> Vec<Block> {
    let finished = ctx.cells.iter().filter(|c| c.skipped.is_none()).count();
    let seeds: BTreeSet<u64> = ctx.cells.iter().map(|c| c.seed).collect();
    let machines: BTreeSet<String> = ctx
        .cells
        .iter()
        .filter(|c| c.skipped.is_none())
        .map(|c| {
            let m = &c.raw["machine"];
            let gpu = m["gpu"].as_str().map(|g| format!(", {g}")).unwrap_or_default();
            format!("{} ({} CPUs{gpu})", m["host"].as_str().unwrap_or("?"), m["cpus"])
        })
        .collect();
    let mut out = vec![
        Block::Heading(1, "Results".into()),
        Block::Para(format!(
            "{finished} finished cells ({} skipped), seeds {:?}, on {}. Test metrics (x100) are mean ± sample \
             std over seeds; each cell is one line of `runs.jsonl`, its run directory is `cells/<id>/`.",
            ctx.cells.len() - finished,
            seeds,
            machines.into_iter().collect::<Vec<_>>().join("; ")
        )),
    ];
    let lora = lora_settings(ctx);
    if !lora.is_empty() {
        out.push(Block::Para(format!("LoRA cells (rank; target modules): {}.", lora.join("; "))));
    }
    if let Some(line) = precision_line(ctx) {
        out.push(Block::Para(line));
    }
    if ctx.dir.join("plan.toml").is_file() {
        out.push(Block::Para(format!(
            "Regenerate: `s3pet experiment --plan {0}/plan.toml --out {0} && s3pet report {0}` (the plan as run \
             is `plan.toml` here; finished cells are skipped, so delete runs.jsonl and cells/ to start over).",
            ctx.dir.display()
        )));
    }
    out
}

/// A finished cell's recorded config.json (that of the sweep cell it copies, if so; null when none).
fn cell_config(ctx: &Ctx, c: &Cell) -> serde_json::Value {
    let path = ctx.dir.join("cells").join(c.run_dir_id()).join("config.json");
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// A recorded option's value as text (config.json records `{"value": .., "from": ..}`).
fn recorded(v: &serde_json::Value, key: &str) -> Option<String> {
    let value = &v[key]["value"];
    (!value.is_null()).then(|| value.as_str().map(String::from).unwrap_or_else(|| value.to_string()))
}

/// The distinct LoRA settings of the manual LoRA cells, from each cell's recorded config.json (a value
/// left at its default is the family's default: rank 8 on the attention's query and value).
fn lora_settings(ctx: &Ctx) -> Vec<String> {
    let set: BTreeSet<String> = ctx
        .cells
        .iter()
        .filter(|c| c.method == "lora" && c.skipped.is_none())
        .map(|c| {
            let v = cell_config(ctx, c);
            let r = recorded(&v, "lora_r").unwrap_or_else(|| "8".into());
            let t = recorded(&v, "target_modules").unwrap_or_else(|| "query and value (the default)".into());
            format!("r{r}; {t}")
        })
        .collect();
    set.into_iter().collect()
}

/// Which methods ran with `--precision bf16`, from the recorded configs; none when every cell is fp32.
fn precision_line(ctx: &Ctx) -> Option<String> {
    let mut by_precision: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for c in ctx.cells.iter().filter(|c| c.skipped.is_none()) {
        let p = recorded(&cell_config(ctx, c), "precision").unwrap_or_else(|| "fp32".into());
        by_precision.entry(p).or_default().insert(label(&c.method));
    }
    let list = |p: &str| by_precision.get(p).map(|m| m.iter().cloned().collect::<Vec<_>>().join(", "));
    let bf16 = list("bf16")?;
    let fp32 = list("fp32").map(|m| format!("; fp32 for {m}")).unwrap_or_else(|| " (every cell)".into());
    Some(format!(
        "Precision: bf16 activations and frozen matmuls (deltas, heads, optimiser state fp32) for {bf16}{fp32}."
    ))
}

/// Every block of the report of the experiment in `dir` (plots are written as they are made).
pub fn build(dir: &Path, cells: &[Cell]) -> Result<Vec<Block>> {
    let ctx = Ctx::new(dir, cells);
    let mut blocks = preamble(&ctx);
    blocks.extend(tables::main_table(&ctx));
    blocks.extend(paired::differences(&ctx));
    blocks.extend(paired::lr_choices(&ctx));
    blocks.extend(tables::per_task(&ctx));
    blocks.extend(figures::budget_sweeps(&ctx)?);
    blocks.extend(tables::orders(&ctx));
    blocks.extend(figures::transfer(&ctx)?);
    blocks.extend(figures::explain(&ctx)?);
    blocks.extend(tables::costs(&ctx));
    blocks.extend(paired::compute(&ctx));
    let discussion = dir.join("discussion.md");
    if discussion.is_file() {
        blocks.push(Block::Raw(std::fs::read_to_string(&discussion).map_err(|e| Error::io(&discussion, e))?));
    }
    Ok(blocks)
}

/// Writes `dir`/RESULTS.md from `dir`/runs.jsonl; returns its path.
pub fn write(dir: &Path) -> Result<PathBuf> {
    let runs = dir.join("runs.jsonl");
    let cells = load(&runs).map_err(|e| Error::file(dir, format!("no runs to report: {e}")))?;
    let md = render::markdown(&build(dir, &cells)?);
    let out = dir.join("RESULTS.md");
    crate::artifact::write_bytes(&out, md.as_bytes())?;
    Ok(out)
}

/// The display name of a method.
pub fn label(method: &str) -> String {
    match method {
        "full" => "Fine-tuning".into(),
        "lora" => "LoRA".into(),
        "adapter" => "Adapter".into(),
        "bitfit" => "BitFit".into(),
        "lnfit" => "LNFit".into(),
        "lra" => "LRA".into(),
        "s3pet-mix" => "S3PET-M".into(),
        "s3pet-lora" => "S3PET-L".into(),
        "s3pet-mix-peft" => "S3PET-M (PEFT space)".into(),
        "random-mix" => "random-M".into(),
        "random-lora" => "random-L".into(),
        "transfer-mix" => "S3PET-M (transferred)".into(),
        m => m.into(),
    }
}

/// A group's row label: method, budget, "(1st order)".
pub fn row_label(k: &Key) -> String {
    let mut s = label(&k.method);
    if let Some(b) = k.budget {
        s += &format!(" @ {b:.3e}");
    }
    if k.order == Some(1) {
        s += " (1st order)";
    }
    s
}

/// The manual methods by name, in report order.
pub fn manual() -> Vec<&'static str> {
    crate::config::Method::MANUAL.iter().map(|m| m.name()).collect()
}
