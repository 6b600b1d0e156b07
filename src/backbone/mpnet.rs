//! MPNet (transformers' MPNetModel, e.g. sentence-transformers' all-mpnet-base-v2): BERT-like post-LN
//! blocks with `attention.attn.{q,k,v,o}`, absolute positions counted from the padding index (1, as
//! RoBERTa), and one bucketed relative position bias (`encoder.relative_attention_bias`, T5's bucketing)
//! shared by every layer and added to its attention scores. The task head of
//! MPNetForSequenceClassification reads the first token (dense -> tanh -> out_proj: [`super::Head`]);
//! a checkpoint's pooler is read and counted in the backbone, never used nor trained (not even by full
//! fine-tuning: the task model has none).
use super::encoder::{activation, additive_mask, fold, merge_heads, padded_positions};
use super::encoder::{run_layers, split_heads, EncoderBackbone};
use super::loader::{Role, Vb};
use super::sites::{LinearSite, NormSite};
use crate::delta::Ctx;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;
use tch::{Kind, Tensor};

/// MPNet's padding index: transformers fixes it at 1 whatever the config says.
pub const MPNET_PAD: i64 = 1;
/// transformers always buckets relative positions into 32 buckets up to distance 128 (the arguments'
/// defaults), whatever `relative_attention_num_buckets` says; the table must have at least 32 rows.
const BUCKETS: i64 = 32;
const MAX_DISTANCE: i64 = 128;

#[derive(Debug, Clone, Deserialize)]
pub struct MpnetConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "super::config::default_act")]
    pub hidden_act: String,
    #[serde(default = "super::config::default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "super::config::default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "super::config::default_max_pos")]
    pub max_position_embeddings: i64,
    #[serde(default = "super::config::default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: i64,
    #[serde(default = "super::config::default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    /// Whether the checkpoint has a pooler (MPNetModel's; the task model has none): set from the
    /// checkpoint beside config.json, assumed otherwise (hub checkpoints of MPNetModel have one).
    #[serde(skip, default = "super::config::yes")]
    pub pooler: bool,
    #[serde(skip)]
    pub walk_cache: super::arch::WalkCache,
}

fn default_buckets() -> i64 {
    32
}

impl MpnetConfig {
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg: MpnetConfig = super::config::parse(text, path)?;
        super::config::check_encoder(path, cfg.hidden_size, cfg.num_attention_heads, &cfg.hidden_act)?;
        if cfg.relative_attention_num_buckets < BUCKETS {
            return Err(Error::file(
                path,
                format!(
                    "relative_attention_num_buckets {} is below 32, the buckets transformers' MPNet always uses",
                    cfg.relative_attention_num_buckets
                ),
            ));
        }
        Ok(cfg)
    }

    /// The longest input the position table holds (positions start at the padding index + 1).
    pub fn max_tokens(&self) -> i64 {
        self.max_position_embeddings - MPNET_PAD - 1
    }
}

struct Layer {
    q: LinearSite,
    k: LinearSite,
    v: LinearSite,
    o: LinearSite,
    attn_ln: NormSite,
    inter: LinearSite,
    out: LinearSite,
    out_ln: NormSite,
}

pub struct Mpnet {
    pub cfg: MpnetConfig,
    /// The activations' dtype (fp32, or bf16 with `--precision bf16`).
    act: Kind,
    word: Tensor,          // (vocab, d)
    position: Tensor,      // (max_pos, d)
    relative_bias: Tensor, // (buckets, heads)
    emb_ln: NormSite,
    layers: Vec<Layer>,
}

impl Mpnet {
    pub fn load(vb: &Vb, cfg: &MpnetConfig) -> Result<Self> {
        let (d, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let word = emb.matrix("word_embeddings.weight", &[cfg.vocab_size, d])?;
        let position = emb.matrix("position_embeddings.weight", &[cfg.max_position_embeddings, d])?;
        let emb_ln = emb.layer_norm("LayerNorm", d, eps)?;
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp("encoder.layer").pp(i);
            let attn = l.pp("attention.attn");
            layers.push(Layer {
                q: attn.linear("q", d, d, true, Role::Site)?,
                k: attn.linear("k", d, d, true, Role::Site)?,
                v: attn.linear("v", d, d, true, Role::Site)?,
                o: attn.linear("o", d, d, true, Role::BlockOutput)?,
                attn_ln: l.pp("attention").layer_norm("LayerNorm", d, eps)?,
                inter: l.pp("intermediate").linear("dense", d, f, true, Role::Site)?,
                out: l.pp("output").linear("dense", f, d, true, Role::BlockOutput)?,
                out_ln: l.pp("output").layer_norm("LayerNorm", d, eps)?,
            });
        }
        let shape = [cfg.relative_attention_num_buckets, cfg.num_attention_heads];
        let relative_bias = vb.pp("encoder").tensor("relative_attention_bias.weight", &shape)?;
        if cfg.pooler {
            vb.pp("pooler").unused_linear("dense", d)?;
        }
        Ok(Mpnet { cfg: cfg.clone(), act: vb.act_kind(), word, position, relative_bias, emb_ln, layers })
    }

    /// The bias every layer adds to its scores: (1, heads, t, t).
    fn position_bias(&self, t: i64) -> Tensor {
        let bucket = relative_bucket(t, self.relative_bias.device()); // (t, t)
        let values = Tensor::embedding(&self.relative_bias, &bucket, -1, false, false); // (t, t, h)
        values.permute([2, 0, 1]).unsqueeze(0)
    }

    fn layer(&self, l: &Layer, x: &Tensor, scores_bias: &Tensor, ctx: &Ctx) -> Tensor {
        let (h, pdrop) = (self.cfg.num_attention_heads, self.cfg.hidden_dropout_prob);
        let attn_p = if ctx.train { self.cfg.attention_probs_dropout_prob } else { 0.0 };
        let q = split_heads(&l.q.forward(x, ctx), h);
        let k = split_heads(&l.k.forward(x, ctx), h);
        let v = split_heads(&l.v.forward(x, ctx), h);
        let a =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(scores_bias), attn_p, false, None, false);
        let a = l.o.forward(&merge_heads(&a), ctx).dropout(pdrop, ctx.train);
        let a = l.attn_ln.forward(&(a + x), ctx);
        let i = activation(&self.cfg.hidden_act, &l.inter.forward(&a, ctx));
        let o = l.out.forward(&i, ctx).dropout(pdrop, ctx.train);
        l.out_ln.forward(&(o + &a), ctx)
    }
}

impl EncoderBackbone for Mpnet {
    fn encode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        _types: &Tensor,
        ctx: &Ctx,
        all_hidden: bool,
    ) -> Vec<Tensor> {
        let (b, t) = ids.size2().unwrap_or((1, 1));
        let pos = padded_positions(mask, MPNET_PAD); // (b, t)
        let emb = Tensor::embedding(&self.word, ids, -1, false, false)
            + Tensor::embedding(&self.position, &pos, -1, false, false); // (b, t, d)
        let emb = emb.to_kind(self.act); // fp32 activations from bf16 tables, or bf16 ones
        let x = self.emb_ln.forward(&emb, ctx).dropout(self.cfg.hidden_dropout_prob, ctx.train);
        let keep = mask.to_kind(Kind::Bool).view([b, 1, 1, t]); // (b, 1, 1, t)
        let scores_bias = self.position_bias(t).to_kind(self.act) + additive_mask(&keep, self.act); // (b, h, t, t)
        run_layers(x, &self.layers, all_hidden, |l, x| self.layer(l, x, &scores_bias, ctx))
    }

    fn features(&self, last: &Tensor, _ctx: &Ctx) -> Tensor {
        last.select(1, 0)
    }

    fn linear_sites(&self) -> Vec<&LinearSite> {
        self.layers.iter().flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.inter, &l.out]).collect()
    }

    fn norm_sites(&self) -> Vec<&NormSite> {
        std::iter::once(&self.emb_ln)
            .chain(self.layers.iter().flat_map(|l| [&l.attn_ln, &l.out_ln]))
            .collect()
    }

    /// MPNetForSequenceClassification's backbone: no pooler.
    fn folded_tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String> {
        let plain = vec![
            ("embeddings.word_embeddings.weight".to_string(), &self.word),
            ("embeddings.position_embeddings.weight".to_string(), &self.position),
            ("encoder.relative_attention_bias.weight".to_string(), &self.relative_bias),
        ];
        fold(plain, self.norm_sites(), self.linear_sites())
    }
}

/// transformers' `MPNetEncoder.relative_position_bucket` of every (query i, key j) pair, with the same
/// fp32 operations (so that distances at bucket boundaries land where they do there): (t, t) int64.
fn relative_bucket(t: i64, device: tch::Device) -> Tensor {
    let ar = Tensor::arange(t, (Kind::Int64, device));
    let n = ar.unsqueeze(1) - ar.unsqueeze(0); // i - j = -(memory - context)
    let half = BUCKETS / 2;
    let ret = n.lt(0).to_kind(Kind::Int64) * half;
    let n = n.abs();
    let max_exact = half / 2;
    let large = (n.to_kind(Kind::Float) / max_exact).log() / ((MAX_DISTANCE / max_exact) as f64).ln()
        * (half - max_exact);
    let large = (large.to_kind(Kind::Int64) + max_exact).clamp_max(half - 1);
    ret + n.where_self(&n.lt(max_exact), &large)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of transformers' bucketing (torch 2.11, CPU) for query 0 against keys 0..=130 and the
    /// reverse direction.
    #[test]
    fn buckets_match_transformers() {
        let b = relative_bucket(131, tch::Device::Cpu);
        let row = Vec::<i64>::try_from(b.get(0)).unwrap();
        let want = [0, 17, 18, 19, 20, 21, 22, 23, 24, 24, 24, 24, 25, 25, 25, 25, 26, 26, 26, 26];
        assert_eq!(&row[..20], &want);
        assert_eq!(row[130], 31);
        let col = Vec::<i64>::try_from(b.select(1, 0)).unwrap();
        let want: Vec<i64> = want.iter().map(|&x| if x > 16 { x - 16 } else { x }).collect();
        assert_eq!(&col[..20], &want[..]);
        assert_eq!(col[130], 15);
    }
}
