//! The task head of each encoder family's sequence-classification model, always trained and counted
//! apart from the deltas: an optional dense layer on the encoder's features, then dropout and a new
//! classifier (num_labels; 1 for regression and for scoring each choice of a multiple-choice task).
//!
//! | family | features | dense layer | classifier |
//! |---|---|---|---|
//! | BERT | the pooler's output | — | `classifier` |
//! | RoBERTa, XLM-R, MPNet | first token | dropout, `classifier.dense`, tanh | `classifier.out_proj` |
//! | DeBERTa-v2 | first token | dropout (`pooler_dropout`), `pooler.dense`, `pooler_hidden_act` | `classifier` |
//! | DistilBERT | first token | `pre_classifier`, ReLU | `classifier` |
use super::arch::ModelConfig;
use super::encoder::activation;
use crate::backbone::weights::Weights;
use crate::delta::pass::pass_linear;
use crate::delta::Ctx;
use crate::error::Result;
use crate::params::ParamStore;
use tch::{Kind, Tensor};

/// The dense layer some heads put before the classifier.
#[derive(Debug, Clone)]
pub struct PreLayer {
    /// Module path in the task model (`classifier.dense`, `pooler.dense`, `pre_classifier`).
    pub name: &'static str,
    pub act: String,
    /// Dropout on its input.
    pub dropout: f64,
}

/// What a family's head is made of (names are module paths in the task model, outside the backbone).
#[derive(Debug, Clone)]
pub struct HeadLayout {
    pub pre: Option<PreLayer>,
    /// The classifier's module path (`classifier`, `classifier.out_proj`).
    pub out: &'static str,
    /// Dropout on the classifier's input.
    pub dropout: f64,
    /// Width of the features.
    pub d: i64,
    pub init_range: f64,
}

fn pre(name: &'static str, act: &str, dropout: f64) -> Option<PreLayer> {
    Some(PreLayer { name, act: act.to_string(), dropout })
}

impl HeadLayout {
    /// The head of `cfg`'s classification model; `None` for T5 (its head is the task's label words).
    pub fn of(cfg: &ModelConfig) -> Option<HeadLayout> {
        Some(match cfg {
            ModelConfig::Bert(c) => {
                let drop = c.classifier_dropout.unwrap_or(c.hidden_dropout_prob);
                let (pre, out) = match c.is_roberta() {
                    true => (pre("classifier.dense", "tanh", drop), "classifier.out_proj"),
                    false => (None, "classifier"),
                };
                HeadLayout { pre, out, dropout: drop, d: c.hidden_size, init_range: c.initializer_range }
            }
            ModelConfig::Mpnet(c) => HeadLayout {
                pre: pre("classifier.dense", "tanh", c.hidden_dropout_prob),
                out: "classifier.out_proj",
                dropout: c.hidden_dropout_prob,
                d: c.hidden_size,
                init_range: c.initializer_range,
            },
            ModelConfig::Deberta(c) => HeadLayout {
                pre: pre("pooler.dense", &c.pooler_hidden_act, c.pooler_dropout),
                out: "classifier",
                dropout: c.cls_dropout.unwrap_or(c.hidden_dropout_prob),
                d: c.hidden_size,
                init_range: c.initializer_range,
            },
            ModelConfig::DistilBert(c) => HeadLayout {
                pre: pre("pre_classifier", "relu", 0.0),
                out: "classifier",
                dropout: c.seq_classif_dropout,
                d: c.dim,
                init_range: c.initializer_range,
            },
            ModelConfig::T5(_) | ModelConfig::Llama(_) => return None,
        })
    }

    /// The head's top-level modules (PEFT's `modules_to_save`), in order.
    pub fn modules(&self) -> Vec<&'static str> {
        let top = |n: &'static str| n.split('.').next().unwrap_or(n);
        let mut v: Vec<&'static str> = self.pre.iter().map(|p| top(p.name)).collect();
        if !v.contains(&top(self.out)) {
            v.push(top(self.out));
        }
        v
    }

    /// Every head tensor (name, shape) for `num_labels`, in the order they are created.
    pub fn tensor_shapes(&self, num_labels: i64) -> Vec<(String, Vec<i64>)> {
        let d = self.d;
        let mut v = Vec::new();
        if let Some(p) = &self.pre {
            v.push((format!("{}.weight", p.name), vec![d, d]));
            v.push((format!("{}.bias", p.name), vec![d]));
        }
        v.push((format!("{}.weight", self.out), vec![num_labels, d]));
        v.push((format!("{}.bias", self.out), vec![num_labels]));
        v
    }
}

pub struct Head {
    pub layout: HeadLayout,
    /// The dense layer's (weight (d, d), bias (d)).
    pub pre: Option<(Tensor, Tensor)>,
    pub weight: Tensor, // (num_labels, d)
    pub bias: Tensor,   // (num_labels)
    /// The store entries of every head tensor, in [`HeadLayout::tensor_shapes`] order (a pass reads
    /// them there).
    pub entries: Vec<usize>,
}

impl Head {
    /// A fresh head: weights ~ N(0, init_range), biases 0 (as transformers initialises them).
    pub fn new(layout: HeadLayout, num_labels: i64, store: &mut ParamStore) -> Self {
        let opts = (Kind::Float, store.device());
        let first = store.len();
        let mut made = layout.tensor_shapes(num_labels).into_iter().map(|(name, shape)| {
            let t = match name.ends_with(".bias") {
                true => Tensor::zeros(shape.as_slice(), opts),
                false => Tensor::empty(shape.as_slice(), opts).normal_(0.0, layout.init_range),
            };
            store.add(&name, t)
        });
        Self::assemble(layout.clone(), first, &mut made)
    }

    /// The checkpoint's own head (e.g. a fixture saved by transformers).
    pub fn load(layout: HeadLayout, w: &Weights, num_labels: i64, store: &mut ParamStore) -> Result<Self> {
        let first = store.len();
        let mut made = Vec::new();
        for (name, shape) in layout.tensor_shapes(num_labels) {
            made.push(store.add(&name, w.get(&name, &shape)?));
        }
        Ok(Self::assemble(layout, first, &mut made.into_iter()))
    }

    /// The head over the tensors made in order, stored from entry `first` on.
    fn assemble(layout: HeadLayout, first: usize, t: &mut impl Iterator<Item = Tensor>) -> Self {
        let mut next = || t.next().unwrap_or_default();
        let pre = layout.pre.is_some().then(|| (next(), next()));
        let (weight, bias) = (next(), next());
        let count = 2 + 2 * pre.is_some() as usize;
        Head { layout, pre, weight, bias, entries: (first..first + count).collect() }
    }

    pub fn num_labels(&self) -> i64 {
        self.weight.size()[0]
    }

    /// Every head tensor under its name in the task model.
    pub fn tensors(&self) -> Vec<(String, &Tensor)> {
        let mut v = Vec::new();
        if let (Some(p), Some((w, b))) = (&self.layout.pre, &self.pre) {
            v.push((format!("{}.weight", p.name), w));
            v.push((format!("{}.bias", p.name), b));
        }
        v.push((format!("{}.weight", self.layout.out), &self.weight));
        v.push((format!("{}.bias", self.layout.out), &self.bias));
        v
    }

    /// Logits from the encoder's features (b, d) -> (b, num_labels).
    pub fn forward(&self, features: &Tensor, train: bool) -> Tensor {
        let x = match (&self.layout.pre, &self.pre) {
            (Some(p), Some((w, b))) => {
                activation(&p.act, &features.dropout(p.dropout, train).linear(w, Some(b)))
            }
            _ => features.shallow_clone(),
        };
        x.dropout(self.layout.dropout, train).linear(&self.weight, Some(&self.bias))
    }

    /// [`Head::forward`] with the parameters of the pass `ctx` reads (per replica in a replica pass: rows
    /// r b .. (r + 1) b of `features` through replica r's head), in fp32.
    pub fn forward_ctx(&self, features: &Tensor, ctx: &Ctx) -> Tensor {
        let features = features.to_kind(Kind::Float);
        let parts: Option<Vec<&Tensor>> =
            ctx.pass().and_then(|p| self.entries.iter().map(|&e| p.part(e)).collect());
        let Some(parts) = parts else { return self.forward(&features, ctx.train) };
        let (pre, out) = parts.split_at(parts.len() - 2);
        let x = match (&self.layout.pre, pre) {
            (Some(p), [w, b]) => activation(
                &p.act,
                &linear_replicas(&features.dropout(p.dropout, ctx.train), w, b, ctx.replicas()),
            ),
            _ => features,
        };
        linear_replicas(&x.dropout(self.layout.dropout, ctx.train), out[0], out[1], ctx.replicas())
    }
}

/// `x w^T + b`, or with replicas r: rows r b .. (r + 1) b of `x` (r b, d_in) through replica r's
/// weight (r, d_out, d_in) and bias (r, d_out).
fn linear_replicas(x: &Tensor, w: &Tensor, b: &Tensor, replicas: Option<i64>) -> Tensor {
    match replicas {
        None => pass_linear(x, w, b),
        Some(r) => pass_linear(&x.view([r, -1, x.size()[1]]), w, b).view([-1, w.size()[1]]),
    }
}
