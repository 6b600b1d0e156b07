//! A checkpoint's tensors by name: read from safetensors, shape-checked on access.
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub struct Weights {
    path: PathBuf,
    device: Device,
    /// In a cell: a frozen matrix converted to `frozen_kind` replaces its fp32 original (see
    /// [`Weights::get_frozen`]), so that the fp32 copy does not stay in memory beside it.
    tensors: RefCell<HashMap<String, Tensor>>,
    /// Dtype of the frozen matrices (embeddings, linear weights and biases) a model built from these
    /// weights computes with: fp32, or bf16 to halve their memory and run the frozen matmuls on bf16
    /// tensor cores. Norms, deltas, the head and full fine-tuning stay fp32.
    frozen_kind: Kind,
    /// Dtype of the activations of a model built from these weights (bf16 with `--precision bf16`).
    act_kind: Kind,
}

impl Weights {
    /// Reads every tensor of a safetensors file to `device` as fp32. Names are normalised by dropping a
    /// leading `bert.` (BertForSequenceClassification) so that sites are BertModel module paths.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        Self::load_prefixed(path, device, "bert.")
    }

    /// [`Weights::load`] dropping the leading `prefix` of a task model's backbone (`mpnet.`, `roberta.`,
    /// `deberta.`, `distilbert.`; empty: names as stored), so that sites are the bare model's module paths
    /// whether the checkpoint is a bare model or a task model; head tensors (outside the prefix) keep their
    /// names.
    pub fn load_prefixed(path: &Path, device: Device, prefix: &str) -> Result<Self> {
        if !path.exists() {
            return Err(Error::file(path, "model weights not found"));
        }
        let list = Tensor::read_safetensors(path).map_err(|e| Error::safetensors(path, "read", &e))?;
        let tensors = list
            .into_iter()
            .map(|(name, t)| {
                let stripped = if prefix.is_empty() { None } else { name.strip_prefix(prefix) };
                let name = stripped.map(str::to_string).unwrap_or(name);
                let t = if t.is_floating_point() { t.to_kind(Kind::Float) } else { t };
                (name, t.to_device(device))
            })
            .collect();
        Ok(Weights {
            path: path.to_path_buf(),
            device,
            tensors: RefCell::new(tensors),
            frozen_kind: Kind::Float,
            act_kind: Kind::Float,
        })
    }

    /// Weights from named tensors (e.g. a model with deltas folded in); `label` names them in errors.
    pub fn from_tensors(label: &Path, tensors: Vec<(String, Tensor)>, device: Device) -> Self {
        let tensors = tensors.into_iter().map(|(k, t)| (k, t.to_device(device))).collect();
        Weights {
            path: label.to_path_buf(),
            device,
            tensors: RefCell::new(tensors),
            frozen_kind: Kind::Float,
            act_kind: Kind::Float,
        }
    }

    /// Keep frozen matrices in `kind` (Float or BFloat16); see [`Weights::frozen_kind`].
    pub fn set_frozen_kind(&mut self, kind: Kind) {
        self.frozen_kind = kind;
    }

    pub fn frozen_kind(&self) -> Kind {
        self.frozen_kind
    }

    /// A model built from these weights computes in `p`: with bf16 its activations are bf16 and so are
    /// its frozen matrices (whatever [`Weights::set_frozen_kind`] said).
    pub fn set_precision(&mut self, p: crate::config::Precision) {
        self.act_kind = p.kind();
        if p.kind() != Kind::Float {
            self.frozen_kind = p.kind();
        }
    }

    /// The activations' dtype of a model built from these weights.
    pub fn act_kind(&self) -> Kind {
        self.act_kind
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.borrow().contains_key(key)
    }

    /// The tensor `key` with the expected shape, detached and frozen.
    pub fn get(&self, key: &str, shape: &[i64]) -> Result<Tensor> {
        let map = self.tensors.borrow();
        let t = map.get(key).ok_or_else(|| Error::Tensor {
            key: key.into(),
            msg: format!("missing from {}", self.path.display()),
        })?;
        if t.size() != shape {
            return Err(Error::Tensor {
                key: key.into(),
                msg: format!(
                    "shape {:?} in {} does not match the config's {:?}",
                    t.size(),
                    self.path.display(),
                    shape
                ),
            });
        }
        Ok(t.detach())
    }

    /// Replaces the stored tensor `key` by `t` of the same shape and dtype (a view of a fused matrix).
    pub fn replace(&self, key: &str, t: Tensor) -> Result<()> {
        let mut map = self.tensors.borrow_mut();
        match map.get(key) {
            Some(old) if old.size() == t.size() && old.kind() == t.kind() => {
                map.insert(key.to_string(), t);
                Ok(())
            }
            _ => Err(Error::Tensor {
                key: key.into(),
                msg: "no stored tensor of that shape to replace".into(),
            }),
        }
    }

    /// [`Weights::get`] in the frozen dtype. The first call for a key converts the stored tensor in place:
    /// with bf16 the fp32 original is dropped (later `get`s of that key return the bf16 tensor).
    pub fn get_frozen(&self, key: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.get(key, shape)?;
        if t.kind() == self.frozen_kind || !t.is_floating_point() {
            return Ok(t);
        }
        let c = t.to_kind(self.frozen_kind);
        self.tensors.borrow_mut().insert(key.to_string(), c.shallow_clone());
        Ok(c)
    }
}

/// The tensor names in a safetensors file's header, without reading the tensors (8-byte length, then
/// the JSON header).
pub fn safetensors_names(path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(Error::file(path, format!("safetensors header of {n} bytes: not a safetensors file?")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| Error::file(path, format!("safetensors header is not JSON: {e}")))?;
    let map = v.as_object().ok_or_else(|| Error::file(path, "safetensors header is not a JSON object"))?;
    Ok(map.keys().filter(|k| k.as_str() != "__metadata__").cloned().collect())
}
