//! A named store of trainable tensors (deltas, head, or structure logits), kept apart from the frozen
//! backbone. Saved and loaded as safetensors under the same names.
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Device, Tensor};

pub struct ParamStore {
    device: Device,
    entries: Vec<(String, Tensor)>,
    /// One contiguous tensor whose slices every entry aliases; made on first use, remade after an add.
    flat: std::cell::OnceCell<Tensor>,
}

impl ParamStore {
    pub fn new(device: Device) -> Self {
        ParamStore { device, entries: Vec::new(), flat: std::cell::OnceCell::new() }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Moves every entry's values into one contiguous buffer that the entries then alias (their handles,
    /// held by the model, see the same data).
    fn flatten(&self) -> Tensor {
        let parts: Vec<Tensor> = self.entries.iter().map(|(_, t)| t.detach().reshape([-1])).collect();
        let flat = if parts.is_empty() {
            Tensor::zeros([0], (tch::Kind::Float, self.device))
        } else {
            tch::no_grad(|| Tensor::cat(&parts, 0))
        };
        let mut off = 0;
        for (_, t) in &self.entries {
            let n = t.numel() as i64;
            let view = flat.narrow(0, off, n).view(t.size().as_slice());
            t.shallow_clone().set_data(&view);
            off += n;
        }
        flat
    }

    /// The flat buffer of all values, made on first use: the optimiser and snapshots work on it in a
    /// few kernels, whatever the number of entries.
    pub fn flat(&self) -> &Tensor {
        self.flat.get_or_init(|| self.flatten())
    }

    /// d loss / d (every entry), flat like [`ParamStore::flat`] (zeros where an entry is unused).
    pub fn grads(&self, loss: &Tensor) -> Tensor {
        let ts: Vec<&Tensor> = self.entries.iter().map(|(_, t)| t).collect();
        flat_grads(loss, &ts)
    }

    /// Registers `t` as trainable under `name` and returns a handle sharing its storage and gradient.
    pub fn add(&mut self, name: &str, t: Tensor) -> Tensor {
        let t = t.detach().set_requires_grad(true);
        self.flat.take(); // a later flat() re-flattens, this entry included
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

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn numel(&self) -> i64 {
        self.entries.iter().map(|(_, t)| t.numel() as i64).sum()
    }

    /// A copy of every value, flat (a snapshot that later updates do not touch).
    pub fn snapshot(&self) -> Tensor {
        tch::no_grad(|| self.flat().copy())
    }

    /// Writes flat `values` into the parameters in place.
    pub fn restore(&self, values: &Tensor) {
        tch::no_grad(|| {
            self.flat().shallow_clone().copy_(values);
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

/// Gradients of `loss` with respect to `inputs`, concatenated flat (zeros for an unused input).
/// Only what these inputs need is computed, and no `.grad` is accumulated.
pub fn flat_grads(loss: &Tensor, inputs: &[&Tensor]) -> Tensor {
    let gs = Tensor::run_backward(&[loss], inputs, false, false);
    let parts: Vec<Tensor> = gs
        .iter()
        .zip(inputs)
        .map(|(g, t)| if g.defined() { g.reshape([-1]) } else { t.zeros_like().reshape([-1]) })
        .collect();
    match <[Tensor; 1]>::try_from(parts) {
        Ok([one]) => one, // one input (a pass's flat leaf): its gradient is flat already
        Err(parts) => Tensor::cat(&parts, 0),
    }
}
