//! The task head of transformers' BertForSequenceClassification: pooled output -> dropout -> a new
//! classifier (num_labels; 1 for regression and for scoring each choice of a multiple-choice task).
use crate::backbone::weights::Weights;
use crate::error::Result;
use crate::params::ParamStore;
use tch::{Kind, Tensor};

pub struct Head {
    pub weight: Tensor, // (num_labels, d)
    pub bias: Tensor,   // (num_labels)
    pub dropout: f64,
}

impl Head {
    /// A fresh classifier: weight ~ N(0, init_range), bias 0 (as transformers initialises it).
    pub fn new(d: i64, num_labels: i64, init_range: f64, dropout: f64, store: &mut ParamStore) -> Self {
        let opts = (Kind::Float, store.device());
        let weight =
            store.add("classifier.weight", Tensor::empty([num_labels, d], opts).normal_(0.0, init_range));
        let bias = store.add("classifier.bias", Tensor::zeros([num_labels], opts));
        Head { weight, bias, dropout }
    }

    /// The checkpoint's own classifier (e.g. a fixture saved by transformers).
    pub fn load(w: &Weights, d: i64, num_labels: i64, dropout: f64, store: &mut ParamStore) -> Result<Self> {
        let weight = store.add("classifier.weight", w.get("classifier.weight", &[num_labels, d])?);
        let bias = store.add("classifier.bias", w.get("classifier.bias", &[num_labels])?);
        Ok(Head { weight, bias, dropout })
    }

    pub fn num_labels(&self) -> i64 {
        self.weight.size()[0]
    }

    pub fn forward(&self, pooled: &Tensor, train: bool) -> Tensor {
        pooled.dropout(self.dropout, train).linear(&self.weight, Some(&self.bias))
    }
}
