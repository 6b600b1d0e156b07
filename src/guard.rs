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
