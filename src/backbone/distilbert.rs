//! DistilBERT (transformers' DistilBertModel): learned absolute positions, no token types, post-LN
//! blocks `transformer.layer.N` with `attention.{q_lin,k_lin,v_lin,out_lin}`, `sa_layer_norm`,
//! `ffn.{lin1,lin2}`, `output_layer_norm` (eps 1e-12 whatever the config says, as in transformers). The
//! head of DistilBertForSequenceClassification (`pre_classifier` -> ReLU -> `classifier` on the first
//! token) is [`super::Head`].
use super::encoder::EncoderBackbone;
use super::encoder::{activation, fold, merge_heads, run_layers, split_heads};
use super::loader::{Role, Vb};
use super::sites::{LinearSite, NormSite};
use crate::delta::Ctx;
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;
use tch::{Kind, Tensor};

/// transformers builds every DistilBERT LayerNorm with eps 1e-12.
const EPS: f64 = 1e-12;

#[derive(Debug, Clone, Deserialize)]
pub struct DistilBertConfig {
    pub vocab_size: i64,
    pub dim: i64,
    pub n_layers: i64,
    pub n_heads: i64,
    pub hidden_dim: i64,
    #[serde(default = "super::config::default_act")]
    pub activation: String,
    #[serde(default = "super::config::default_dropout")]
    pub dropout: f64,
    #[serde(default = "super::config::default_dropout")]
    pub attention_dropout: f64,
    #[serde(default = "default_head_dropout")]
    pub seq_classif_dropout: f64,
    #[serde(default = "super::config::default_max_pos")]
    pub max_position_embeddings: i64,
    #[serde(default = "super::config::default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(skip)]
    pub walk_cache: super::arch::WalkCache,
}

fn default_head_dropout() -> f64 {
    0.2
}

impl DistilBertConfig {
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let cfg: DistilBertConfig = super::config::parse(text, path)?;
        super::config::check_encoder(path, cfg.dim, cfg.n_heads, &cfg.activation)?;
        Ok(cfg)
    }
}

struct Layer {
    q: LinearSite,
    k: LinearSite,
    v: LinearSite,
    out: LinearSite,
    sa_ln: NormSite,
    lin1: LinearSite,
    lin2: LinearSite,
    out_ln: NormSite,
}

pub struct DistilBert {
    pub cfg: DistilBertConfig,
    /// The activations' dtype (fp32, or bf16 with `--precision bf16`).
    act: Kind,
    word: Tensor,     // (vocab, d)
    position: Tensor, // (max_pos, d)
    emb_ln: NormSite,
    layers: Vec<Layer>,
}

impl DistilBert {
    pub fn load(vb: &Vb, cfg: &DistilBertConfig) -> Result<Self> {
        let (d, f) = (cfg.dim, cfg.hidden_dim);
        let emb = vb.pp("embeddings");
        let word = emb.matrix("word_embeddings.weight", &[cfg.vocab_size, d])?;
        let position = emb.matrix("position_embeddings.weight", &[cfg.max_position_embeddings, d])?;
        let emb_ln = emb.layer_norm("LayerNorm", d, EPS)?;
        let mut layers = Vec::new();
        for i in 0..cfg.n_layers {
            let l = vb.pp("transformer.layer").pp(i);
            let (attn, ffn) = (l.pp("attention"), l.pp("ffn"));
            layers.push(Layer {
                q: attn.linear("q_lin", d, d, true, Role::Site)?,
                k: attn.linear("k_lin", d, d, true, Role::Site)?,
                v: attn.linear("v_lin", d, d, true, Role::Site)?,
                out: attn.linear("out_lin", d, d, true, Role::BlockOutput)?,
                sa_ln: l.layer_norm("sa_layer_norm", d, EPS)?,
                lin1: ffn.linear("lin1", d, f, true, Role::Site)?,
                lin2: ffn.linear("lin2", f, d, true, Role::BlockOutput)?,
                out_ln: l.layer_norm("output_layer_norm", d, EPS)?,
            });
        }
        Ok(DistilBert { cfg: cfg.clone(), act: vb.act_kind(), word, position, emb_ln, layers })
    }

    fn layer(&self, l: &Layer, x: &Tensor, keep: &Tensor, ctx: &Ctx) -> Tensor {
        let h = self.cfg.n_heads;
        let attn_p = if ctx.train { self.cfg.attention_dropout } else { 0.0 };
        let q = split_heads(&l.q.forward(x, ctx), h);
        let k = split_heads(&l.k.forward(x, ctx), h);
        let v = split_heads(&l.v.forward(x, ctx), h);
        let a = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(keep), attn_p, false, None, false);
        // no dropout on the attention output (transformers' DistilBERT)
        let a = l.sa_ln.forward(&(l.out.forward(&merge_heads(&a), ctx) + x), ctx);
        let i = activation(&self.cfg.activation, &l.lin1.forward(&a, ctx));
        let o = l.lin2.forward(&i, ctx).dropout(self.cfg.dropout, ctx.train);
        l.out_ln.forward(&(o + &a), ctx)
    }
}

impl EncoderBackbone for DistilBert {
    fn encode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        _types: &Tensor,
        ctx: &Ctx,
        all_hidden: bool,
    ) -> Vec<Tensor> {
        let (b, t) = ids.size2().unwrap_or((1, 1));
        let emb = Tensor::embedding(&self.word, ids, -1, false, false) + self.position.narrow(0, 0, t);
        let emb = emb.to_kind(self.act); // fp32 activations from bf16 tables, or bf16 ones
        let x = self.emb_ln.forward(&emb, ctx).dropout(self.cfg.dropout, ctx.train);
        let keep = mask.to_kind(Kind::Bool).view([b, 1, 1, t]); // (b, 1, 1, t)
        run_layers(x, &self.layers, all_hidden, |l, x| self.layer(l, x, &keep, ctx))
    }

    fn features(&self, last: &Tensor, _ctx: &Ctx) -> Tensor {
        last.select(1, 0)
    }

    fn linear_sites(&self) -> Vec<&LinearSite> {
        self.layers.iter().flat_map(|l| [&l.q, &l.k, &l.v, &l.out, &l.lin1, &l.lin2]).collect()
    }

    fn norm_sites(&self) -> Vec<&NormSite> {
        std::iter::once(&self.emb_ln).chain(self.layers.iter().flat_map(|l| [&l.sa_ln, &l.out_ln])).collect()
    }

    fn folded_tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String> {
        let plain = vec![
            ("embeddings.word_embeddings.weight".to_string(), &self.word),
            ("embeddings.position_embeddings.weight".to_string(), &self.position),
        ];
        fold(plain, self.norm_sites(), self.linear_sites())
    }
}
