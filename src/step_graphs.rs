//! CUDA graphs of a training or search step, per shape of the step's inputs: the step's device work is
//! captured once (after two eager warm-up steps of that shape, on a side stream) and then replayed with
//! the step's inputs copied into the captured input tensors. The step's host scalars (learning rates,
//! bias corrections) reach it through a tensor of the caller's, written before each step, which the
//! graph reads. A capture that fails (something in the step is not capturable) turns graphs off for
//! the rest of the run with a warning, and the step runs eagerly.
//! All the shapes' graphs share one memory pool (the first graph's): they run one at a time on one
//! stream, and each replay's outputs are copied out before the next replay, so a block that one graph
//! frees and another reuses is never read across graphs. With a pool each, a search of 8 shapes held 8
//! times a step's activations (50 GB per MPNet cell on the H200, against 6.5 GB allocated at the peak).
use crate::cuda_graph::{CudaGraph, SideStream};
use crate::error::{Error, Result};
use std::collections::HashMap;
use tch::Tensor;

/// The environment variable that chooses which steps run as CUDA graphs on a CUDA device.
pub const GRAPHS_ENV: &str = "S3PET_CUDA_GRAPHS";

/// Which steps run as CUDA graphs (where a step can be captured at all, [`capturable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphsSetting {
    /// None: every step eager (`off`, `0`, `false`).
    Off,
    /// The search's steps only (`search`).
    Search,
    /// The search's and the training loop's (unset, `on`, `1`, `true`, `all`: the default).
    All,
}

/// [`GRAPHS_ENV`]'s value as a setting; any other value is refused, naming the variable.
pub fn parse_graphs_setting(value: Option<&str>) -> Result<GraphsSetting> {
    match value {
        None | Some("on") | Some("1") | Some("true") | Some("all") => Ok(GraphsSetting::All),
        Some("search") => Ok(GraphsSetting::Search),
        Some("off") | Some("0") | Some("false") => Ok(GraphsSetting::Off),
        Some(other) => Err(Error::Msg(format!(
            "{GRAPHS_ENV}={other:?}: expected on (the default: search and training steps), search \
             (the search's steps only) or off"
        ))),
    }
}

/// The setting the environment asks for ([`GRAPHS_ENV`]).
pub fn graphs_setting() -> Result<GraphsSetting> {
    let value = std::env::var(GRAPHS_ENV).ok();
    parse_graphs_setting(value.as_deref())
}

/// Whether the search's steps may run as CUDA graphs.
pub fn graphs_wanted() -> Result<bool> {
    Ok(graphs_setting()? != GraphsSetting::Off)
}

/// Whether the training loop's steps may run as CUDA graphs.
pub fn train_graphs_wanted() -> Result<bool> {
    Ok(graphs_setting()? == GraphsSetting::All)
}

/// Whether a step of `model` can be captured at all: a build with CUDA graphs, a CUDA device, not T5
/// (its label words are uploaded inside the step) and one process (the all-reduce of a launched world
/// is not captured). Callers add their own conditions (no host-side guard).
pub fn capturable(model: &crate::model::Model) -> bool {
    crate::cuda_graph::supported()
        && model.device.is_cuda()
        && model.t5().is_none()
        && !crate::dist::current().is_distributed()
}

/// The default padding multiple of batches whose steps run as CUDA graphs. A step's graph is keyed by
/// its batch shapes; with batches padded only to their longest example, MRPC's search (batch 32, 20
/// epochs, 1,160 steps) meets about 420 shape pairs and STS-B's about 780, so 16 graphs replay 9 % and
/// 4 % of the steps and the rest run eagerly; padded to multiples of 16: 12 and 23 pairs, 98 % and 96 %
/// replayed, for 9-11 % more tokens (tools/graph_shapes.py, a simulation of the shapes with
/// all-mpnet-base-v2's tokenizer).
pub const GRAPH_PAD_MULTIPLE: usize = 16;

/// How a loop pads its batches: `given` (--pad-to-multiple) when set, else [`GRAPH_PAD_MULTIPLE`] where
/// its steps run as graphs and no padding elsewhere; never past `max_length`.
pub fn padding(given: Option<usize>, graphs: bool, max_length: usize) -> crate::batch::PadTo {
    let multiple = given.unwrap_or(if graphs { GRAPH_PAD_MULTIPLE } else { 1 });
    crate::batch::PadTo { multiple, cap: max_length }
}

/// Eager steps of a shape before it is captured.
const WARMUP: usize = 2;
/// Shapes captured at most; others run eagerly.
const MAX_GRAPHS: usize = 16;

/// A step's inputs: the tensors a graph captures as its inputs, and what else of them fixes the step.
pub(crate) trait GraphInputs: Sized {
    fn tensors(&self) -> Vec<&Tensor>;
    /// Host values the step depends on beyond the tensors' shapes and kinds (rows per example, ...).
    fn host_key(&self) -> Vec<i64>;
    /// Device copies that the graph owns.
    fn copies(&self) -> Self;
}

/// A step's outputs on the device; `copied` takes them out of a graph's memory before the next replay.
pub(crate) trait GraphOutputs {
    fn copied(&self) -> Self;
}

type Key = (Vec<(Vec<i64>, tch::Kind)>, Vec<i64>);

fn key_of<I: GraphInputs>(x: &I) -> Key {
    (x.tensors().iter().map(|t| (t.size(), t.kind())).collect(), x.host_key())
}

fn write<I: GraphInputs>(dst: &I, src: &I) {
    tch::no_grad(|| {
        for (d, s) in dst.tensors().into_iter().zip(src.tensors()) {
            d.shallow_clone().copy_(s);
        }
    });
}

/// How a run's steps went: shapes captured, steps replayed from a graph (a capture's own step counts
/// as replayed), steps run eagerly (warm-up, shapes beyond the limit, or graphs broken).
/// (report.json's `cuda_graphs`.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GraphTally {
    pub shapes: usize,
    #[serde(rename = "replayed_steps")]
    pub replayed: usize,
    #[serde(rename = "eager_steps")]
    pub eager: usize,
}

struct Captured<I, O> {
    graph: CudaGraph,
    inputs: I,
    out: O,
}

/// The graphs of one step function (`what` names it in messages).
pub(crate) struct StepGraphs<I, O> {
    _side: SideStream,
    what: &'static str,
    captured: HashMap<Key, Captured<I, O>>,
    seen: HashMap<Key, usize>,
    broken: bool,
    tally: GraphTally,
}

impl<I: GraphInputs, O: GraphOutputs> StepGraphs<I, O> {
    pub fn new(device: tch::Device, what: &'static str) -> Result<Self> {
        Ok(StepGraphs {
            _side: SideStream::enter(device)?,
            what,
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

    /// How the steps ran so far.
    pub fn tally(&self) -> GraphTally {
        GraphTally { shapes: self.captured.len(), ..self.tally }
    }

    /// The step `body` on `x`: replayed, captured then replayed, or eager.
    pub fn run(&mut self, x: &I, body: &mut dyn FnMut(&I) -> Result<O>) -> Result<O> {
        let key = key_of(x);
        if let Some(c) = self.captured.get(&key) {
            write(&c.inputs, x);
            c.graph.replay()?;
            self.tally.replayed += 1;
            return Ok(c.out.copied());
        }
        let seen = self.seen.entry(key.clone()).or_insert(0);
        *seen += 1;
        if self.broken || *seen <= WARMUP || self.captured.len() >= MAX_GRAPHS {
            self.tally.eager += 1;
            return body(x);
        }
        let inputs = x.copies();
        let mut graph = CudaGraph::new()?;
        graph.begin(self.captured.values().next().map(|c| &c.graph))?;
        // an op that cannot be captured (e.g. a host copy) makes tch panic: end the capture, run eagerly
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&inputs)))
            .unwrap_or_else(|p| Err(Error::Msg(first_line(crate::guard::panic_message(p.as_ref())))));
        match (out, graph.end()) {
            (Ok(out), Ok(())) => {
                graph.replay()?;
                self.tally.replayed += 1;
                let ret = out.copied();
                self.captured.insert(key, Captured { graph, inputs, out });
                tracing::info!(shapes = self.captured.len(), "{} step captured as a CUDA graph", self.what);
                Ok(ret)
            }
            (out, end) => {
                let why = out.err().map(|e| e.to_string()).or(end.err().map(|e| e.to_string()));
                tracing::warn!(
                    "the {} step could not be captured as a CUDA graph ({}); it runs without graphs",
                    self.what,
                    why.unwrap_or_default()
                );
                self.broken = true;
                self.tally.eager += 1;
                body(x)
            }
        }
    }
}

/// The first line of a panic's text: tch's messages carry libtorch's whole C++ backtrace after it.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("a panic").to_string()
}

#[cfg(test)]
mod tests {
    use super::{parse_graphs_setting, GraphTally, GraphsSetting};

    #[test]
    fn the_graph_switch_defaults_to_every_step_and_refuses_unknown_values() {
        for v in [None, Some("on"), Some("1"), Some("true"), Some("all")] {
            assert_eq!(parse_graphs_setting(v).unwrap(), GraphsSetting::All, "{v:?}");
        }
        assert_eq!(parse_graphs_setting(Some("search")).unwrap(), GraphsSetting::Search);
        for v in ["off", "0", "false"] {
            assert_eq!(parse_graphs_setting(Some(v)).unwrap(), GraphsSetting::Off, "{v}");
        }
        let e = parse_graphs_setting(Some("yes")).unwrap_err().to_string();
        assert!(e.contains("S3PET_CUDA_GRAPHS=\"yes\"") && e.contains("search"), "{e}");
    }

    #[test]
    fn the_tally_keeps_report_json_names() {
        let t = GraphTally { shapes: 9, replayed: 327, eager: 21 };
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v, serde_json::json!({"shapes": 9, "replayed_steps": 327, "eager_steps": 21}));
    }
}
