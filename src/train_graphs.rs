//! The training loop's step as device work only (behind the device guard), and that step as CUDA graphs
//! per batch shape ([`crate::step_graphs`]), unless `S3PET_CUDA_GRAPHS` (`search`, `off`) turns them
//! off. Both paths run the same body: loss and gradients, clipping, the AdamW update with its step
//! scalars read from a device tensor, the guard's row; so the graph path differs from the eager one
//! only in where the work is launched from.
use crate::batch::Batch;
use crate::error::Result;
use crate::guard::DeviceGuard;
use crate::model::Model;
use crate::optim::{clip_grad_norm, upload, AdamW};
use crate::step_graphs::{GraphInputs, GraphOutputs, GraphTally, StepGraphs};
use tch::{Kind, Tensor};

/// A training step's inputs: its batch.
pub(crate) struct TrainInputs(pub Batch);

impl GraphInputs for TrainInputs {
    fn tensors(&self) -> Vec<&Tensor> {
        let b = &self.0;
        vec![&b.ids, &b.mask, &b.types, &b.labels]
    }

    fn host_key(&self) -> Vec<i64> {
        vec![self.0.choices, self.0.len() as i64]
    }

    fn copies(&self) -> Self {
        TrainInputs(self.0.device_copy())
    }
}

/// A training step's loss (0-d, on the device).
pub(crate) struct TrainOut(pub Tensor);

impl GraphOutputs for TrainOut {
    fn copied(&self) -> Self {
        TrainOut(self.0.copy())
    }
}

/// One guarded step's device work with the step scalars `coef` ([`AdamW::coefs`], on the device).
fn body(
    model: &Model,
    opt: &AdamW,
    guard: &DeviceGuard,
    b: &Batch,
    clip: f64,
    coef: &Tensor,
) -> Result<TrainOut> {
    let (loss, g) = model.loss_and_grads(b, true)?;
    let (loss, g) = crate::dist::reduce_pass(&loss, &g, || model.loss_terms(b))?;
    let loss = loss.detach();
    let norm = clip_grad_norm(&g, clip);
    opt.apply(&model.store, &g, coef);
    guard.record(&[loss.shallow_clone(), norm, tch::no_grad(|| model.store.flat().sum(Kind::Float))]);
    Ok(TrainOut(loss))
}

/// The guarded step: eager, or replayed from the graph of the batch's shape.
pub(crate) struct TrainSteps {
    /// This step's AdamW scalars on the device (what a graph reads).
    scalars: Tensor,
    graphs: Option<StepGraphs<TrainInputs, TrainOut>>,
}

impl TrainSteps {
    /// Graphs when `wanted`, the step is capturable ([`crate::step_graphs::capturable`]) and `guarded`
    /// (the device guard: no `--skip-nonfinite`, which decides on the host).
    pub fn new(model: &Model, wanted: bool, guarded: bool) -> Result<Self> {
        let can = crate::step_graphs::capturable(model) && guarded;
        let graphs = if wanted && can { Some(StepGraphs::new(model.device, "training")?) } else { None };
        Ok(TrainSteps { scalars: Tensor::zeros([3], (Kind::Float, model.device)), graphs })
    }

    /// Whether steps run as CUDA graphs.
    pub fn graphs_on(&self) -> bool {
        self.graphs.is_some()
    }

    /// How the steps ran as graphs (`None`: graphs off).
    pub fn tally(&self) -> Option<GraphTally> {
        self.graphs.as_ref().map(|g| g.tally())
    }

    /// One step of `opt` on `b` at learning rate `lr`; returns the loss (0-d, on the device).
    pub fn step(
        &mut self,
        model: &Model,
        (opt, guard): (&mut AdamW, &DeviceGuard),
        b: &Batch,
        (clip, lr): (f64, f64),
    ) -> Result<Tensor> {
        opt.step += 1;
        let coef = upload(&Tensor::from_slice(&opt.coefs(opt.step, lr)), model.device);
        let Some(graphs) = self.graphs.as_mut() else {
            return Ok(body(model, opt, guard, b, clip, &coef)?.0);
        };
        tch::no_grad(|| self.scalars.shallow_clone().copy_(&coef));
        let scalars = self.scalars.shallow_clone();
        let opt = &*opt;
        let out =
            graphs.run(&TrainInputs(b.clone()), &mut |x| body(model, opt, guard, &x.0, clip, &scalars))?;
        Ok(out.0)
    }
}
