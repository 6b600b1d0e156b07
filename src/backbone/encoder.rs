//! Any encoder family behind one type: [`Encoder`] holds a BERT / RoBERTa, MPNet, DeBERTa-v2 or
//! DistilBERT backbone and dispatches to it through [`EncoderBackbone`], so the model, the head, merge and
//! PEFT never match on the family. Also the pieces the families share (positions after the padding
//! index, additive attention masks, activations, folding deltas into plain tensors).
use super::arch::ModelConfig;
use super::loader::Vb;
use super::sites::{LinearSite, NormSite};
use super::{Bert, Deberta, DistilBert, Mpnet};
use crate::delta::Ctx;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// What every encoder family provides.
pub trait EncoderBackbone {
    /// The embedding output, then each layer's output when `all_hidden`; always the last hidden state.
    /// ids, mask, types: (b, t) int64 (families without token types ignore `types`).
    fn encode(&self, ids: &Tensor, mask: &Tensor, types: &Tensor, ctx: &Ctx, all_hidden: bool)
        -> Vec<Tensor>;
    /// What the task head reads from the last hidden state (b, t, d): BERT's pooled output, the first
    /// token for the others. (b, d).
    fn features(&self, last: &Tensor, ctx: &Ctx) -> Tensor;
    /// Every Linear delta site in model order.
    fn linear_sites(&self) -> Vec<&LinearSite>;
    /// Every LayerNorm delta site in model order.
    fn norm_sites(&self) -> Vec<&NormSite>;
    /// Every tensor of the task model's backbone under its name in the bare model, linear deltas folded
    /// in (gates at 1); `Err(site)` names a site whose deltas cannot be folded.
    fn folded_tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String>;
}

/// A loaded encoder of any supported family.
pub enum Encoder {
    /// BERT, RoBERTa and XLM-RoBERTa.
    Bert(Bert),
    Mpnet(Mpnet),
    Deberta(Box<Deberta>),
    DistilBert(DistilBert),
}

impl Encoder {
    /// The encoder `cfg` describes, read through `vb`; an error for a model that is not an encoder.
    pub fn load(vb: &Vb, cfg: &ModelConfig) -> Result<Encoder> {
        Ok(match cfg {
            ModelConfig::Bert(c) => Encoder::Bert(Bert::load(vb, c)?),
            ModelConfig::Mpnet(c) => Encoder::Mpnet(Mpnet::load(vb, c)?),
            ModelConfig::Deberta(c) => Encoder::Deberta(Box::new(Deberta::load(vb, c)?)),
            ModelConfig::DistilBert(c) => Encoder::DistilBert(DistilBert::load(vb, c)?),
            ModelConfig::T5(_) => return Err(Error::Msg("T5 is an encoder-decoder, not an encoder".into())),
            ModelConfig::Llama(_) => {
                return Err(Error::Msg("a Llama-family model is a decoder, not an encoder".into()))
            }
        })
    }

    fn inner(&self) -> &dyn EncoderBackbone {
        match self {
            Encoder::Bert(e) => e,
            Encoder::Mpnet(e) => e,
            Encoder::Deberta(e) => e.as_ref(),
            Encoder::DistilBert(e) => e,
        }
    }

    /// See [`EncoderBackbone::encode`].
    pub fn encode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        types: &Tensor,
        ctx: &Ctx,
        all_hidden: bool,
    ) -> Vec<Tensor> {
        self.inner().encode(ids, mask, types, ctx, all_hidden)
    }

    /// See [`EncoderBackbone::features`].
    pub fn features(&self, last: &Tensor, ctx: &Ctx) -> Tensor {
        self.inner().features(last, ctx)
    }

    pub fn linear_sites(&self) -> Vec<&LinearSite> {
        self.inner().linear_sites()
    }

    pub fn norm_sites(&self) -> Vec<&NormSite> {
        self.inner().norm_sites()
    }

    /// See [`EncoderBackbone::folded_tensors`].
    pub fn folded_tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String> {
        self.inner().folded_tensors()
    }

    /// The BERT / RoBERTa encoder, if it is one.
    pub fn as_bert(&self) -> Option<&Bert> {
        match self {
            Encoder::Bert(b) => Some(b),
            _ => None,
        }
    }
}

impl EncoderBackbone for Bert {
    fn encode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        types: &Tensor,
        ctx: &Ctx,
        all_hidden: bool,
    ) -> Vec<Tensor> {
        Bert::encode(self, ids, mask, types, ctx, all_hidden)
    }
    fn features(&self, last: &Tensor, ctx: &Ctx) -> Tensor {
        Bert::features(self, last, ctx)
    }
    fn linear_sites(&self) -> Vec<&LinearSite> {
        Bert::linear_sites(self)
    }
    fn norm_sites(&self) -> Vec<&NormSite> {
        Bert::norm_sites(self)
    }
    fn folded_tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String> {
        Bert::folded_tensors(self)
    }
}

/// Positions counted from the padding index as fairseq / RoBERTa / MPNet do: pad + 1, pad + 2, ... on
/// real tokens, `pad` on padding. Read from the attention mask (the same as from the ids whenever the
/// padding id marks exactly the padded positions, and independent of the id a batch pads with).
/// (b, t) int64.
pub fn padded_positions(mask: &Tensor, pad: i64) -> Tensor {
    let m = mask.to_kind(Kind::Int64);
    m.cumsum(1, Kind::Int64) * &m + pad
}

/// 0 where `keep`, the smallest fp32 value elsewhere (transformers' additive mask), in `kind`.
pub fn additive_mask(keep: &Tensor, kind: Kind) -> Tensor {
    let zeros = Tensor::zeros([1], (kind, keep.device()));
    // the kind's most negative finite value (fp32's rounds to -inf in bf16)
    let lowest = if kind == Kind::BFloat16 { -3.3895313892515355e38 } else { f32::MIN as f64 };
    zeros.masked_fill(&keep.logical_not(), lowest)
}

/// An activation by its transformers name (`gelu` is the exact erf form).
pub fn activation(name: &str, x: &Tensor) -> Tensor {
    match name {
        "relu" => x.relu(),
        "gelu_new" | "gelu_pytorch_tanh" => x.gelu("tanh"),
        "tanh" => x.tanh(),
        _ => x.gelu("none"),
    }
}

/// Whether [`activation`] knows `name`.
pub fn known_activation(name: &str) -> bool {
    matches!(name, "gelu" | "gelu_new" | "relu" | "gelu_pytorch_tanh" | "tanh")
}

/// Runs `step` over the layers from the embedding output `x`: every hidden state (the embedding output
/// first) when `all_hidden`, else the last only.
pub fn run_layers<L>(
    x: Tensor,
    layers: &[L],
    all_hidden: bool,
    step: impl Fn(&L, &Tensor) -> Tensor,
) -> Vec<Tensor> {
    let mut x = x;
    let mut hidden = if all_hidden { vec![x.shallow_clone()] } else { Vec::new() };
    for l in layers {
        x = step(l, &x);
        if all_hidden {
            hidden.push(x.shallow_clone());
        }
    }
    if !all_hidden {
        hidden.push(x);
    }
    hidden
}

/// (b, t, h * dh) -> (b, h, t, dh).
pub fn split_heads(y: &Tensor, heads: i64) -> Tensor {
    let (b, t, d) = y.size3().unwrap_or((1, 1, 1));
    y.view([b, t, heads, d / heads]).transpose(1, 2)
}

/// (b, h, t, dh) -> (b, t, h * dh).
pub fn merge_heads(a: &Tensor) -> Tensor {
    let (b, h, t, dh) = a.size4().unwrap_or((1, 1, 1, 1));
    a.transpose(1, 2).reshape([b, t, h * dh])
}

/// Plain tensors (embedding tables, position-bias tables) followed by every norm and Linear site folded
/// (weight and bias under the site's name); `Err(site)` for a site holding an adapter.
pub fn fold(
    plain: Vec<(String, &Tensor)>,
    norms: Vec<&NormSite>,
    linears: Vec<&LinearSite>,
) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let mut out: Vec<(String, Tensor)> =
        plain.into_iter().map(|(k, t)| (k, t.detach().to_kind(Kind::Float))).collect();
    for s in norms {
        let (w, b) = s.folded().ok_or_else(|| s.name.clone())?;
        out.push((format!("{}.weight", s.name), w));
        out.push((format!("{}.bias", s.name), b));
    }
    for s in linears {
        let (w, b) = s.folded().ok_or_else(|| s.name.clone())?;
        out.push((format!("{}.weight", s.name), w));
        match &s.bias {
            Some(_) => out.push((format!("{}.bias", s.name), b)),
            // a bias delta on a Linear the task model has no bias for cannot be written
            None if s.deltas.iter().any(|d| d.spec.kind == crate::delta::DeltaKind::Bitfit) => {
                return Err(s.name.clone())
            }
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_start_after_the_padding_index() {
        let mask = Tensor::from_slice(&[1i64, 1, 1, 0, 1, 1, 0, 0]).view([2, 4]);
        let p = Vec::<i64>::try_from(padded_positions(&mask, 1).view([-1])).unwrap();
        assert_eq!(p, vec![2, 3, 4, 1, 2, 3, 1, 1]);
    }
}
