//! The task head of transformers' BertForSequenceClassification: pooled output -> dropout -> a new
//! classifier (num_labels; 1 for regression and for scoring each choice of a multiple-choice task).
use crate::backbone::weights::Weights;
use crate::delta::Ctx;
use crate::error::Result;
use crate::params::ParamStore;
use tch::{Kind, Tensor};

pub struct Head {
    pub weight: Tensor, // (num_labels, d)
    pub bias: Tensor,   // (num_labels)
    pub dropout: f64,
    /// The store entries of weight and bias (a pass reads them there).
    pub entries: (usize, usize),
}

impl Head {
    /// A fresh classifier: weight ~ N(0, init_range), bias 0 (as transformers initialises it).
    pub fn new(d: i64, num_labels: i64, init_range: f64, dropout: f64, store: &mut ParamStore) -> Self {
        let opts = (Kind::Float, store.device());
        let first = store.len();
        let weight =
            store.add("classifier.weight", Tensor::empty([num_labels, d], opts).normal_(0.0, init_range));
        let bias = store.add("classifier.bias", Tensor::zeros([num_labels], opts));
        Head { weight, bias, dropout, entries: (first, first + 1) }
    }

    /// The checkpoint's own classifier (e.g. a fixture saved by transformers).
    pub fn load(w: &Weights, d: i64, num_labels: i64, dropout: f64, store: &mut ParamStore) -> Result<Self> {
        let first = store.len();
        let weight = store.add("classifier.weight", w.get("classifier.weight", &[num_labels, d])?);
        let bias = store.add("classifier.bias", w.get("classifier.bias", &[num_labels])?);
        Ok(Head { weight, bias, dropout, entries: (first, first + 1) })
    }

    pub fn num_labels(&self) -> i64 {
        self.weight.size()[0]
    }

    pub fn forward(&self, pooled: &Tensor, train: bool) -> Tensor {
        pooled.dropout(self.dropout, train).linear(&self.weight, Some(&self.bias))
    }

    /// [`Head::forward`] with the parameters of the pass `ctx` reads (per replica in a replica pass: rows
    /// r b .. (r + 1) b of `pooled` through replica r's classifier), in fp32.
    pub fn forward_ctx(&self, pooled: &Tensor, ctx: &Ctx) -> Tensor {
        let pooled = pooled.to_kind(Kind::Float);
        let parts = ctx.pass().and_then(|p| Some((p.part(self.entries.0)?, p.part(self.entries.1)?)));
        let Some((w, b)) = parts else { return self.forward(&pooled, ctx.train) };
        let x = pooled.dropout(self.dropout, ctx.train);
        match ctx.replicas() {
            None => x.linear(w, Some(b)),
            Some(r) => {
                let d = x.size()[1];
                let xr = x.view([r, -1, d]); // (r, b, d)
                b.unsqueeze(-2).baddbmm(&xr, &w.transpose(-1, -2), 1.0, 1.0).view([-1, w.size()[1]])
            }
        }
    }
}
