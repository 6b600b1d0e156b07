//! structure.json: the hand-off from search (or a manual method) to training.
use crate::backbone::Arch;
use crate::delta::{DeltaKind, ModuleSpec, SiteShape};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Structure {
    /// The budget the structure was made for (its own size for manual methods).
    pub budget_params: i64,
    /// Sum of the modules' parameters (never above `budget_params`).
    pub total_params: i64,
    /// Parameters of the backbone it was made on.
    #[serde(default)]
    pub backbone_params: i64,
    /// How it was made: a manual method name, "s3pet", "random".
    #[serde(default)]
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// Train every backbone tensor (full fine-tuning); `modules` is then empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    pub modules: Vec<ModuleSpec>,
}

impl Structure {
    /// A structure whose budget is its own size.
    pub fn manual(
        source: &str,
        modules: Vec<ModuleSpec>,
        cfg: &impl Arch,
        backbone_params: i64,
    ) -> Result<Self> {
        let modules = with_counts(&modules, cfg)?;
        let total: i64 = modules.iter().filter_map(|m| m.params).sum();
        Ok(Structure {
            budget_params: total,
            total_params: total,
            backbone_params,
            source: source.into(),
            space: None,
            full: source == "full",
            modules,
        })
    }

    pub fn load(path: &Path, cfg: &impl Arch) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let s: Structure =
            serde_json::from_str(&text).map_err(|e| Error::parse(path, e.line(), e.to_string()))?;
        s.validate(cfg).map_err(|e| Error::file(path, e.to_string()))?;
        Ok(s)
    }

    /// Every module names a real site it fits, no module repeats, and the total is within budget.
    pub fn validate(&self, cfg: &impl Arch) -> Result<()> {
        let mods = with_counts(&self.modules, cfg)?;
        let mut seen = std::collections::HashSet::new();
        for m in &self.modules {
            if !seen.insert((m.site.clone(), m.kind)) {
                return Err(Error::site(&m.site, format!("{} appears twice", m.kind.name())));
            }
        }
        let total: i64 = mods.iter().filter_map(|m| m.params).sum();
        if total != self.total_params {
            return Err(Error::config(
                "total_params",
                format!("says {} but the modules sum to {total}", self.total_params),
            ));
        }
        if total > self.budget_params {
            return Err(Error::Budget(format!(
                "the modules use {total} parameters, over budget_params {}",
                self.budget_params
            )));
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::artifact::write_json(path, self)
    }
}

/// Looks up the shape of `site` in the model of this config.
pub fn site_shape(cfg: &impl Arch, site: &str) -> Result<SiteShape> {
    cfg.sites()
        .into_iter()
        .find(|(s, _)| s == site)
        .map(|(_, sh)| sh)
        .ok_or_else(|| Error::site(site, "no such site in this model"))
}

/// The modules with checked parameter counts filled in.
pub fn with_counts(modules: &[ModuleSpec], cfg: &impl Arch) -> Result<Vec<ModuleSpec>> {
    modules
        .iter()
        .map(|m| {
            let shape = site_shape(cfg, &m.site)?;
            m.check(shape)?;
            Ok(m.with_params(shape))
        })
        .collect()
}

/// The query and value projections of each family (LoRA's manual baseline): BERT / RoBERTa `query`,
/// `value`; MPNet and T5 `q`, `v`; DeBERTa-v2 `query_proj`, `value_proj`; DistilBERT `q_lin`, `v_lin`.
const QUERY_VALUE: [&str; 10] =
    [".query", ".value", ".q", ".v", ".query_proj", ".value_proj", ".q_lin", ".v_lin", ".q_proj", ".v_proj"];

/// The manual baselines: `full`, `lora` (r8 on query and value; T5: q and v of every attention), `adapter` (Houlsby after attention and
/// FFN blocks, bottleneck 24), `bitfit` (every Linear and LayerNorm but the pooler), `lnfit` (every
/// LayerNorm), `lra` (every attention and FFN block).
pub fn method_modules(method: &str, cfg: &impl Arch) -> Result<Vec<ModuleSpec>> {
    let sites = cfg.sites();
    let pick = |f: &dyn Fn(&str, SiteShape) -> bool, kind: DeltaKind| -> Vec<ModuleSpec> {
        sites.iter().filter(|(s, sh)| f(s, *sh)).map(|(s, _)| ModuleSpec::new(s, kind)).collect()
    };
    let block = |_: &str, sh: SiteShape| matches!(sh, SiteShape::Linear { block: true, .. });
    let norm = |_: &str, sh: SiteShape| matches!(sh, SiteShape::Norm { .. });
    Ok(match method {
        "full" => vec![],
        "lora" => pick(&|s, _| QUERY_VALUE.iter().any(|e| s.ends_with(e)), DeltaKind::Lora),
        "adapter" => pick(&block, DeltaKind::Adapter),
        "bitfit" => pick(&|_, _| true, DeltaKind::Bitfit),
        "lnfit" => pick(&norm, DeltaKind::Lnfit),
        "lra" => pick(&block, DeltaKind::Lra),
        other => {
            return Err(Error::config(
                "method",
                format!(
                    "unknown method `{other}` (full, lora, adapter, bitfit, lnfit, lra, or --structure FILE)"
                ),
            ))
        }
    })
}
