//! Our BERT encoder (embeddings, self-attention with padding mask, token types, FFN, post-LayerNorm,
//! pooler). Module paths are the checkpoint's own (`encoder.layer.3.attention.self.query`).
use super::config::BertConfig;
use super::sites::{LinearSite, NormSite, SiteFactory};
use super::weights::Weights;
use crate::delta::{Ctx, SiteShape};
use crate::error::Result;
use tch::{Kind, Tensor};

struct Layer {
    query: LinearSite,
    key: LinearSite,
    value: LinearSite,
    attn_out: LinearSite,
    attn_ln: NormSite,
    inter: LinearSite,
    out: LinearSite,
    out_ln: NormSite,
}

pub struct Bert {
    pub cfg: BertConfig,
    word: Tensor,     // (vocab, d)
    position: Tensor, // (max_pos, d)
    token_type: Tensor,
    emb_ln: NormSite,
    layers: Vec<Layer>,
    pooler: LinearSite,
    backbone_params: i64,
}

/// Every delta site of a BERT with this config, in model order (the pooler is not a site).
pub fn bert_sites(cfg: &BertConfig) -> Vec<(String, SiteShape)> {
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    let lin = |d_in, d_out, block| SiteShape::Linear { d_in, d_out, block };
    let mut sites = vec![("embeddings.LayerNorm".to_string(), SiteShape::Norm { d })];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        sites.extend([
            (format!("{p}.attention.self.query"), lin(d, d, false)),
            (format!("{p}.attention.self.key"), lin(d, d, false)),
            (format!("{p}.attention.self.value"), lin(d, d, false)),
            (format!("{p}.attention.output.dense"), lin(d, d, true)),
            (format!("{p}.attention.output.LayerNorm"), SiteShape::Norm { d }),
            (format!("{p}.intermediate.dense"), lin(d, f, false)),
            (format!("{p}.output.dense"), lin(f, d, true)),
            (format!("{p}.output.LayerNorm"), SiteShape::Norm { d }),
        ]);
    }
    sites
}

/// Parameter count of the backbone a config describes (embeddings, layers, pooler).
pub fn bert_param_count(cfg: &BertConfig) -> i64 {
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    let emb = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * d + 2 * d;
    let layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d;
    emb + cfg.num_hidden_layers * layer + d * d + d
}

struct Loader<'a, 'b> {
    w: &'a Weights,
    factory: &'a mut SiteFactory<'b>,
    full: bool,
    count: i64,
    eps: f64,
}

impl Loader<'_, '_> {
    fn tensor(&mut self, key: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.w.get(key, shape)?;
        self.count += t.numel() as i64;
        // full fine-tuning trains a private copy: the loaded weights stay as read
        Ok(if self.full { self.factory.store.add(key, t.to_kind(Kind::Float).copy()) } else { t })
    }

    /// A frozen matrix (embedding table, linear weight or bias) in the weights' frozen dtype.
    fn matrix(&mut self, key: &str, shape: &[i64]) -> Result<Tensor> {
        if self.full {
            return self.tensor(key, shape);
        }
        let t = self.w.get_frozen(key, shape)?;
        self.count += t.numel() as i64;
        Ok(t)
    }

    fn linear(&mut self, name: &str, shape: SiteShape) -> Result<LinearSite> {
        let SiteShape::Linear { d_in, d_out, .. } = shape else {
            return Err(crate::error::Error::site(name, "expected a Linear site"));
        };
        let weight = self.matrix(&format!("{name}.weight"), &[d_out, d_in])?;
        let bias = Some(self.matrix(&format!("{name}.bias"), &[d_out])?);
        let deltas = self.factory.deltas(name, shape)?;
        Ok(LinearSite { name: name.into(), weight, bias, shape, deltas })
    }

    fn norm(&mut self, name: &str, d: i64) -> Result<NormSite> {
        // older checkpoints name LayerNorm parameters gamma/beta
        let (wk, bk) =
            if self.w.contains(&format!("{name}.gamma")) { ("gamma", "beta") } else { ("weight", "bias") };
        let weight = self.tensor(&format!("{name}.{wk}"), &[d])?;
        let bias = self.tensor(&format!("{name}.{bk}"), &[d])?;
        let deltas = self.factory.deltas(name, SiteShape::Norm { d })?;
        Ok(NormSite { name: name.into(), weight, bias, eps: self.eps, deltas })
    }
}

impl Bert {
    /// Loads the frozen backbone and asks `factory` what to attach at every site. With `full`, every
    /// backbone tensor becomes trainable in the factory's store (full fine-tuning).
    pub fn load(weights: &Weights, cfg: &BertConfig, factory: &mut SiteFactory, full: bool) -> Result<Self> {
        let d = cfg.hidden_size;
        let mut l = Loader { w: weights, factory, full, count: 0, eps: cfg.layer_norm_eps };
        let word = l.matrix("embeddings.word_embeddings.weight", &[cfg.vocab_size, d])?;
        let position =
            l.matrix("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, d])?;
        let token_type = l.matrix("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, d])?;
        let emb_ln = l.norm("embeddings.LayerNorm", d)?;
        let sites = bert_sites(cfg);
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers as usize {
            let s = &sites[1 + 8 * i..9 + 8 * i];
            layers.push(Layer {
                query: l.linear(&s[0].0, s[0].1)?,
                key: l.linear(&s[1].0, s[1].1)?,
                value: l.linear(&s[2].0, s[2].1)?,
                attn_out: l.linear(&s[3].0, s[3].1)?,
                attn_ln: l.norm(&s[4].0, d)?,
                inter: l.linear(&s[5].0, s[5].1)?,
                out: l.linear(&s[6].0, s[6].1)?,
                out_ln: l.norm(&s[7].0, d)?,
            });
        }
        let pooler = l.linear("pooler.dense", SiteShape::Linear { d_in: d, d_out: d, block: false })?;
        let backbone_params = l.count;
        Ok(Bert { cfg: cfg.clone(), word, position, token_type, emb_ln, layers, pooler, backbone_params })
    }

    pub fn backbone_params(&self) -> i64 {
        self.backbone_params
    }

    fn act(&self, x: &Tensor) -> Tensor {
        match self.cfg.hidden_act.as_str() {
            "relu" => x.relu(),
            "gelu_new" | "gelu_pytorch_tanh" => x.gelu("tanh"),
            _ => x.gelu("none"),
        }
    }

    /// Embedding output, then each layer's output when `all_hidden`; always the last hidden state.
    /// ids, mask, types: (b, t) int64.
    pub fn encode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        types: &Tensor,
        ctx: &Ctx,
        all_hidden: bool,
    ) -> Vec<Tensor> {
        let (b, t) = ids.size2().unwrap_or((1, 1));
        let pdrop = self.cfg.hidden_dropout_prob;
        let pos = self.position.narrow(0, 0, t); // (t, d)
        let emb = Tensor::embedding(&self.word, ids, -1, false, false)
            + pos
            + Tensor::embedding(&self.token_type, types, -1, false, false); // (b, t, d)
        let emb = emb.to_kind(Kind::Float); // a no-op unless the tables are bf16
        let mut x = self.emb_ln.forward(&emb, ctx).dropout(pdrop, ctx.train);
        let keep = mask.to_kind(tch::Kind::Bool).view([b, 1, 1, t]); // (b, 1, 1, t)
        let (h, dh) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let attn_p = if ctx.train { self.cfg.attention_probs_dropout_prob } else { 0.0 };
        let mut hidden = Vec::new();
        if all_hidden {
            hidden.push(x.shallow_clone());
        }
        for layer in &self.layers {
            let split = |y: Tensor| y.view([b, t, h, dh]).transpose(1, 2); // (b, h, t, dh)
            let q = split(layer.query.forward(&x, ctx));
            let k = split(layer.key.forward(&x, ctx));
            let v = split(layer.value.forward(&x, ctx));
            let a = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&keep), attn_p, false, None, false);
            let a = a.transpose(1, 2).reshape([b, t, h * dh]); // (b, t, d)
            let a = layer.attn_out.forward(&a, ctx).dropout(pdrop, ctx.train);
            let a = layer.attn_ln.forward(&(a + &x), ctx);
            let i = self.act(&layer.inter.forward(&a, ctx));
            let o = layer.out.forward(&i, ctx).dropout(pdrop, ctx.train);
            x = layer.out_ln.forward(&(o + &a), ctx);
            if all_hidden {
                hidden.push(x.shallow_clone());
            }
        }
        if !all_hidden {
            hidden.push(x);
        }
        hidden
    }

    /// tanh(dense(first token)): (b, t, d) -> (b, d).
    pub fn pool(&self, last: &Tensor, ctx: &Ctx) -> Tensor {
        self.pooler.forward(&last.select(1, 0), ctx).tanh()
    }

    /// Every site in model order, for inspection and folding.
    pub fn linear_sites(&self) -> Vec<&LinearSite> {
        let mut v = Vec::new();
        for l in &self.layers {
            v.extend([&l.query, &l.key, &l.value, &l.attn_out, &l.inter, &l.out]);
        }
        v
    }

    pub fn norm_sites(&self) -> Vec<&NormSite> {
        let mut v = vec![&self.emb_ln];
        for l in &self.layers {
            v.extend([&l.attn_ln, &l.out_ln]);
        }
        v
    }

    /// All backbone tensors under their checkpoint names, with linear deltas folded in (gates at 1).
    /// `None` names a site whose deltas cannot be folded.
    pub fn folded_tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String> {
        let mut out = vec![
            ("embeddings.word_embeddings.weight".to_string(), self.word.detach().to_kind(Kind::Float)),
            (
                "embeddings.position_embeddings.weight".to_string(),
                self.position.detach().to_kind(Kind::Float),
            ),
            (
                "embeddings.token_type_embeddings.weight".to_string(),
                self.token_type.detach().to_kind(Kind::Float),
            ),
        ];
        for s in self.norm_sites() {
            let (w, b) = s.folded().ok_or_else(|| s.name.clone())?;
            out.push((format!("{}.weight", s.name), w));
            out.push((format!("{}.bias", s.name), b));
        }
        for s in self.linear_sites().into_iter().chain([&self.pooler]) {
            let (w, b) = s.folded().ok_or_else(|| s.name.clone())?;
            out.push((format!("{}.weight", s.name), w));
            out.push((format!("{}.bias", s.name), b));
        }
        Ok(out)
    }
}
