//! A run's deltas as PEFT adapters: LoRA (with BitFit on the same Linear as PEFT's `lora_bias`; BitFit
//! on a Linear without LoRA as a rank-1 LoRA whose factors are zero, its bias in `lora_bias`) and
//! LN_TUNING (LNFit and BitFit at a LayerNorm folded into the norm's weight and bias).
use super::family::Kind;
use super::{head_key, site_key, LN_SUBDIR};
use crate::backbone::ModelConfig;
use crate::delta::{DeltaKind, ModuleSpec, SiteShape};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::structure::{site_shape, Structure};
use serde_json::{json, Map, Value};
use tch::{Device, Tensor};

/// One PEFT adapter: its adapter_config.json and adapter_model.safetensors tensors, and where it goes
/// (`None`: the export directory itself; `Some(sub)`: a subdirectory).
pub struct PeftAdapter {
    pub subdir: Option<&'static str>,
    pub config: Value,
    pub tensors: Vec<(String, Tensor)>,
}

pub struct Exported {
    pub adapters: Vec<PeftAdapter>,
}

/// The modules of a structure that PEFT has no counterpart for, with the reason for each.
#[derive(Debug)]
pub struct Unrepresentable {
    pub full: bool,
    pub modules: Vec<(String, DeltaKind, &'static str)>,
}

impl std::fmt::Display for Unrepresentable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.full {
            write!(f, "PEFT cannot represent full fine-tuning (every backbone tensor is trained)")?;
        } else {
            write!(f, "PEFT cannot represent {} module(s) of this run:", self.modules.len())?;
            for (i, (site, kind, why)) in self.modules.iter().enumerate() {
                let sep = if i == 0 { " " } else { "; " };
                write!(f, "{sep}{} at `{site}` ({why})", kind.name())?;
            }
        }
        write!(
            f,
            ". Export it losslessly with `--format native` (s3pet's own run files, for s3pet eval / predict), \
             or fold the linear deltas into a plain model with `s3pet merge`"
        )
    }
}

/// LoRA at one Linear, with the BitFit bias of the same Linear if the structure has one.
struct LoraTarget {
    spec: ModuleSpec,
    bitfit: bool,
    /// A BitFit-only Linear: rank 1, alpha 1 (scale 1), zero factors, the bias in `lora_B.bias`.
    /// Zero A and B add nothing and get no gradient, so under PEFT it stays a pure bias delta.
    bias_only: bool,
}

impl LoraTarget {
    fn lora(spec: &ModuleSpec, bitfit: bool) -> Self {
        LoraTarget { spec: spec.clone(), bitfit, bias_only: false }
    }

    fn bias_only(site: &str) -> Self {
        let spec = ModuleSpec { rank: Some(1), alpha: Some(1.0), ..ModuleSpec::new(site, DeltaKind::Lora) };
        LoraTarget { spec, bitfit: true, bias_only: true }
    }
}

/// What goes where: LoRA targets and the LayerNorm sites of the LN_TUNING adapter.
struct Plan {
    lora: Vec<LoraTarget>,
    norms: Vec<String>,
}

/// Sorts `modules` into PEFT adapters, or names those PEFT has no counterpart for.
fn plan(
    modules: &[ModuleSpec],
    full: bool,
    cfg: &ModelConfig,
) -> Result<std::result::Result<Plan, Unrepresentable>> {
    let rms = Kind::of(cfg).rms;
    let mut bad = Vec::new();
    let mut lora = Vec::new();
    let mut norms: Vec<String> = Vec::new();
    let has = |site: &str, kind: DeltaKind| modules.iter().any(|m| m.site == site && m.kind == kind);
    for m in modules {
        let is_norm = matches!(site_shape(cfg, &m.site)?, SiteShape::Norm { .. });
        match m.kind {
            DeltaKind::Lora => lora.push(LoraTarget::lora(m, has(&m.site, DeltaKind::Bitfit))),
            DeltaKind::Bitfit if is_norm && rms => bad.push((
                m.site.clone(),
                m.kind,
                "BitFit after an RMS norm: LN_TUNING tunes the norm's weight only",
            )),
            DeltaKind::Lnfit | DeltaKind::Bitfit if is_norm => {
                if !norms.contains(&m.site) {
                    norms.push(m.site.clone());
                }
            }
            DeltaKind::Lnfit => return Err(Error::site(&m.site, "LNFit at a site that is not a LayerNorm")),
            DeltaKind::Bitfit if has(&m.site, DeltaKind::Lora) => {}
            DeltaKind::Bitfit => lora.push(LoraTarget::bias_only(&m.site)),
            DeltaKind::Lra => bad.push((m.site.clone(), m.kind, "low-rank adapter: no PEFT counterpart")),
            DeltaKind::Adapter => bad.push((m.site.clone(), m.kind, "Houlsby adapter: no PEFT counterpart")),
        }
    }
    if full || !bad.is_empty() {
        return Ok(Err(Unrepresentable { full, modules: bad }));
    }
    Ok(Ok(Plan { lora, norms }))
}

/// The modules PEFT cannot hold among `modules` (a structure, or every candidate of a search space:
/// when none is reported, every structure of the space exports), `None` when all export.
pub fn unrepresentable<C: Clone + Into<ModelConfig>>(
    modules: &[ModuleSpec],
    full: bool,
    cfg: &C,
) -> Result<Option<Unrepresentable>> {
    Ok(plan(modules, full, &cfg.clone().into())?.err())
}

/// The most common value (the smallest among ties), for PEFT's `r` / `lora_alpha` defaults.
fn mode<T: Copy + PartialOrd>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(x, _)| *x == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal)));
    counts.first().map(|(v, _)| *v)
}

fn store_tensor(model: &Model, name: &str) -> Result<Tensor> {
    model
        .store
        .get(name)
        .map(|t| t.detach().to_device(Device::Cpu).contiguous())
        .ok_or_else(|| Error::Tensor { key: name.into(), msg: "missing from the run's weights".into() })
}

/// Tensors under their saved-adapter keys.
type Named = Vec<(String, Tensor)>;

/// The head's tensors under their saved-adapter keys (PEFT saves `modules_to_save` without its wrapper's
/// names), and the head's modules.
fn head(model: &Model) -> Result<(Named, Vec<&'static str>)> {
    // T5's and the decoders' LM heads are frozen: nothing to save
    let Some(head) = model.head() else { return Ok((Vec::new(), Vec::new())) };
    let tensors = head
        .tensors()
        .into_iter()
        .map(|(n, t)| (head_key(&n), t.detach().to_device(Device::Cpu).contiguous()));
    Ok((tensors.collect(), head.layout.modules()))
}

/// The backbone prefix of the model's task model in saved-adapter keys.
fn prefix(model: &Model) -> &'static str {
    model.cfg.family().prefix()
}

/// A target's saved tensors: lora_A, lora_B and, when the adapter has `lora_bias`, lora_B's bias
/// (BitFit's b divided by alpha / r, since PEFT scales lora_B's output, bias included; zero without BitFit).
fn lora_tensors(model: &Model, t: &LoraTarget, with_bias: bool) -> Result<Vec<(String, Tensor)>> {
    let site = &t.spec.site;
    let (a, b) = if t.bias_only {
        let SiteShape::Linear { d_in, d_out, .. } = site_shape(&model.cfg, site)? else {
            return Err(Error::site(site, "BitFit exported as LoRA bias at a site that is not a Linear"));
        };
        let zeros = |shape: [i64; 2]| Tensor::zeros(shape, (tch::Kind::Float, Device::Cpu));
        (zeros([1, d_in]), zeros([d_out, 1]))
    } else {
        (store_tensor(model, &format!("{site}.lora_A"))?, store_tensor(model, &format!("{site}.lora_B"))?)
    };
    let mut out = Vec::new();
    if with_bias {
        let scale = t.spec.alpha() / t.spec.rank() as f64;
        let bias = if t.bitfit {
            store_tensor(model, &format!("{site}.bitfit"))? / scale
        } else {
            Tensor::zeros([b.size()[0]], (tch::Kind::Float, Device::Cpu))
        };
        out.push((site_key(prefix(model), site, "lora_B.bias"), bias.contiguous()));
    }
    out.push((site_key(prefix(model), site, "lora_A.weight"), a));
    out.push((site_key(prefix(model), site, "lora_B.weight"), b));
    Ok(out)
}

fn lora_adapter(model: &Model, targets: &[LoraTarget], base: &str) -> Result<PeftAdapter> {
    let first = &targets.first().ok_or_else(|| Error::Msg("no LoRA module to export".into()))?.spec;
    let r = mode(targets.iter().map(|t| t.spec.rank())).unwrap_or(first.rank());
    let alpha = mode(targets.iter().map(|t| t.spec.alpha())).unwrap_or(first.alpha());
    // dropout is adapter-wide in PEFT; the zero factors of a BitFit-only target ignore it
    let dropout = mode(targets.iter().filter(|t| !t.bias_only).map(|t| t.spec.dropout())).unwrap_or(0.0);
    let with_bias = targets.iter().any(|t| t.bitfit);
    let (mut ranks, mut alphas) = (Map::new(), Map::new());
    let (mut tensors, to_save) = head(model)?;
    let task_type = Kind::of(&model.cfg).task_type;
    for t in targets {
        if t.spec.rank() != r {
            ranks.insert(t.spec.site.clone(), json!(t.spec.rank()));
        }
        if t.spec.alpha() != alpha {
            alphas.insert(t.spec.site.clone(), json!(t.spec.alpha()));
        }
        tensors.extend(lora_tensors(model, t, with_bias)?);
    }
    let config = json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base,
        "revision": null,
        "inference_mode": true,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": targets.iter().map(|t| t.spec.site.clone()).collect::<Vec<_>>(),
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "bias": "none",
        "lora_bias": with_bias,
        "modules_to_save": if to_save.is_empty() { Value::Null } else { json!(to_save) },
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
    });
    Ok(PeftAdapter { subdir: None, config, tensors })
}

/// The LN_TUNING tensors of a norm site: its weight (with LNFit folded in) and, for a LayerNorm, its
/// bias (with BitFit folded in); an RMS norm (T5, decoders) has no bias.
fn norm_tensors(model: &Model, site: &str) -> Result<(Tensor, Option<Tensor>)> {
    if let Some(encoder) = model.encoder() {
        let norms = encoder.norm_sites();
        let norm =
            norms.iter().find(|n| n.name == site).ok_or_else(|| Error::site(site, "not a LayerNorm"))?;
        let (w, b) = norm.folded().ok_or_else(|| Error::site(site, "holds a delta LN_TUNING cannot fold"))?;
        return Ok((w, Some(b)));
    }
    let norms = match (model.t5(), model.causal()) {
        (Some(t5), _) => t5.norm_sites(),
        (None, Some((llama, _))) => llama.norm_sites(),
        _ => Vec::new(),
    };
    let norm =
        norms.into_iter().find(|n| n.name == site).ok_or_else(|| Error::site(site, "not an RMS norm"))?;
    let mut w = norm.weight.detach().to_kind(tch::Kind::Float).copy();
    for d in &norm.deltas {
        match &d.module {
            crate::delta::DeltaModule::Lnfit(m) => w += m.w.detach(),
            _ => {
                return Err(Error::site(
                    site,
                    "holds a delta LN_TUNING cannot fold (BitFit after an RMS norm)",
                ))
            }
        }
    }
    Ok((w, None))
}

fn ln_adapter(
    model: &Model,
    sites: &[String],
    base: &str,
    subdir: Option<&'static str>,
) -> Result<PeftAdapter> {
    let (mut tensors, to_save) = head(model)?;
    for site in sites {
        let (w, b) = norm_tensors(model, site)?;
        let key = |leaf: &str| site_key(prefix(model), site, leaf);
        tensors.push((key("ln_tuning_layers.weight"), w.to_device(Device::Cpu).contiguous()));
        if let Some(b) = b {
            tensors.push((key("ln_tuning_layers.bias"), b.to_device(Device::Cpu).contiguous()));
        }
    }
    let config = json!({
        "peft_type": "LN_TUNING",
        "task_type": Kind::of(&model.cfg).task_type,
        "base_model_name_or_path": base,
        "revision": null,
        "inference_mode": true,
        "target_modules": sites,
        "exclude_modules": null,
        "modules_to_save": if to_save.is_empty() { Value::Null } else { json!(to_save) },
    });
    Ok(PeftAdapter { subdir, config, tensors })
}

/// The PEFT adapters of a run's model built from `structure` (gates at 1), or the modules PEFT
/// cannot represent. `base` is written as `base_model_name_or_path`.
pub fn export(
    model: &Model,
    structure: &Structure,
    base: &str,
) -> Result<std::result::Result<Exported, Unrepresentable>> {
    let plan = match plan(&structure.modules, structure.full, &model.cfg)? {
        Ok(p) => p,
        Err(u) => return Ok(Err(u)),
    };
    let mut adapters = Vec::new();
    if !plan.lora.is_empty() {
        adapters.push(lora_adapter(model, &plan.lora, base)?);
    }
    if !plan.norms.is_empty() {
        let subdir = if adapters.is_empty() { None } else { Some(LN_SUBDIR) };
        adapters.push(ln_adapter(model, &plan.norms, base, subdir)?);
    }
    if adapters.is_empty() {
        return Err(Error::Msg("the run has no delta modules to export".into()));
    }
    Ok(Ok(Exported { adapters }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_prefers_the_most_common_then_the_smallest() {
        assert_eq!(mode([8, 4, 8, 2].into_iter()), Some(8));
        assert_eq!(mode([4, 2].into_iter()), Some(2));
        assert_eq!(mode(std::iter::empty::<i64>()), None);
    }

    #[test]
    fn unrepresentable_names_every_module_and_the_native_format() {
        let u = Unrepresentable {
            full: false,
            modules: vec![
                (
                    "encoder.layer.0.output.dense".into(),
                    DeltaKind::Lra,
                    "low-rank adapter: no PEFT counterpart",
                ),
                ("encoder.layer.1.attention.self.key".into(), DeltaKind::Bitfit, "x"),
            ],
        };
        let s = u.to_string();
        assert!(s.contains("2 module(s)") && s.contains("lra at `encoder.layer.0.output.dense`"), "{s}");
        assert!(
            s.contains("bitfit at `encoder.layer.1.attention.self.key`") && s.contains("--format native")
        );
    }
}
