//! The non-finite guard of an optimiser step (training and search alike): a non-finite loss, gradient
//! norm or updated parameter stops the run with a message naming the step (the last checkpoint on disk
//! is kept), or, with `--skip-nonfinite`, skips the batch and leaves the parameters and the optimiser
//! as they were.
use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::params::ParamStore;
use tch::Tensor;

/// Whether every element of `t` is finite (one reduction, read on the host).
pub fn all_finite(t: &Tensor) -> bool {
    t.numel() == 0 || t.isfinite().all().int64_value(&[]) == 1
}

/// What a guarded step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    Applied,
    Skipped,
}

/// The parameters and the optimiser state before a step, to undo a skipped one.
struct Saved {
    params: Tensor,
    m: Tensor,
    v: Tensor,
    step: i64,
}

/// Applies `opt`'s update of `store` for gradient `g` at `lr` unless the loss `loss`, the gradient norm
/// `norm` or the updated parameters are not finite. `skip`: skip such a step instead of failing; `at`
/// says where the run is and what is kept, for the message.
pub fn guarded_step(
    store: &ParamStore,
    opt: &mut AdamW,
    g: Option<&Tensor>,
    (loss, norm): (f64, f64),
    lr: f64,
    skip: bool,
    at: &dyn Fn() -> String,
) -> Result<Stepped> {
    let problem = if !loss.is_finite() {
        Some(format!("loss {loss}"))
    } else if !norm.is_finite() {
        Some(format!("gradient norm {norm}"))
    } else {
        None
    };
    let problem = match (problem, g) {
        (Some(p), _) => Some(p),
        (None, None) => Some("gradient (none computed)".into()),
        (None, Some(g)) => update(store, opt, g, lr, skip),
    };
    match problem {
        None => Ok(Stepped::Applied),
        Some(p) if skip => {
            tracing::warn!("skipping a batch with non-finite {p} ({})", at());
            Ok(Stepped::Skipped)
        }
        Some(p) => {
            Err(Error::Train(format!("non-finite {p} at {}; --skip-nonfinite skips such batches", at())))
        }
    }
}

/// Applies the update; when the updated parameters are not finite, restores them (with `keep_undo`)
/// and names the problem.
fn update(store: &ParamStore, opt: &mut AdamW, g: &Tensor, lr: f64, keep_undo: bool) -> Option<String> {
    let saved = keep_undo.then(|| Saved {
        params: store.snapshot(),
        m: tch::no_grad(|| opt.m.copy()),
        v: tch::no_grad(|| opt.v.copy()),
        step: opt.step,
    });
    opt.step(store, g, lr);
    if all_finite(store.flat()) {
        return None;
    }
    if let Some(s) = saved {
        store.restore(&s.params);
        tch::no_grad(|| {
            opt.m.shallow_clone().copy_(&s.m);
            opt.v.shallow_clone().copy_(&s.v);
        });
        opt.step = s.step;
    }
    Some(format!("parameters after the update (learning rate {lr:e})"))
}

/// What one slot of a [`DeviceGuard`] row holds, for the check and its message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// "loss", "gradient norm", "parameters after the update" (a sum: non-finite iff one is), ...
    pub what: &'static str,
    /// Which update of the step it belongs to ("alpha update", "w update").
    pub update: &'static str,
    /// The value must also be at most this (the sigmoid shift's relative residual).
    pub at_most: Option<f64>,
}

/// Rows kept on the device between two host checks (a check is forced when they are all used).
pub const GUARD_ROWS: usize = 256;

/// The non-finite guard without host round trips: each step writes its checked values (losses,
/// gradient norms, the sum of the updated parameters, the shift's residual) as one row of a ring
/// buffer on the device, with no read-back; [`DeviceGuard::check`] reads the rows written since the
/// last check (at evaluations, before every checkpoint, at the end, and every [`GUARD_ROWS`] steps)
/// and fails at the first bad value with the message [`guarded_step`] gives, naming its step. The
/// steps after a bad one still ran on the device, but nothing is written after it: the run stops at
/// that check, before the evaluation or checkpoint that called it, so the last checkpoint and best
/// weights on disk are the last good ones, as with the host guard. (`--skip-nonfinite` needs a decision
/// per step: the search then reads each step's values on the host through [`guarded_step`].)
pub struct DeviceGuard {
    slots: Vec<Slot>,
    ring: Tensor,
    /// The next row, on the device (advanced inside the step, so a captured step advances it too).
    row: Tensor,
    /// The host's count of rows written since the last check, the step of the first of them, and the
    /// next row (kept in step with `row`).
    pending: usize,
    first_step: usize,
    next_row: usize,
}

impl DeviceGuard {
    pub fn new(slots: Vec<Slot>, device: tch::Device) -> Self {
        let ring = Tensor::zeros([GUARD_ROWS as i64, slots.len() as i64], (tch::Kind::Float, device));
        let row = Tensor::zeros([1], (tch::Kind::Int64, device));
        DeviceGuard { slots, ring, row, pending: 0, first_step: 0, next_row: 0 }
    }

    /// Device work of one step: writes `values` (one 0-d tensor per slot, any float kind) as the next row.
    pub fn record(&self, values: &[Tensor]) {
        tch::no_grad(|| {
            let row =
                Tensor::stack(&values.iter().map(|v| v.to_kind(tch::Kind::Float)).collect::<Vec<_>>(), 0);
            let _ = self.ring.shallow_clone().index_copy_(0, &self.row, &row.unsqueeze(0));
            let _ = self.row.shallow_clone().g_add_scalar_(1).remainder_(GUARD_ROWS as i64);
        });
    }

    /// Host bookkeeping of one recorded step (`step`: its number); true when the ring is full and
    /// [`DeviceGuard::check`] must run before the next step.
    pub fn stepped(&mut self, step: usize) -> bool {
        if self.pending == 0 {
            self.first_step = step;
        }
        self.pending += 1;
        self.next_row = (self.next_row + 1) % GUARD_ROWS;
        self.pending >= GUARD_ROWS
    }

    /// The rows written since the last check, oldest first (one read-back), and the step of the first.
    pub fn take(&mut self) -> Result<(usize, Vec<Vec<f32>>)> {
        let (pending, first) = (self.pending, self.first_step);
        self.pending = 0;
        if pending == 0 {
            return Ok((first, Vec::new()));
        }
        let rows = Vec::<Vec<f32>>::try_from(&self.ring.to_device(tch::Device::Cpu)).map_err(|e| {
            Error::Tensor { key: "non-finite guard".into(), msg: format!("cannot read back: {e}") }
        })?;
        let start = self.next_row + GUARD_ROWS - pending;
        Ok((first, (0..pending).map(|i| rows[(start + i) % GUARD_ROWS].clone()).collect()))
    }

    /// Reads the rows written since the last check; the first bad value is an error naming its step,
    /// slot and value, `kept` saying what stays on disk. Returns the last row (the latest values).
    pub fn check(&mut self, what_run: &str, kept: &str) -> Result<Option<Vec<f32>>> {
        let (first, rows) = self.take()?;
        for (i, row) in rows.iter().enumerate() {
            for (slot, &v) in self.slots.iter().zip(row) {
                let bad = !v.is_finite() || slot.at_most.is_some_and(|m| v as f64 > m);
                if bad {
                    let (step, update) = (first + i, slot.update);
                    let problem = match slot.at_most {
                        Some(_) => format!("{} {v:e} (the sigmoid shift did not converge)", slot.what),
                        None => format!("non-finite {} {v}", slot.what),
                    };
                    return Err(Error::Train(format!(
                        "{problem} at {what_run} step {step} ({update}); {kept}; --skip-nonfinite skips such batches"
                    )));
                }
            }
        }
        Ok(rows.last().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_guard_names_the_first_bad_step_and_wraps() {
        let slots = vec![
            Slot { what: "loss", update: "w update", at_most: None },
            Slot { what: "shift residual", update: "alpha update", at_most: Some(1e-6) },
        ];
        let mut g = DeviceGuard::new(slots, tch::Device::Cpu);
        let v = |x: f32| Tensor::from(x);
        for step in 0..(GUARD_ROWS + 10) {
            g.record(&[v(1.0), v(0.0)]);
            if g.stepped(step) {
                g.check("search", "kept").unwrap();
            }
        }
        g.check("search", "kept").unwrap();
        g.record(&[v(2.0), v(0.0)]);
        g.stepped(300);
        g.record(&[v(f32::NAN), v(0.0)]);
        g.stepped(301);
        g.record(&[v(f32::INFINITY), v(0.0)]);
        g.stepped(302);
        let e = g.check("search", "the last search checkpoint is kept").unwrap_err().to_string();
        assert!(e.contains("non-finite loss NaN at search step 301 (w update)"), "{e}");
        assert!(g.check("search", "kept").is_ok(), "a check consumes the rows");
        g.record(&[v(1.0), v(1e-3)]);
        g.stepped(303);
        let e = g.check("search", "kept").unwrap_err().to_string();
        assert!(e.contains("did not converge") && e.contains("step 303"), "{e}");
    }
}

/// The text a panic was raised with (`panic!`'s formatted `String` or literal `&str`; empty otherwise).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("")
}

/// Turns libtorch's out-of-memory failure, which tch raises as a panic deep in a kernel call, into one
/// line and exit status 1: what was asked and what was free, and what to lower. The run's checkpoint (the
/// last evaluation's) stays, so `--resume` continues from there. Other panics keep the previous hook.
pub fn exit_cleanly_on_out_of_memory() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| match out_of_memory_line(panic_message(info.payload())) {
        Some(line) => {
            eprintln!("error: {line}");
            std::process::exit(1);
        }
        None => previous(info),
    }));
}

/// Test hook (tests/experiment.rs): with `S3PET_TEST_OOM_ONCE=FILE` set and FILE absent, creates FILE
/// and fails as libtorch does when the GPU runs out of memory, so that the experiment runner's retry can
/// be tested on a machine without a GPU. Unset (always, outside tests) it does nothing.
pub fn test_out_of_memory_once() {
    let Some(marker) = std::env::var_os("S3PET_TEST_OOM_ONCE") else { return };
    if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_ok() {
        panic!("CUDA out of memory. Tried to allocate 2.00 MiB. GPU 0 has a total capacity of 1.00 GiB of which 1.00 MiB is free. (S3PET_TEST_OOM_ONCE)");
    }
}

/// How the one-line out-of-memory error begins (the experiment runner looks for it in a cell's log).
pub const OUT_OF_MEMORY: &str = "the GPU ran out of memory";

/// The one-line form of a CUDA out-of-memory message, or `None` for any other text.
pub fn out_of_memory_line(text: &str) -> Option<String> {
    let start = text.find("out of memory")?;
    let rest = &text[start + "out of memory".len()..];
    // ". Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 139.80 GiB of which 5.25 MiB is free."
    let asked = rest.split(". ").take(3).collect::<Vec<_>>().join(". ");
    let asked = asked.split(" Process ").next().unwrap_or(&asked).trim_end_matches('.');
    Some(format!(
        "{OUT_OF_MEMORY}{asked}; lower --batch-size or --eval-batch-size, or run fewer jobs on this GPU at once \
         (experiment --parallel); `--resume` continues from the last checkpoint"
    ))
}

#[cfg(test)]
mod oom_tests {
    use super::out_of_memory_line;

    #[test]
    fn out_of_memory_becomes_one_line() {
        let torch = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate \
                     20.00 MiB. GPU 0 has a total capacity of 139.80 GiB of which 5.25 MiB is free. Process 1375 \
                     has 3.00 GiB memory in use. Of the allocated memory 1.15 GiB is allocated by PyTorch\")";
        let line = out_of_memory_line(torch).unwrap();
        assert!(line.starts_with("the GPU ran out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 139.80 GiB of which 5.25 MiB is free;"), "{line}");
        assert!(!line.contains("Process") && !line.contains('\n'), "{line}");
        assert_eq!(out_of_memory_line("index out of range"), None);
    }
}
