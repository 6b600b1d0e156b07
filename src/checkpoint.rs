//! Training checkpoints for `--resume`: parameters, AdamW moments and step, loop position and the best
//! dev score so far, in ONE safetensors file written atomically (so its parts always agree). Dropout and
//! data order are functions of (seed, step), so nothing else is needed to continue bit-identically.
use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::params::ParamStore;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopState {
    /// Optimiser steps done.
    pub step: usize,
    pub best: f64,
    pub best_step: usize,
    /// Seconds of training (or search) up to this state, summed over the attempts of a resumed run.
    pub seconds: f64,
}

fn scalar_f64(v: f64) -> Tensor {
    Tensor::from_slice(&[v]).to_kind(Kind::Double)
}

/// Saves `store`'s values and every optimiser's moments under their names, the loop state and `extra`
/// tensors (e.g. the search's best alpha).
pub fn save(
    path: &Path,
    stores: &[(&str, &ParamStore, &AdamW)],
    st: &LoopState,
    extra: &[(&str, Tensor)],
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vec![
        ("meta.step".into(), scalar_f64(st.step as f64)),
        ("meta.best".into(), scalar_f64(st.best)),
        ("meta.best_step".into(), scalar_f64(st.best_step as f64)),
        ("meta.seconds".into(), scalar_f64(st.seconds)),
    ];
    for (tag, store, opt) in stores {
        let cpu = |x: &Tensor| x.detach().to_device(Device::Cpu);
        named.push((format!("{tag}.adam_step"), scalar_f64(opt.step as f64)));
        named.push((format!("{tag}.params"), cpu(store.flat())));
        named.push((format!("{tag}.m"), cpu(&opt.m)));
        named.push((format!("{tag}.v"), cpu(&opt.v)));
    }
    for (k, t) in extra {
        named.push((format!("extra.{k}"), t.detach().to_device(Device::Cpu)));
    }
    crate::artifact::write_safetensors(path, &named)
}

/// Restores what [`save`] wrote into the stores and optimisers; returns the loop state and the `extra`
/// tensors named.
pub fn load(
    path: &Path,
    stores: &mut [(&str, &ParamStore, &mut AdamW)],
    extra: &[&str],
) -> Result<(LoopState, Vec<Tensor>)> {
    let map: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| Error::safetensors(path, "read", &e))?
        .into_iter()
        .collect();
    let get = |k: &str| -> Result<&Tensor> {
        map.get(k)
            .ok_or_else(|| Error::Tensor { key: k.into(), msg: format!("missing from {}", path.display()) })
    };
    let num = |k: &str| -> Result<f64> { Ok(get(k)?.double_value(&[0])) };
    for (tag, store, opt) in stores.iter_mut() {
        opt.step = num(&format!("{tag}.adam_step"))? as i64;
        tch::no_grad(|| -> Result<()> {
            for (dst, k) in [(store.flat(), "params"), (&opt.m, "m"), (&opt.v, "v")] {
                let src = get(&format!("{tag}.{k}"))?;
                if src.size() != dst.size() {
                    return Err(Error::Tensor {
                        key: format!("{tag}.{k}"),
                        msg: format!(
                            "shape {:?} in {} but {:?} expected",
                            src.size(),
                            path.display(),
                            dst.size()
                        ),
                    });
                }
                dst.shallow_clone().copy_(&src.to_device(dst.device()));
            }
            Ok(())
        })?;
    }
    let st = LoopState {
        step: num("meta.step")? as usize,
        best: num("meta.best")?,
        best_step: num("meta.best_step")? as usize,
        // checkpoints of earlier versions did not count seconds
        seconds: if map.contains_key("meta.seconds") { num("meta.seconds")? } else { 0.0 },
    };
    let extra: Result<Vec<Tensor>> =
        extra.iter().map(|k| get(&format!("extra.{k}")).map(|t| t.shallow_clone())).collect();
    Ok((st, extra?))
}

/// Keeps only the lines of a JSONL log whose `step` is at most `step` and whose split is not `test`
/// (what a resumed run will write again).
pub fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["split"] != "test" && v["step"].as_u64().is_some_and(|s| s as usize <= step))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::artifact::write_bytes(path, kept.as_bytes())
}

/// The metrics under `key` of the last line of a JSONL log whose `step` is `step` and, when `split` is
/// given, whose `split` is that (the best-so-far of a resumed run).
pub fn logged_metrics(
    path: &Path,
    step: usize,
    key: &str,
    split: Option<&str>,
) -> std::collections::BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["step"].as_u64() == Some(step as u64) && split.is_none_or(|s| v["split"] == s))
        .filter_map(|v| serde_json::from_value(v[key].clone()).ok())
        .next_back()
        .unwrap_or_default()
}

/// After SIGINT: saves a checkpoint with `save` and returns the error that stops the loop at `step`.
pub fn stop_if_interrupted(
    what: &str,
    step: usize,
    path: &Path,
    save: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if !interrupted() {
        return Ok(());
    }
    save()?;
    Err(Error::Interrupted(format!(
        "{what} stopped at step {step}; continue with --resume (checkpoint {})",
        path.display()
    )))
}

/// Set by the SIGINT handler: loops save a checkpoint and stop at the next step boundary.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}
