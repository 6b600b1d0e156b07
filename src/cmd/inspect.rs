//! `s3pet inspect`: sites, modules, parameter counts, trainable / total.
use crate::cli::InspectArgs;
use anyhow::Result;
use s3pet::backbone::ModelConfig;
use s3pet::space::{budget_params, Space};
use s3pet::structure::{method_modules, Structure};
use serde_json::json;

pub fn run(a: InspectArgs) -> Result<()> {
    let path = match &a.model_config {
        Some(p) => p.clone(),
        None => s3pet::hub::resolve(&a.model)?.join("config.json"),
    };
    let cfg = ModelConfig::from_file(&path)?;
    let backbone = cfg.param_count();
    if let Some(space) = &a.space {
        return inspect_space(&a, space, &cfg, backbone);
    }
    let structure = match &a.structure {
        Some(p) => Structure::load(p, &cfg)?,
        None => Structure::manual(&a.method, method_modules(&a.method, &cfg)?, &cfg, backbone)?,
    };
    let delta = if structure.full { backbone } else { structure.total_params };
    if a.json {
        let out = json!({
            "backbone_params": backbone,
            "delta_params": delta,
            "modules": structure.modules.len(),
            "fraction": delta as f64 / backbone as f64,
            "structure": structure,
        });
        println!("{out}");
        return Ok(());
    }
    println!("backbone: {} ({})", backbone, cfg.describe());
    for m in &structure.modules {
        println!("{:<48} {:<8} {:>8}", m.site, m.kind.name(), m.params.unwrap_or(0));
    }
    println!(
        "{} modules, {} delta parameters = {:.4}% of the backbone (the task head is counted apart)",
        structure.modules.len(),
        delta,
        100.0 * delta as f64 / backbone as f64
    );
    Ok(())
}

fn inspect_space(a: &InspectArgs, space: &str, cfg: &ModelConfig, backbone: i64) -> Result<()> {
    let cands = Space::resolve(space)?.candidates(cfg)?;
    let total: i64 = cands.iter().filter_map(|c| c.params).sum();
    let budget = if a.budget.is_some() || a.budget_params.is_some() {
        Some(budget_params(a.budget, a.budget_params, backbone, &cands)?)
    } else {
        None
    };
    if a.json {
        let mut out = json!({"space": space, "backbone_params": backbone, "candidates": cands.len(),
                             "candidate_params": total, "modules": cands});
        if let Some(b) = budget {
            out["budget_params"] = json!(b);
        }
        println!("{out}");
        return Ok(());
    }
    for (i, c) in cands.iter().enumerate() {
        println!("{i:>4} {:<48} {:<8} {:>8}", c.site, c.kind.name(), c.params.unwrap_or(0));
    }
    println!("space {space}: {} candidates, {total} parameters; backbone {backbone}", cands.len());
    if let Some(b) = budget {
        println!(
            "budget: {b} parameters ({:.6}% of the backbone, {:.2}% of the space)",
            100.0 * b as f64 / backbone as f64,
            100.0 * b as f64 / total as f64
        );
    }
    Ok(())
}
