//! Manual LoRA the way PEFT users write it: `r`, `lora_alpha`, `lora_dropout`, `target_modules` (names
//! or suffixes as PEFT matches them, or `re:<regex>` matched against the whole module path) and
//! `rank_pattern` (`name=r,...`).
use crate::backbone::Arch;
use crate::delta::{DeltaKind, ModuleSpec, SiteShape};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The LoRA knobs of a run (each unset one keeps the method's default: r 8, alpha 16, dropout 0, query
/// and value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraKnobs {
    pub r: Option<i64>,
    pub alpha: Option<f64>,
    pub dropout: Option<f64>,
    pub target_modules: Option<String>,
    pub rank_pattern: Option<String>,
}

/// Which modules a target list selects.
enum Targets {
    /// PEFT's list form: a module matches a name equal to its path or to a `.`-separated suffix of it.
    Names(Vec<String>),
    /// `re:<regex>`: the regex matches the whole module path.
    Regex(regex::Regex),
}

impl Targets {
    fn parse(text: &str) -> Result<Targets> {
        if let Some(re) = text.strip_prefix("re:") {
            let anchored = format!("^(?:{re})$");
            return regex::Regex::new(&anchored).map(Targets::Regex).map_err(|e| {
                Error::config("--target-modules", format!("`{re}` is not a regular expression: {e}"))
            });
        }
        let names: Vec<String> =
            text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if names.is_empty() {
            return Err(Error::config("--target-modules", "names no module"));
        }
        Ok(Targets::Names(names))
    }

    fn matches(&self, site: &str) -> bool {
        match self {
            Targets::Names(names) => names.iter().any(|n| suffix_match(n, site)),
            Targets::Regex(re) => re.is_match(site),
        }
    }
}

/// PEFT's name match: `site` is `name` or ends with `.name`.
fn suffix_match(name: &str, site: &str) -> bool {
    site == name || site.ends_with(&format!(".{name}"))
}

/// `name=r,...` as (name, rank) pairs.
fn rank_pattern(text: &str) -> Result<Vec<(String, i64)>> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| Error::config("--rank-pattern", format!("`{p}` is not name=r")))?;
            let r: i64 = v.trim().parse().ok().filter(|r| *r >= 1).ok_or_else(|| {
                Error::config(
                    "--rank-pattern",
                    format!("rank `{}` of `{}` must be a whole number of at least 1", v.trim(), k.trim()),
                )
            })?;
            Ok((k.trim().to_string(), r))
        })
        .collect()
}

impl LoraKnobs {
    pub fn is_default(&self) -> bool {
        *self == LoraKnobs::default()
    }

    /// The LoRA modules of a manual LoRA run on `cfg`: `default` (the method's query/value modules) unless
    /// `target_modules` names others; rank, alpha, dropout and the rank pattern applied.
    pub fn modules(&self, cfg: &impl Arch, default: Vec<ModuleSpec>) -> Result<Vec<ModuleSpec>> {
        let mut mods = match &self.target_modules {
            None => default,
            Some(t) => {
                let targets = Targets::parse(t)?;
                let linear = cfg.sites().into_iter().filter(|(_, sh)| matches!(sh, SiteShape::Linear { .. }));
                let picked: Vec<ModuleSpec> = linear
                    .filter(|(s, _)| targets.matches(s))
                    .map(|(s, _)| ModuleSpec::new(&s, DeltaKind::Lora))
                    .collect();
                if picked.is_empty() {
                    return Err(Error::config(
                        "--target-modules",
                        format!("`{t}` matches no Linear of this model"),
                    ));
                }
                picked
            }
        };
        let pattern = self.rank_pattern.as_deref().map(rank_pattern).transpose()?.unwrap_or_default();
        for (name, _) in &pattern {
            if !mods.iter().any(|m| suffix_match(name, &m.site)) {
                return Err(Error::config(
                    "--rank-pattern",
                    format!("`{name}` matches none of the LoRA target modules"),
                ));
            }
        }
        for m in &mut mods {
            let r = pattern.iter().find(|(n, _)| suffix_match(n, &m.site)).map(|(_, r)| *r).or(self.r);
            m.rank = r.or(m.rank);
            m.alpha = self.alpha.or(m.alpha);
            m.dropout = self.dropout.or(m.dropout);
        }
        Ok(mods)
    }

    /// A structure's LoRA modules with this run's dropout (the only knob a structure does not fix).
    pub fn apply_dropout(&self, modules: &mut [ModuleSpec]) {
        if let Some(d) = self.dropout {
            modules.iter_mut().filter(|m| m.kind == DeltaKind::Lora).for_each(|m| m.dropout = Some(d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_name_and_regex_matching() {
        let t = Targets::parse("query,value").unwrap();
        assert!(t.matches("encoder.layer.0.attention.self.query"));
        assert!(!t.matches("encoder.layer.0.attention.self.query_proj"));
        let t = Targets::parse(r"re:.*layer\.[01]\..*\.(query|key)").unwrap();
        assert!(t.matches("encoder.layer.1.attention.self.key"));
        assert!(!t.matches("encoder.layer.2.attention.self.key"));
        assert!(Targets::parse("re:(").is_err());
        assert_eq!(rank_pattern("query=4, value=2").unwrap(), vec![("query".into(), 4), ("value".into(), 2)]);
        assert!(rank_pattern("query=0").is_err() && rank_pattern("query").is_err());
    }
}
