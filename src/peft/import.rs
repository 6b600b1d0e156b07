//! A PEFT adapter directory (LoRA and/or LN_TUNING, saved by `save_pretrained` for an encoder family's
//! sequence-classification model) as s3pet modules and their parameter values.
//!
//! LoRA becomes LoRA with alpha chosen so that s3pet's alpha / r equals PEFT's scaling (rsLoRA
//! included), except a LoRA whose A and B are both zero (inert, and untrainable: s3pet's export of
//! BitFit on a Linear without LoRA), which is dropped; `lora_B.bias` (PEFT's `lora_bias`) and saved
//! Linear biases (`bias` = `lora_only` / `all`) become BitFit; an LN_TUNING norm becomes LNFit
//! (weight - base weight) and BitFit (bias - base bias), keeping only the parts that differ from the
//! base (both when neither does).
use super::{split_key, CONFIG_FILE, WEIGHTS_FILE};
use crate::backbone::{HeadLayout, ModelConfig, Weights};
use crate::delta::{DeltaKind, ModuleSpec, SiteShape};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// An adapter file's tensors by module path, then leaf: (saved key, tensor).
type Groups = BTreeMap<String, BTreeMap<String, (String, Tensor)>>;

/// The tensors of one module path of an adapter file, at its s3pet site.
struct ModuleGroup {
    path: String,
    site: String,
    shape: SiteShape,
    /// One of its tensor keys, to name in errors.
    any_key: String,
    /// Leaf name -> (full key, tensor).
    leaves: BTreeMap<String, (String, Tensor)>,
}

pub struct Imported {
    /// Modules in site order, then kind order.
    pub modules: Vec<ModuleSpec>,
    /// Values under s3pet's parameter names (`<site>.lora_A`, `<site>.bitfit`, the head's `classifier.weight`,
    /// ...).
    pub tensors: Vec<(String, Tensor)>,
    pub num_labels: i64,
    /// `base_model_name_or_path` of the first adapter.
    pub base_model: Option<String>,
    /// The adapter directories read.
    pub adapters: Vec<PathBuf>,
}

/// The adapter directories: `dir` itself and each subdirectory holding an adapter_config.json.
fn adapter_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.join(CONFIG_FILE).is_file() {
        return Err(Error::file(dir, format!("not a PEFT adapter directory (no {CONFIG_FILE})")));
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.join(CONFIG_FILE).is_file())
        .collect();
    subs.sort();
    Ok(std::iter::once(dir.to_path_buf()).chain(subs).collect())
}

/// PEFT's pattern lookup (`rank_pattern` / `alpha_pattern`): a key matches a module path equal to it
/// or ending in `.key`. Keys are read literally (a regex key is refused).
fn pattern<'a>(cfg: &'a Value, field: &str, path: &str, file: &Path) -> Result<Option<&'a Value>> {
    let Some(map) = cfg.get(field).and_then(Value::as_object) else { return Ok(None) };
    for (k, v) in map {
        if k.chars().any(|c| "*+?()[]{}|^$\\".contains(c)) {
            return Err(Error::file(
                file,
                format!("{field} key `{k}` is a regular expression; only module paths are supported"),
            ));
        }
        if path == k || path.ends_with(&format!(".{k}")) {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

fn num(cfg: &Value, field: &str, file: &Path) -> Result<f64> {
    cfg.get(field).and_then(Value::as_f64).ok_or_else(|| Error::file(file, format!("no number `{field}`")))
}

struct Reader<'a> {
    base: &'a Weights,
    /// The backbone's prefix in the task model (`bert.`, `mpnet.`, ...).
    prefix: &'static str,
    /// The task head of an encoder (T5's and the decoders' LM heads are frozen: none).
    head: Option<HeadLayout>,
    /// RMS norms (T5, decoders): LN_TUNING holds their weight only.
    rms: bool,
    sites: Vec<(String, SiteShape)>,
    modules: Vec<ModuleSpec>,
    tensors: Vec<(String, Tensor)>,
    /// Head tensors by name in the task model.
    head_tensors: BTreeMap<String, Tensor>,
}

impl Reader<'_> {
    /// The s3pet site of a module path inside the task model.
    fn site(&self, path: &str, key: &str) -> Result<(String, SiteShape)> {
        let site = path.strip_prefix(self.prefix).unwrap_or(path);
        self.sites.iter().find(|(s, _)| s == site).cloned().ok_or_else(|| Error::Tensor {
            key: key.into(),
            msg: format!("`{site}` is not a delta site of this model"),
        })
    }

    /// Whether a module path is (inside) one of the head's modules.
    fn is_head(&self, path: &str) -> bool {
        let modules = self.head.as_ref().map(|h| h.modules()).unwrap_or_default();
        modules.iter().any(|m| path == *m || path.starts_with(&format!("{m}.")))
    }

    /// The base checkpoint's `weight` or `bias` of a site (LayerNorm gamma / beta accepted).
    fn base(&self, site: &str, leaf: &str, d: i64) -> Result<Tensor> {
        let old = if leaf == "weight" { "gamma" } else { "beta" };
        let name = if self.base.contains(&format!("{site}.{old}")) { old } else { leaf };
        Ok(self.base.get(&format!("{site}.{name}"), &[d])?.to_device(Device::Cpu))
    }

    fn add(
        &mut self,
        site: &str,
        kind: DeltaKind,
        spec: ModuleSpec,
        values: Vec<(&str, Tensor)>,
    ) -> Result<()> {
        if self.modules.iter().any(|m| m.site == site && m.kind == kind) {
            return Err(Error::site(site, format!("two adapters both give it a {} module", kind.name())));
        }
        self.modules.push(spec);
        for (leaf, t) in values {
            self.tensors.push((format!("{site}.{leaf}"), t.to_kind(tch::Kind::Float).contiguous()));
        }
        Ok(())
    }

    /// A bias delta (BitFit) at `site` equal to `bias - base bias`, skipped when it is zero.
    fn bias_delta(&mut self, site: &str, shape: SiteShape, bias: &Tensor, key: &str) -> Result<()> {
        let d = shape.d_out();
        if bias.size() != [d] {
            return Err(Error::Tensor {
                key: key.into(),
                msg: format!("shape {:?}, expected [{d}]", bias.size()),
            });
        }
        let delta = bias.to_kind(tch::Kind::Float) - self.base(site, "bias", d)?;
        if nonzero(&delta) {
            self.add(
                site,
                DeltaKind::Bitfit,
                ModuleSpec::new(site, DeltaKind::Bitfit),
                vec![("bitfit", delta)],
            )?;
        }
        Ok(())
    }

    /// A head tensor (`modules_to_save`, saved with or without PEFT's wrapper name).
    fn set_head(&mut self, path: &str, leaf: &str, t: Tensor, key: &str) -> Result<()> {
        let name = format!("{path}.{}", leaf.replace("modules_to_save.", ""));
        let known = self.head.as_ref().is_some_and(|h| h.tensor_shapes(1).iter().any(|(n, _)| *n == name));
        if !known {
            return Err(Error::Tensor {
                key: key.into(),
                msg: format!("`{name}` is not a tensor of this model's head"),
            });
        }
        self.head_tensors.insert(name, t.to_kind(tch::Kind::Float));
        Ok(())
    }

    /// Sets the head from its groups; every other group becomes a [`ModuleGroup`] at its site.
    fn module_groups(&mut self, groups: Groups) -> Result<Vec<ModuleGroup>> {
        let mut out = Vec::new();
        for (path, leaves) in groups {
            if self.is_head(&path) {
                for (leaf, (key, t)) in leaves {
                    self.set_head(&path, &leaf, t, &key)?;
                }
                continue;
            }
            let any_key = leaves.values().next().map(|(k, _)| k.clone()).unwrap_or_default();
            let (site, shape) = self.site(&path, &any_key)?;
            out.push(ModuleGroup { path, site, shape, any_key, leaves });
        }
        Ok(out)
    }

    fn read_lora(&mut self, cfg: &Value, file: &Path, groups: Groups) -> Result<()> {
        for flag in ["use_dora", "fan_in_fan_out"] {
            if cfg.get(flag).and_then(Value::as_bool) == Some(true) {
                return Err(Error::file(file, format!("`{flag}: true` is not supported")));
            }
        }
        let rslora = cfg.get("use_rslora").and_then(Value::as_bool) == Some(true);
        let dropout = cfg.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
        for ModuleGroup { path, site, shape, any_key, leaves } in self.module_groups(groups)? {
            if let Some((key, a)) = leaves.get("lora_A.weight") {
                let (key_b, b) = leaves.get("lora_B.weight").ok_or_else(|| Error::Tensor {
                    key: key.clone(),
                    msg: "has no matching lora_B.weight".into(),
                })?;
                let SiteShape::Linear { d_in, d_out, .. } = shape else {
                    return Err(Error::Tensor {
                        key: key.clone(),
                        msg: format!("LoRA at `{site}`, which is not a Linear"),
                    });
                };
                let r = a.size()[0];
                if a.size() != [r, d_in] || b.size() != [d_out, r] {
                    return Err(Error::Tensor {
                        key: key.clone(),
                        msg: format!(
                            "shapes {:?} and {:?} ({key_b}), expected [r, {d_in}] and [{d_out}, r]",
                            a.size(),
                            b.size()
                        ),
                    });
                }
                let want_r = match pattern(cfg, "rank_pattern", &path, file)? {
                    Some(v) => v.as_f64().unwrap_or(-1.0),
                    None => num(cfg, "r", file)?,
                };
                if want_r != r as f64 {
                    return Err(Error::Tensor {
                        key: key.clone(),
                        msg: format!("rank {r}, but {} says {want_r}", file.display()),
                    });
                }
                let alpha = match pattern(cfg, "alpha_pattern", &path, file)? {
                    Some(v) => v.as_f64().ok_or_else(|| {
                        Error::file(file, format!("alpha_pattern of `{path}` is not a number"))
                    })?,
                    None => num(cfg, "lora_alpha", file)?,
                };
                let scale = if rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 };
                let spec = ModuleSpec {
                    rank: Some(r),
                    alpha: Some(scale * r as f64),
                    dropout: (dropout > 0.0).then_some(dropout),
                    ..ModuleSpec::new(&site, DeltaKind::Lora)
                };
                // zero A and B add nothing and get no gradient: no LoRA (s3pet's export of a BitFit-only
                // Linear), its lora_B.bias read as BitFit below
                if nonzero(a) || nonzero(b) {
                    self.add(
                        &site,
                        DeltaKind::Lora,
                        spec,
                        vec![("lora_A", a.shallow_clone()), ("lora_B", b.shallow_clone())],
                    )?;
                }
                // lora_bias is adapter-wide: a zero bias is a Linear without BitFit
                if let Some((_, bias)) = leaves.get("lora_B.bias").filter(|(_, t)| nonzero(t)) {
                    let b = bias.to_kind(tch::Kind::Float) * scale;
                    self.add(
                        &site,
                        DeltaKind::Bitfit,
                        ModuleSpec::new(&site, DeltaKind::Bitfit),
                        vec![("bitfit", b)],
                    )?;
                }
            }
            for (leaf, (key, t)) in &leaves {
                match leaf.as_str() {
                    "lora_A.weight" | "lora_B.weight" | "lora_B.bias" => {}
                    "bias" | "base_layer.bias" => self.bias_delta(&site, shape, t, key)?,
                    _ => {
                        return Err(Error::Tensor {
                            key: key.clone(),
                            msg: "not a LoRA tensor s3pet can import".into(),
                        })
                    }
                }
            }
            if !leaves.contains_key("lora_A.weight") && leaves.contains_key("lora_B.weight") {
                return Err(Error::Tensor {
                    key: any_key,
                    msg: "lora_B.weight without lora_A.weight".into(),
                });
            }
        }
        Ok(())
    }

    /// LN_TUNING at an RMS norm: its weight only, the difference to the base weight becoming LNFit.
    fn read_rms(&mut self, groups: Groups) -> Result<()> {
        for ModuleGroup { site, shape, any_key, leaves, .. } in self.module_groups(groups)? {
            let Some((kw, w)) = leaves.get("ln_tuning_layers.weight").filter(|_| leaves.len() == 1) else {
                return Err(Error::Tensor {
                    key: any_key,
                    msg: "expected ln_tuning_layers.weight alone (an RMS norm)".into(),
                });
            };
            let d = shape.d_out();
            if !matches!(shape, SiteShape::Norm { .. }) || w.size() != [d] {
                return Err(Error::Tensor {
                    key: kw.clone(),
                    msg: format!("`{site}` is not an RMS norm of width {d}"),
                });
            }
            let dw = w.to_kind(tch::Kind::Float) - self.base(&site, "weight", d)?;
            self.add(&site, DeltaKind::Lnfit, ModuleSpec::new(&site, DeltaKind::Lnfit), vec![("lnfit", dw)])?;
        }
        Ok(())
    }

    fn read_ln(&mut self, groups: Groups) -> Result<()> {
        if self.rms {
            return self.read_rms(groups);
        }
        for ModuleGroup { site, shape, any_key, leaves, .. } in self.module_groups(groups)? {
            let (Some((kw, w)), Some((kb, b))) =
                (leaves.get("ln_tuning_layers.weight"), leaves.get("ln_tuning_layers.bias"))
            else {
                return Err(Error::Tensor {
                    key: any_key,
                    msg: "expected ln_tuning_layers.weight and .bias".into(),
                });
            };
            if leaves.len() != 2 || !matches!(shape, SiteShape::Norm { .. }) {
                return Err(Error::Tensor {
                    key: kw.clone(),
                    msg: format!("`{site}` is not a LayerNorm with exactly weight and bias"),
                });
            }
            let d = shape.d_out();
            if w.size() != [d] || b.size() != [d] {
                return Err(Error::Tensor {
                    key: kb.clone(),
                    msg: format!("shapes {:?}, {:?}, expected [{d}]", w.size(), b.size()),
                });
            }
            let dw = w.to_kind(tch::Kind::Float) - self.base(&site, "weight", d)?;
            let db = b.to_kind(tch::Kind::Float) - self.base(&site, "bias", d)?;
            let (lnfit, bitfit) = match (nonzero(&dw), nonzero(&db)) {
                (false, false) => (true, true),
                flags => flags,
            };
            if lnfit {
                self.add(
                    &site,
                    DeltaKind::Lnfit,
                    ModuleSpec::new(&site, DeltaKind::Lnfit),
                    vec![("lnfit", dw)],
                )?;
            }
            if bitfit {
                self.add(
                    &site,
                    DeltaKind::Bitfit,
                    ModuleSpec::new(&site, DeltaKind::Bitfit),
                    vec![("bitfit", db)],
                )?;
            }
        }
        Ok(())
    }
}

fn nonzero(t: &Tensor) -> bool {
    t.numel() > 0 && t.abs().max().double_value(&[]) > 0.0
}

/// Tensors of an adapter file grouped by module path, then leaf.
fn read_groups(file: &Path) -> Result<Groups> {
    let list = Tensor::read_safetensors(file).map_err(|e| Error::safetensors(file, "read", &e))?;
    let mut groups = Groups::new();
    for (key, t) in list {
        let (path, leaf) = split_key(&key).ok_or_else(|| Error::Tensor {
            key: key.clone(),
            msg: format!("in {}: not a PEFT key (expected base_model.model.<module>...)", file.display()),
        })?;
        let (path, leaf) = (path.to_string(), leaf.to_string());
        groups.entry(path).or_default().insert(leaf, (key, t.to_device(Device::Cpu)));
    }
    Ok(groups)
}

/// Reads a PEFT adapter directory (and its sub-adapters) against the base model `base` / `cfg`.
pub fn import<C: Clone + Into<ModelConfig>>(dir: &Path, base: &Weights, cfg: &C) -> Result<Imported> {
    let cfg: ModelConfig = cfg.clone().into();
    let head = HeadLayout::of(&cfg);
    let rms = matches!(cfg, ModelConfig::T5(_) | ModelConfig::Llama(_));
    let dirs = adapter_dirs(dir)?;
    let (prefix, sites) = (cfg.family().prefix(), cfg.sites());
    let (modules, tensors, found) = (vec![], vec![], BTreeMap::new());
    let mut r = Reader { base, prefix, head, rms, sites, modules, tensors, head_tensors: found };
    let mut base_model = None;
    for d in &dirs {
        let file = d.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let ac: Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(&file, e.line(), e.to_string()))?;
        let weights = d.join(WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(Error::file(&weights, "missing (only safetensors adapters are read)"));
        }
        let groups = read_groups(&weights)?;
        match ac.get("peft_type").and_then(Value::as_str) {
            Some("LORA") => r.read_lora(&ac, &file, groups)?,
            Some("LN_TUNING") => r.read_ln(groups)?,
            other => {
                return Err(Error::file(
                    &file,
                    format!("peft_type {other:?} is not supported (LORA, LN_TUNING)"),
                ))
            }
        }
        if base_model.is_none() {
            base_model = ac.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string);
        }
    }
    let num_labels = head_tensors(&mut r, dir)?;
    let order = |m: &ModuleSpec| (r.sites.iter().position(|(s, _)| *s == m.site), m.kind);
    let mut modules = r.modules;
    modules.sort_by_key(order);
    if modules.is_empty() {
        return Err(Error::file(dir, "the adapter holds no LoRA or LN_TUNING tensors"));
    }
    Ok(Imported { modules, tensors: r.tensors, num_labels, base_model, adapters: dirs })
}

/// Moves the head's tensors (every one, each of its shape) to the imported tensors; the number of labels.
fn head_tensors(r: &mut Reader, dir: &Path) -> Result<i64> {
    let Some(head) = r.head.clone() else {
        if !r.head_tensors.is_empty() {
            return Err(Error::file(dir, "a classifier in an adapter of a model whose head is its LM head"));
        }
        return Ok(0);
    };
    let out = format!("{}.weight", head.out);
    let missing = || {
        Error::file(dir, format!("no `{out}` in the adapter (modules_to_save); s3pet needs the task head"))
    };
    let w = r.head_tensors.get(&out).ok_or_else(missing)?;
    let num_labels = if w.dim() == 2 { w.size()[0] } else { 0 };
    for (name, shape) in head.tensor_shapes(num_labels) {
        match r.head_tensors.remove(&name) {
            Some(t) if t.size() == shape => r.tensors.push((name, t)),
            other => {
                let got = other.map(|t| format!("shape {:?}", t.size())).unwrap_or("missing".into());
                return Err(Error::file(dir, format!("head tensor `{name}`: {got}, expected {shape:?}")));
            }
        }
    }
    Ok(num_labels)
}
