//! CUDA graphs of the search step ([`crate::step_graphs`]): a step's inputs are its D_w and D_alpha
//! batches and the noise of both updates; the step scalars are written into the stepper's own scalar
//! tensor, which the graph reads. `S3PET_CUDA_GRAPHS=off` turns them off from the start
//! ([`graphs_wanted`]).
use super::stepper::StepOut;
use crate::batch::Batch;
use crate::step_graphs::{GraphInputs, GraphOutputs, StepGraphs};
use tch::Tensor;

pub use crate::step_graphs::{graphs_wanted, GraphTally};

/// A search step's inputs (the tensors a graph captures as its inputs).
pub(crate) struct Inputs {
    pub bw: Batch,
    pub ba: Batch,
    pub u_a: Tensor,
    pub u_w: Tensor,
}

impl GraphInputs for Inputs {
    fn tensors(&self) -> Vec<&Tensor> {
        let (w, a) = (&self.bw, &self.ba);
        vec![&w.ids, &w.mask, &w.types, &w.labels, &a.ids, &a.mask, &a.types, &a.labels, &self.u_a, &self.u_w]
    }

    fn host_key(&self) -> Vec<i64> {
        vec![self.bw.choices, self.ba.choices, self.bw.len() as i64, self.ba.len() as i64]
    }

    fn copies(&self) -> Inputs {
        Inputs {
            bw: self.bw.device_copy(),
            ba: self.ba.device_copy(),
            u_a: self.u_a.copy(),
            u_w: self.u_w.copy(),
        }
    }
}

impl GraphOutputs for StepOut {
    fn copied(&self) -> StepOut {
        StepOut { val_loss: self.val_loss.copy(), train_loss: self.train_loss.copy() }
    }
}

/// The search step's graphs.
pub(crate) type Graphs = StepGraphs<Inputs, StepOut>;
