//! Search spaces as data: rules of site patterns x delta types x hyper-parameters, in TOML.
//! Builtin: `mix` (S3PET-M), `mix-peft` (S3PET-M without the modules PEFT cannot hold) and `lora`
//! (S3PET-L); any other value is read as a TOML file.
use crate::backbone::Arch;
use crate::delta::{DeltaKind, ModuleSpec};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Space {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Site patterns; `*` matches any run of characters.
    pub sites: Vec<String>,
    pub modules: Vec<ModuleTemplate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleTemplate {
    #[serde(rename = "type")]
    pub kind: DeltaKind,
    pub rank: Option<i64>,
    pub alpha: Option<f64>,
    pub dropout: Option<f64>,
    pub bottleneck: Option<i64>,
}

/// `*`-glob match of a whole site name.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The builtin space names, for `--space` and its error message.
pub const BUILTIN: [&str; 3] = ["mix", "mix-peft", "lora"];

impl Space {
    pub fn builtin(name: &str) -> Option<Space> {
        let text = match name {
            "mix" => include_str!("spaces/mix.toml"),
            "mix-peft" => include_str!("spaces/mix-peft.toml"),
            "lora" => include_str!("spaces/lora.toml"),
            _ => return None,
        };
        toml::from_str(text).ok()
    }

    /// A builtin name or a TOML file.
    pub fn resolve(name_or_path: &str) -> Result<Space> {
        if let Some(s) = Space::builtin(name_or_path) {
            return Ok(s);
        }
        let path = Path::new(name_or_path);
        if !path.is_file() {
            return Err(Error::config(
                "space",
                format!(
                    "`{name_or_path}` is neither a builtin space ({}) nor a TOML file",
                    BUILTIN.join(", ")
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1).unwrap_or(0);
            Error::parse(path, line, e.message().to_string())
        })
    }

    /// Every candidate in model order (site order, then type order), each with its parameter count;
    /// a (site, type) pair matched by several rules counts once.
    pub fn candidates(&self, cfg: &impl Arch) -> Result<Vec<ModuleSpec>> {
        let mut out: Vec<ModuleSpec> = Vec::new();
        for (site, shape) in cfg.sites() {
            let mut here: Vec<ModuleSpec> = Vec::new();
            for rule in self.rules.iter().filter(|r| r.sites.iter().any(|p| glob_match(p, &site))) {
                for t in &rule.modules {
                    if here.iter().any(|m| m.kind == t.kind) {
                        continue;
                    }
                    let spec = ModuleSpec {
                        site: site.clone(),
                        kind: t.kind,
                        rank: t.rank,
                        alpha: t.alpha,
                        dropout: t.dropout,
                        bottleneck: t.bottleneck,
                        params: None,
                    };
                    spec.check(shape)?;
                    here.push(spec.with_params(shape));
                }
            }
            here.sort_by_key(|m| kind_order(m.kind));
            out.extend(here);
        }
        if out.is_empty() {
            return Err(Error::config(
                "space",
                format!("space `{}` matches no site of this model", self.name),
            ));
        }
        Ok(out)
    }
}

fn kind_order(k: DeltaKind) -> u8 {
    match k {
        DeltaKind::Lora => 0,
        DeltaKind::Lnfit => 1,
        DeltaKind::Bitfit => 2,
        DeltaKind::Lra => 3,
        DeltaKind::Adapter => 4,
    }
}

/// The budget in parameters: a fraction of all backbone parameters (rounded down) or an absolute count;
/// an error unless it is at least the smallest candidate and below the whole space.
pub fn budget_params(
    fraction: Option<f64>,
    absolute: Option<i64>,
    backbone: i64,
    candidates: &[ModuleSpec],
) -> Result<i64> {
    let b = match (fraction, absolute) {
        (_, Some(n)) => n,
        (Some(f), None) if f > 0.0 && f.is_finite() => (f * backbone as f64).floor() as i64,
        (Some(f), None) => return Err(Error::Budget(format!("fraction {f} must be a positive number"))),
        (None, None) => return Err(Error::Budget("give --budget FRACTION or --budget-params N".into())),
    };
    let what = match (fraction, absolute) {
        (Some(f), None) => format!("--budget {f}: {b} parameters ({f} of the backbone's {backbone})"),
        _ => format!("--budget-params {b}: {b} parameters"),
    };
    let smallest = candidates.iter().filter(|m| m.params.is_some()).min_by_key(|m| m.params);
    let total: i64 = candidates.iter().filter_map(|m| m.params).sum();
    if let Some(m) = smallest.filter(|m| b < m.params.unwrap_or(0)) {
        return Err(Error::Budget(format!(
            "{what} is below the smallest candidate ({}, {} at site `{}`)",
            m.params.unwrap_or(0),
            m.kind.name(),
            m.site
        )));
    }
    if b >= total {
        return Err(Error::Budget(format!(
            "{what} is at least the whole space ({total} parameters in {} candidates): nothing to search",
            candidates.len()
        )));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_space_parses_under_its_name() {
        for name in BUILTIN {
            let space =
                Space::builtin(name).unwrap_or_else(|| panic!("builtin space `{name}` does not parse"));
            assert_eq!(space.name, name);
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match("*.output.dense", "encoder.layer.0.attention.output.dense"));
        assert!(glob_match("*LayerNorm", "embeddings.LayerNorm"));
        assert!(!glob_match("*.self.query", "encoder.layer.0.attention.self.key"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
    }
}
