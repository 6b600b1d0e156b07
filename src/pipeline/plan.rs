//! An experiment plan (plans/*.toml): seeds x [[grid]] of tasks x methods x budgets (x orders, x transfer
//! sources), expanded into cells, each one `s3pet train | run | retrain` command line.
use crate::backbone::ModelConfig;
use crate::config::layers::SEARCH_ONLY;
use crate::config::Method;
use crate::delta::ModuleSpec;
use crate::error::{Error, Result};
use crate::results::slug;
use crate::space::{budget_params, Space};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub seeds: Vec<u64>,
    /// Cells run at once (child processes).
    #[serde(default = "one")]
    pub parallel: usize,
    /// Options (long names of the subcommands) given to every cell.
    #[serde(default)]
    pub options: toml::Table,
    /// Options per task (e.g. its schedule and batch size).
    #[serde(default)]
    pub task_options: BTreeMap<String, toml::Table>,
    /// Options per method (e.g. the learning rate of full fine-tuning).
    #[serde(default)]
    pub method_options: BTreeMap<String, toml::Table>,
    pub grid: Vec<Grid>,
    /// Choose each method's learning rate per task on the dev split of one seed (S3PET.md protocol,
    /// issue 21): every seed then runs at the chosen rate.
    #[serde(default)]
    pub lr_sweep: Option<super::sweep::LrSweep>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub tasks: Vec<String>,
    /// Manual methods (full, lora, adapter, bitfit, lnfit, lra), `s3pet-<space>`, `random-<space>`
    /// or `transfer-<space>` (the structure searched on each of `sources`, retrained on the task).
    pub methods: Vec<String>,
    /// Budgets (fractions of the backbone) of the searched, random and transfer methods.
    #[serde(default)]
    pub budgets: Vec<f64>,
    /// Search orders of the s3pet methods (default [2]).
    #[serde(default)]
    pub orders: Vec<u8>,
    /// Source tasks of the transfer methods.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Seeds of this grid's cells (default: the plan's).
    #[serde(default)]
    pub seeds: Vec<u64>,
}

/// One cell of the plan: what it is, and the command that makes it.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub id: String,
    pub task: String,
    pub method: String,
    pub budget: Option<f64>,
    pub seed: u64,
    pub order: Option<u8>,
    pub source_task: Option<String>,
    /// The s3pet cell whose structure this one retrains (transfer).
    pub needs: Option<String>,
    /// Why the cell is not run (budget outside the space), if so.
    pub skip: Option<String>,
    /// Arguments after `s3pet` (the `--out` is added when it runs).
    pub args: Vec<String>,
    /// Its place in a learning-rate sweep (none unless the plan has `[lr_sweep]`).
    pub lr: super::sweep::LrChoice,
}

pub fn fmt_budget(b: f64) -> String {
    format!("{b:e}")
}

fn cell_id(
    task: &str,
    method: &str,
    budget: Option<f64>,
    order: Option<u8>,
    seed: u64,
    src: Option<&str>,
) -> String {
    let mut id = format!("{}.{method}", slug(task));
    if let Some(b) = budget {
        id += &format!(".b{}", fmt_budget(b));
    }
    if let Some(o) = order {
        id += &format!(".o{o}");
    }
    if let Some(s) = src {
        id += &format!(".from-{}", slug(s));
    }
    id + &format!(".s{seed}")
}

/// `--key value` pairs of a TOML table (booleans as flags), skipping `skip`.
fn push_options(args: &mut Vec<String>, t: &toml::Table, skip: fn(&str) -> bool) -> Result<()> {
    for (k, v) in t {
        let long = k.replace('_', "-");
        if skip(&k.replace('-', "_")) {
            continue;
        }
        match v {
            toml::Value::Boolean(true) => args.push(format!("--{long}")),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => args.extend([format!("--{long}"), s.clone()]),
            toml::Value::Integer(i) => args.extend([format!("--{long}"), i.to_string()]),
            toml::Value::Float(f) => args.extend([format!("--{long}"), format!("{f:e}")]),
            other => {
                return Err(Error::config(
                    k,
                    format!("must be a string, number or boolean, not {}", other.type_str()),
                ))
            }
        }
    }
    Ok(())
}

/// Options that only `run` knows, the search's among them (left out of train / retrain cells).
fn run_only(key: &str) -> bool {
    key == "retrain_epochs" || search_only(key)
}

/// Options of the search (left out of random cells: their structure is drawn, not searched).
fn search_only(key: &str) -> bool {
    SEARCH_ONLY.contains(&key)
}

/// What a cell of a searched or random method is: its kind, space, budget and order.
struct Searched<'a> {
    kind: &'a str,
    space: &'a str,
    budget: f64,
    order: Option<u8>,
    skip: Option<String>,
}

impl Plan {
    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let plan: Plan = toml::from_str(&text).map_err(|e| Error::file(path, e.to_string()))?;
        if plan.seeds.is_empty() || plan.grid.is_empty() {
            return Err(Error::file(path, "a plan needs `seeds` and at least one [[grid]]"));
        }
        Ok(plan)
    }

    pub fn model_dir(&self) -> PathBuf {
        match self.options.get("model").and_then(|v| v.as_str()) {
            Some(m) => PathBuf::from(m),
            None => std::env::var_os("S3PET_MODEL")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("models/all-MiniLM-L6-v2")),
        }
    }

    /// The device the plan's cells run on.
    pub fn device(&self) -> String {
        self.options.get("device").and_then(|v| v.as_str()).unwrap_or("auto").to_string()
    }

    /// Every cell, sources of transfers included (once each), in plan order.
    pub fn cells(&self, cells_dir: &Path) -> Result<Vec<Cell>> {
        let cfg = ModelConfig::from_file(&crate::hub::resolve(&self.model_dir())?.join("config.json"))?;
        let mut out: Vec<Cell> = Vec::new();
        let mut seen = HashSet::new();
        let mut spaces: HashMap<String, Vec<ModuleSpec>> = HashMap::new();
        for g in &self.grid {
            let triples = g.tasks.iter().flat_map(|t| g.methods.iter().map(move |m| (t, m)));
            for (task, method) in triples {
                for &seed in if g.seeds.is_empty() { &self.seeds } else { &g.seeds } {
                    let cells = self.expand(g, task, method, seed, &cfg, &mut spaces, cells_dir)?;
                    out.extend(cells.into_iter().filter(|c| seen.insert(c.id.clone())));
                }
            }
        }
        let out = match &self.lr_sweep {
            Some(sw) => sw.apply(out)?,
            None => out,
        };
        check_dependencies(&out)?;
        Ok(out)
    }

    /// `s3pet <sub> --task T --seed S` with the plan's options, then the task's, then the method's, less
    /// those in `skip` (options the cell's command does not use: shared plan options apply where they can).
    fn base_args(
        &self,
        sub: &str,
        task: &str,
        method: &str,
        seed: u64,
        skip: fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let mut a = vec![
            "-q".to_string(),
            sub.to_string(),
            "--task".into(),
            task.into(),
            "--seed".into(),
            seed.to_string(),
        ];
        let mut merged = self.options.clone();
        for t in [self.task_options.get(task), self.method_options.get(method)].into_iter().flatten() {
            merged.extend(t.clone());
        }
        push_options(&mut a, &merged, skip)?;
        Ok(a)
    }

    #[allow(clippy::too_many_arguments)]
    fn expand(
        &self,
        g: &Grid,
        task: &str,
        method: &str,
        seed: u64,
        cfg: &ModelConfig,
        spaces: &mut HashMap<String, Vec<ModuleSpec>>,
        cells_dir: &Path,
    ) -> Result<Vec<Cell>> {
        if let Ok(m) = Method::parse_manual(method) {
            let mut args = self.base_args("train", task, method, seed, run_only)?;
            args.extend(["--method".into(), m.name().into()]);
            let id = cell_id(task, method, None, None, seed, None);
            let cell = Cell {
                id,
                task: task.into(),
                method: method.into(),
                budget: None,
                seed,
                order: None,
                source_task: None,
                needs: None,
                skip: None,
                args,
                lr: Default::default(),
            };
            return Ok(vec![cell]);
        }
        let (kind, space) = method
            .split_once('-')
            .filter(|(k, _)| ["s3pet", "random", "transfer"].contains(k))
            .ok_or_else(|| Error::config("methods", format!("unknown method `{method}` (full, lora, adapter, bitfit, lnfit, lra, s3pet-<space>, random-<space>, transfer-<space>)")))?;
        if g.budgets.is_empty() {
            return Err(Error::config(
                "budgets",
                format!("method `{method}` needs `budgets` in its [[grid]]"),
            ));
        }
        if !spaces.contains_key(space) {
            spaces.insert(space.to_string(), Space::resolve(space)?.candidates(cfg)?);
        }
        let orders: Vec<Option<u8>> = match kind {
            "random" => vec![None],
            _ if g.orders.is_empty() => vec![Some(2)],
            _ => g.orders.iter().map(|&o| Some(o)).collect(),
        };
        let mut out = Vec::new();
        for &budget in &g.budgets {
            let skip = budget_params(Some(budget), None, cfg.param_count(), &spaces[space])
                .err()
                .map(|e| e.to_string());
            for &order in &orders {
                let s = Searched { kind, space, budget, order, skip: skip.clone() };
                if kind == "transfer" {
                    out.extend(self.transfer_cells(g, task, seed, &s, cfg, spaces, cells_dir)?);
                } else {
                    out.push(self.search_cell(task, seed, &s)?);
                }
            }
        }
        Ok(out)
    }

    /// A searched (`s3pet-<space>`) or random cell: `s3pet run`.
    fn search_cell(&self, task: &str, seed: u64, s: &Searched) -> Result<Cell> {
        let strategy = if s.kind == "random" { "random" } else { "s3pet" };
        let m = format!("{strategy}-{}", s.space);
        let skip: fn(&str) -> bool = if s.kind == "random" { search_only } else { |_| false };
        let mut args = self.base_args("run", task, &m, seed, skip)?;
        args.extend(["--strategy".into(), strategy.into(), "--space".into(), s.space.into()]);
        args.extend(["--budget".into(), fmt_budget(s.budget)]);
        if let Some(o) = s.order {
            args.extend(["--order".into(), o.to_string()]);
        }
        Ok(Cell {
            id: cell_id(task, &m, Some(s.budget), s.order, seed, None),
            task: task.into(),
            method: m,
            budget: Some(s.budget),
            seed,
            order: s.order,
            source_task: None,
            needs: None,
            skip: s.skip.clone(),
            args,
            lr: Default::default(),
        })
    }

    /// Transfer cells: for each source, its search cell (with the source task's own options) and the
    /// retrain of its structure on `task`.
    #[allow(clippy::too_many_arguments)]
    fn transfer_cells(
        &self,
        g: &Grid,
        task: &str,
        seed: u64,
        s: &Searched,
        cfg: &ModelConfig,
        spaces: &mut HashMap<String, Vec<ModuleSpec>>,
        cells_dir: &Path,
    ) -> Result<Vec<Cell>> {
        if g.sources.is_empty() {
            return Err(Error::config(
                "sources",
                format!("method `transfer-{}` needs `sources` in its [[grid]]", s.space),
            ));
        }
        let mut out = Vec::new();
        let searched = format!("s3pet-{}", s.space);
        for src in g.sources.iter().filter(|x| x.as_str() != task) {
            let grid = Grid {
                tasks: vec![src.clone()],
                methods: vec![searched.clone()],
                budgets: vec![s.budget],
                orders: s.order.into_iter().collect(),
                sources: vec![],
                seeds: vec![],
            };
            let source = self.expand(&grid, src, &searched, seed, cfg, spaces, cells_dir)?.remove(0);
            let method = format!("transfer-{}", s.space);
            let mut args = self.base_args("retrain", task, &method, seed, run_only)?;
            args.extend([
                "--structure".into(),
                cells_dir.join(&source.id).join("structure.json").display().to_string(),
            ]);
            out.push(Cell {
                id: cell_id(task, &method, Some(s.budget), s.order, seed, Some(src)),
                task: task.into(),
                method,
                budget: Some(s.budget),
                seed,
                order: s.order,
                source_task: Some(src.clone()),
                needs: Some(source.id.clone()),
                skip: s.skip.clone(),
                args,
                lr: Default::default(),
            });
            out.push(source);
        }
        Ok(out)
    }
}

/// Every cell a cell waits for (a transfer's source search, the sweep cells its rate comes from) is a cell
/// of the plan: otherwise the runner could never start it.
fn check_dependencies(cells: &[Cell]) -> Result<()> {
    let ids: HashSet<&str> = cells.iter().map(|c| c.id.as_str()).collect();
    for c in cells {
        if let Some(n) = c.needs.as_deref().filter(|n| !ids.contains(n)) {
            return Err(Error::config(
                "sources",
                format!("cell {} retrains the structure of {n}, which the plan does not run", c.id),
            ));
        }
        if let Some(n) = c.lr.from.iter().find(|n| !ids.contains(n.as_str())) {
            let space = c.method.strip_prefix("transfer-").unwrap_or(&c.method);
            return Err(Error::config(
                "lr_sweep",
                format!(
                    "cell {} takes its learning rate from the sweep cell {n}, which the plan does not run: add \
                     s3pet-{space} on task {} at the same budget and order, or name {} in [lr_sweep] methods \
                     to sweep it on its own",
                    c.id, c.task, c.method
                ),
            ));
        }
    }
    Ok(())
}
