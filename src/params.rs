//! A named store of trainable tensors (deltas, head, or structure logits), kept apart from the frozen
//! backbone. Saved and loaded as safetensors under the same names.
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Device, Tensor};

pub struct ParamStore {
    device: Device,
    entries: Vec<(String, Tensor)>,
}

impl ParamStore {
    pub fn new(device: Device) -> Self {
        ParamStore { device, entries: Vec::new() }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Registers `t` as trainable under `name` and returns a handle sharing its storage and gradient.
    pub fn add(&mut self, name: &str, t: Tensor) -> Tensor {
        let t = t.detach().set_requires_grad(true);
        self.entries.push((name.to_string(), t.shallow_clone()));
        t
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[(String, Tensor)] {
        &self.entries
    }

    pub fn tensors(&self) -> Vec<Tensor> {
        self.entries.iter().map(|(_, t)| t.shallow_clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn numel(&self) -> i64 {
        self.entries.iter().map(|(_, t)| t.numel() as i64).sum()
    }

    pub fn zero_grad(&self) {
        for (_, t) in &self.entries {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Detached copies of every value (a snapshot that later updates do not touch).
    pub fn snapshot(&self) -> Vec<Tensor> {
        tch::no_grad(|| self.entries.iter().map(|(_, t)| t.detach().copy()).collect())
    }

    /// Writes `values` (one per entry, in order) into the parameters in place.
    pub fn restore(&self, values: &[Tensor]) {
        tch::no_grad(|| {
            for ((_, t), v) in self.entries.iter().zip(values) {
                t.shallow_clone().copy_(v);
            }
        });
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let named: Vec<(&str, Tensor)> =
            self.entries.iter().map(|(n, t)| (n.as_str(), t.detach().to_device(Device::Cpu))).collect();
        crate::artifact::write_safetensors(path, &named)
    }

    /// Loads values saved by [`ParamStore::save`]; every entry must be present with its shape.
    pub fn load(&self, path: &Path) -> Result<()> {
        let list = Tensor::read_safetensors(path).map_err(|e| Error::safetensors(path, "read", &e))?;
        let map: std::collections::HashMap<String, Tensor> = list.into_iter().collect();
        tch::no_grad(|| {
            for (name, t) in &self.entries {
                let v = map.get(name).ok_or_else(|| Error::Tensor {
                    key: name.clone(),
                    msg: format!("missing from {}", path.display()),
                })?;
                if v.size() != t.size() {
                    return Err(Error::Tensor {
                        key: name.clone(),
                        msg: format!(
                            "shape {:?} in {} but {:?} expected",
                            v.size(),
                            path.display(),
                            t.size()
                        ),
                    });
                }
                t.shallow_clone().copy_(&v.to_device(self.device));
            }
            Ok(())
        })
    }
}
