//! A checkpoint's tensors by name: read from safetensors, shape-checked on access.
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub struct Weights {
    path: PathBuf,
    device: Device,
    tensors: HashMap<String, Tensor>,
    /// Dtype of the frozen matrices (embeddings, linear weights and biases) a model built from these
    /// weights computes with: fp32, or bf16 to halve their memory and run the frozen matmuls on bf16
    /// tensor cores. Norms, deltas, the head and full fine-tuning stay fp32.
    frozen_kind: Kind,
}

impl Weights {
    /// Reads every tensor of a safetensors file to `device` as fp32. Names are normalised by dropping a
    /// leading `bert.` (BertForSequenceClassification) so that sites are BertModel module paths.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.exists() {
            return Err(Error::file(path, "model weights not found"));
        }
        let list = Tensor::read_safetensors(path).map_err(|e| Error::safetensors(path, "read", &e))?;
        let tensors = list
            .into_iter()
            .map(|(name, t)| {
                let name = name.strip_prefix("bert.").map(str::to_string).unwrap_or(name);
                let t = if t.is_floating_point() { t.to_kind(Kind::Float) } else { t };
                (name, t.to_device(device))
            })
            .collect();
        Ok(Weights { path: path.to_path_buf(), device, tensors, frozen_kind: Kind::Float })
    }

    /// Weights from named tensors (e.g. a model with deltas folded in); `label` names them in errors.
    pub fn from_tensors(label: &Path, tensors: Vec<(String, Tensor)>, device: Device) -> Self {
        let tensors = tensors.into_iter().map(|(k, t)| (k, t.to_device(device))).collect();
        Weights { path: label.to_path_buf(), device, tensors, frozen_kind: Kind::Float }
    }

    /// Keep frozen matrices in `kind` (Float or BFloat16); see [`Weights::frozen_kind`].
    pub fn set_frozen_kind(&mut self, kind: Kind) {
        self.frozen_kind = kind;
    }

    pub fn frozen_kind(&self) -> Kind {
        self.frozen_kind
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The tensor `key` with the expected shape, detached and frozen.
    pub fn get(&self, key: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| Error::Tensor {
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
}
