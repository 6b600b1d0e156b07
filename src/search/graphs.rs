//! CUDA graphs of the search step: per shape of a step's inputs, the step's device work is captured once
//! (after two eager warm-up steps of that shape, on a side stream) and then replayed with the step's
//! batches and noise copied into the captured input tensors; the step scalars are written into the
//! stepper's own scalar tensor, which the graph reads. A capture that fails (something in the step is
//! not capturable) turns graphs off for the rest of the search with a warning, and the step runs eagerly.
//! `S3PET_CUDA_GRAPHS=off` turns them off from the start ([`graphs_wanted`]).
//! All the shapes' graphs share one memory pool (the first graph's): they run one at a time on one
//! stream, and each replay's outputs are copied out before the next replay, so a block that one graph
//! frees and another reuses is never read across graphs. With a pool each, a search of 8 shapes held 8
//! times a step's activations (50 GB per MPNet cell on the H200, against 6.5 GB allocated at the peak).
use super::stepper::{StepOut, Stepper};
use crate::batch::Batch;
use crate::cuda_graph::{CudaGraph, SideStream};
use crate::error::{Error, Result};
use std::collections::HashMap;
use tch::Tensor;

/// Eager steps of a shape before it is captured.
const WARMUP: usize = 2;
/// Shapes captured at most; others run eagerly.
const MAX_GRAPHS: usize = 16;

/// Whether the environment asks for CUDA graphs (`S3PET_CUDA_GRAPHS` unset, `on` or `1`: yes; `off` or
/// `0`: no).
pub fn graphs_wanted() -> bool {
    !matches!(std::env::var("S3PET_CUDA_GRAPHS").as_deref(), Ok("off") | Ok("0") | Ok("false"))
}

/// A step's inputs (the tensors a graph captures as its inputs).
pub(crate) struct Inputs {
    pub bw: Batch,
    pub ba: Batch,
    pub u_a: Tensor,
    pub u_w: Tensor,
}

impl Inputs {
    fn tensors(&self) -> [&Tensor; 10] {
        let (w, a) = (&self.bw, &self.ba);
        [&w.ids, &w.mask, &w.types, &w.labels, &a.ids, &a.mask, &a.types, &a.labels, &self.u_a, &self.u_w]
    }

    fn key(&self) -> Vec<(Vec<i64>, tch::Kind)> {
        let mut k: Vec<_> = self.tensors().iter().map(|t| (t.size(), t.kind())).collect();
        k.push((
            vec![self.bw.choices, self.ba.choices, self.bw.len() as i64, self.ba.len() as i64],
            tch::Kind::Int64,
        ));
        k
    }

    /// Device copies that the graph owns.
    fn copies(&self) -> Inputs {
        let b = |b: &Batch| Batch {
            ids: b.ids.copy(),
            mask: b.mask.copy(),
            types: b.types.copy(),
            labels: b.labels.copy(),
            ..b.clone()
        };
        Inputs { bw: b(&self.bw), ba: b(&self.ba), u_a: self.u_a.copy(), u_w: self.u_w.copy() }
    }

    fn write(&self, from: &Inputs) {
        tch::no_grad(|| {
            for (dst, src) in self.tensors().into_iter().zip(from.tensors()) {
                dst.shallow_clone().copy_(src);
            }
        });
    }
}

struct Captured {
    graph: CudaGraph,
    inputs: Inputs,
    out: StepOut,
}

pub(crate) struct Graphs {
    _side: SideStream,
    captured: HashMap<Vec<(Vec<i64>, tch::Kind)>, Captured>,
    seen: HashMap<Vec<(Vec<i64>, tch::Kind)>, usize>,
    broken: bool,
    tally: GraphTally,
}

/// How a search attempt's steps ran: shapes captured, steps replayed from a graph (a capture's own step
/// counts as replayed), steps run eagerly (warm-up, shapes beyond the limit, or graphs broken).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphTally {
    pub shapes: usize,
    pub replayed: usize,
    pub eager: usize,
}

impl Graphs {
    pub fn new(device: tch::Device) -> Result<Self> {
        Ok(Graphs {
            _side: SideStream::enter(device)?,
            captured: HashMap::new(),
            seen: HashMap::new(),
            broken: false,
            tally: GraphTally::default(),
        })
    }

    /// Shapes captured so far.
    pub fn count(&self) -> usize {
        self.captured.len()
    }

    /// How this attempt's steps ran so far.
    pub fn tally(&self) -> GraphTally {
        GraphTally { shapes: self.captured.len(), ..self.tally }
    }

    /// The step on `x`: replayed, captured then replayed, or eager.
    pub fn run(&mut self, st: &mut Stepper, x: &Inputs) -> Result<StepOut> {
        let key = x.key();
        if let Some(c) = self.captured.get(&key) {
            c.inputs.write(x);
            c.graph.replay()?;
            self.tally.replayed += 1;
            return Ok(StepOut { val_loss: c.out.val_loss.copy(), train_loss: c.out.train_loss.copy() });
        }
        let seen = self.seen.entry(key.clone()).or_insert(0);
        *seen += 1;
        if self.broken || *seen <= WARMUP || self.captured.len() >= MAX_GRAPHS {
            self.tally.eager += 1;
            return st.body(x);
        }
        let inputs = x.copies();
        let mut graph = CudaGraph::new()?;
        graph.begin(self.captured.values().next().map(|c| &c.graph))?;
        // an op that cannot be captured (e.g. a host copy) makes tch panic: end the capture, run eagerly
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| st.body(&inputs)))
            .unwrap_or_else(|p| Err(Error::Msg(first_line(crate::guard::panic_message(p.as_ref())))));
        match (out, graph.end()) {
            (Ok(out), Ok(())) => {
                graph.replay()?;
                self.tally.replayed += 1;
                let ret = StepOut { val_loss: out.val_loss.copy(), train_loss: out.train_loss.copy() };
                self.captured.insert(key, Captured { graph, inputs, out });
                tracing::info!(shapes = self.captured.len(), "search step captured as a CUDA graph");
                Ok(ret)
            }
            (out, end) => {
                let why = out.err().map(|e| e.to_string()).or(end.err().map(|e| e.to_string()));
                tracing::warn!(
                    "the search step could not be captured as a CUDA graph ({}); it runs without graphs",
                    why.unwrap_or_default()
                );
                self.broken = true;
                self.tally.eager += 1;
                st.body(x)
            }
        }
    }
}

/// The first line of a panic's text: tch's messages carry libtorch's whole C++ backtrace after it.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("a panic").to_string()
}
