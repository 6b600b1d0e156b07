//! DeBERTa-v2 / v3 (transformers' DebertaV2Model): post-LN BERT-like blocks with disentangled
//! attention. Scores are content-to-content plus content-to-position (c2p: queries against the relative
//! position embeddings seen through the keys' projection) and position-to-content (p2c), each scaled by
//! sqrt(head_dim x (1 + number of relative terms)); relative distances are log-bucketed
//! (`position_buckets`); the relative embeddings (`encoder.rel_embeddings`) pass the encoder's
//! LayerNorm (a delta site) and, with `share_att_key`, every layer's own query_proj / key_proj, so deltas
//! there act on the positional terms too. The embedding output is zeroed at padded positions. The head of
//! DebertaV2ForSequenceClassification (ContextPooler `pooler.dense` + `classifier`) is [`super::Head`].
pub use super::deberta_config::DebertaConfig;
use super::encoder::{
    activation, additive_mask, fold, merge_heads, run_layers, split_heads, EncoderBackbone,
};
use super::loader::{Role, Vb};
use super::sites::{LinearSite, NormSite};
use crate::delta::Ctx;
use crate::error::Result;
use tch::{Kind, Tensor};

struct Layer {
    query: LinearSite,
    key: LinearSite,
    value: LinearSite,
    /// Without `share_att_key`: the projections of the relative embeddings (c2p, p2c).
    pos_key: Option<LinearSite>,
    pos_query: Option<LinearSite>,
    attn_out: LinearSite,
    attn_ln: NormSite,
    inter: LinearSite,
    out: LinearSite,
    out_ln: NormSite,
}

struct Embeddings {
    word: Tensor,               // (vocab, e)
    position: Option<Tensor>,   // (max_pos, e) with position_biased_input
    token_type: Option<Tensor>, // (types, e) when type_vocab_size > 0
    proj: Option<LinearSite>,   // e -> d when embedding_size != hidden_size
    ln: NormSite,
}

pub struct Deberta {
    pub cfg: DebertaConfig,
    /// The activations' dtype (fp32, or bf16 with `--precision bf16`).
    act: Kind,
    emb: Embeddings,
    rel_embeddings: Option<Tensor>, // (2 span, d)
    rel_ln: Option<NormSite>,
    layers: Vec<Layer>,
}

fn load_embeddings(vb: &Vb, cfg: &DebertaConfig) -> Result<Embeddings> {
    let (e, d) = (cfg.embedding_dim(), cfg.hidden_size);
    let vb = vb.pp("embeddings");
    let word = vb.matrix("word_embeddings.weight", &[cfg.vocab_size, e])?;
    let position = match cfg.position_biased_input {
        true => Some(vb.matrix("position_embeddings.weight", &[cfg.max_position_embeddings, e])?),
        false => None,
    };
    let token_type = match cfg.type_vocab_size > 0 {
        true => Some(vb.matrix("token_type_embeddings.weight", &[cfg.type_vocab_size, e])?),
        false => None,
    };
    let proj = match e != d {
        true => Some(vb.linear("embed_proj", e, d, false, Role::Frozen)?),
        false => None,
    };
    Ok(Embeddings {
        word,
        position,
        token_type,
        proj,
        ln: vb.layer_norm("LayerNorm", d, cfg.layer_norm_eps)?,
    })
}

fn load_layer(l: &Vb, cfg: &DebertaConfig) -> Result<Layer> {
    let (d, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
    let attn = l.pp("attention.self");
    let own = cfg.relative_attention && !cfg.share_att_key;
    let pos_key = match own && cfg.has("c2p") {
        true => Some(attn.linear("pos_key_proj", d, d, true, Role::Frozen)?),
        false => None,
    };
    let pos_query = match own && cfg.has("p2c") {
        true => Some(attn.linear("pos_query_proj", d, d, true, Role::Frozen)?),
        false => None,
    };
    Ok(Layer {
        query: attn.linear("query_proj", d, d, true, Role::Site)?,
        key: attn.linear("key_proj", d, d, true, Role::Site)?,
        value: attn.linear("value_proj", d, d, true, Role::Site)?,
        pos_key,
        pos_query,
        attn_out: l.pp("attention.output").linear("dense", d, d, true, Role::BlockOutput)?,
        attn_ln: l.pp("attention.output").layer_norm("LayerNorm", d, eps)?,
        inter: l.pp("intermediate").linear("dense", d, f, true, Role::Site)?,
        out: l.pp("output").linear("dense", f, d, true, Role::BlockOutput)?,
        out_ln: l.pp("output").layer_norm("LayerNorm", d, eps)?,
    })
}

/// What every layer's attention shares in one forward pass.
struct Shared {
    /// 0 where query and key are both real tokens, the smallest fp32 elsewhere: (b, 1, t, t).
    mask: Tensor,
    /// Bucketed relative position of query i to key j: (t, t) int64.
    rel_pos: Tensor,
    /// The (normed) relative embeddings, first 2 span rows: (1, 2 span, d).
    rel: Option<Tensor>,
}

impl Deberta {
    pub fn load(vb: &Vb, cfg: &DebertaConfig) -> Result<Self> {
        let emb = load_embeddings(vb, cfg)?;
        let enc = vb.pp("encoder");
        let rel_embeddings = match cfg.relative_attention {
            true => Some(enc.matrix("rel_embeddings.weight", &[2 * cfg.att_span(), cfg.hidden_size])?),
            false => None,
        };
        let rel_ln = match cfg.norm_rel() {
            true => Some(enc.layer_norm("LayerNorm", cfg.hidden_size, cfg.layer_norm_eps)?),
            false => None,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| load_layer(&enc.pp("layer").pp(i), cfg))
            .collect::<Result<_>>()?;
        Ok(Deberta { cfg: cfg.clone(), act: vb.act_kind(), emb, rel_embeddings, rel_ln, layers })
    }

    fn embed(&self, ids: &Tensor, mask: &Tensor, types: &Tensor, ctx: &Ctx) -> Tensor {
        let t = ids.size().last().copied().unwrap_or(1);
        let mut e = Tensor::embedding(&self.emb.word, ids, -1, false, false); // (b, t, e)
        if let Some(p) = &self.emb.position {
            e += p.narrow(0, 0, t);
        }
        if let Some(tt) = &self.emb.token_type {
            e += Tensor::embedding(tt, types, -1, false, false);
        }
        let mut e = e.to_kind(self.act); // fp32 activations from bf16 tables, or bf16 ones
        if let Some(p) = &self.emb.proj {
            e = p.forward(&e, ctx);
        }
        let x = self.emb.ln.forward(&e, ctx) * mask.to_kind(self.act).unsqueeze(2);
        x.dropout(self.cfg.hidden_dropout_prob, ctx.train)
    }

    fn shared(&self, mask: &Tensor, ctx: &Ctx) -> Shared {
        let (b, t) = mask.size2().unwrap_or((1, 1));
        let m = mask.to_kind(Kind::Bool);
        let keep = m.view([b, 1, 1, t]).logical_and(&m.view([b, 1, t, 1])); // (b, 1, t, t)
        let rel_pos = relative_position(t, self.cfg.position_buckets, self.cfg.max_relative(), mask.device());
        let rel = self.rel_embeddings.as_ref().map(|r| {
            let r = r.to_kind(self.act);
            let r = match &self.rel_ln {
                Some(ln) => ln.forward(&r, ctx),
                None => r,
            };
            r.narrow(0, 0, 2 * self.cfg.att_span()).unsqueeze(0)
        });
        Shared { mask: additive_mask(&keep, self.act), rel_pos, rel }
    }

    /// c2p + p2c scores (b, h, t, t), each over `scale`.
    fn relative_scores(
        &self,
        l: &Layer,
        q: &Tensor,
        k: &Tensor,
        s: &Shared,
        scale: f64,
        ctx: &Ctx,
    ) -> Tensor {
        let Some(rel) = &s.rel else { return Tensor::zeros([1], (q.kind(), q.device())) };
        let (h, span) = (self.cfg.num_attention_heads, self.cfg.att_span());
        let rel = rel.dropout(self.cfg.hidden_dropout_prob, ctx.train);
        let t = q.size()[2];
        let mut terms = Vec::new();
        if self.cfg.has("c2p") {
            let proj = l.pos_key.as_ref().unwrap_or(&l.key);
            let pos_key = split_heads(&proj.forward(&rel, ctx), h); // (1, h, 2 span, dh)
            let c2p = q.matmul(&pos_key.transpose(-1, -2)); // (b, h, t, 2 span)
            let idx = (&s.rel_pos + span).clamp(0, 2 * span - 1).expand([c2p.size()[0], h, t, t], false);
            terms.push(c2p.gather(-1, &idx, false) / scale);
        }
        if self.cfg.has("p2c") {
            let proj = l.pos_query.as_ref().unwrap_or(&l.query);
            let pos_query = split_heads(&proj.forward(&rel, ctx), h); // (1, h, 2 span, dh)
            let p2c = k.matmul(&pos_query.transpose(-1, -2)); // (b, h, t_k, 2 span)
            let idx = (-&s.rel_pos + span).clamp(0, 2 * span - 1).expand([p2c.size()[0], h, t, t], false);
            terms.push(p2c.gather(-1, &idx, false).transpose(-1, -2) / scale);
        }
        terms.into_iter().reduce(|a, b| a + b).unwrap_or_else(|| Tensor::zeros([1], (q.kind(), q.device())))
    }

    fn layer(&self, l: &Layer, x: &Tensor, s: &Shared, ctx: &Ctx) -> Tensor {
        let (h, pdrop) = (self.cfg.num_attention_heads, self.cfg.hidden_dropout_prob);
        let attn_p = if ctx.train { self.cfg.attention_probs_dropout_prob } else { 0.0 };
        let q = split_heads(&l.query.forward(x, ctx), h); // (b, h, t, dh)
        let k = split_heads(&l.key.forward(x, ctx), h);
        let v = split_heads(&l.value.forward(x, ctx), h);
        // transformers' fp32 sqrt(head_dim x terms), the terms counted from pos_att_type alone (also
        // without relative attention)
        let types = self.cfg.att_types().unwrap_or_default();
        let terms = 1 + ["c2p", "p2c"].iter().filter(|t| types.iter().any(|x| x == *t)).count();
        let scale = ((q.size()[3] as f32) * terms as f32).sqrt() as f64;
        let bias = self.relative_scores(l, &q, &k, s, scale, ctx) + &s.mask; // (b, h, t, t)
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(&bias),
            attn_p,
            false,
            Some(1.0 / scale),
            false,
        );
        let a = l.attn_out.forward(&merge_heads(&a), ctx).dropout(pdrop, ctx.train);
        let a = l.attn_ln.forward(&(a + x), ctx);
        let i = activation(&self.cfg.hidden_act, &l.inter.forward(&a, ctx));
        let o = l.out.forward(&i, ctx).dropout(pdrop, ctx.train);
        l.out_ln.forward(&(o + &a), ctx)
    }
}

impl EncoderBackbone for Deberta {
    fn encode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        types: &Tensor,
        ctx: &Ctx,
        all_hidden: bool,
    ) -> Vec<Tensor> {
        let x = self.embed(ids, mask, types, ctx);
        let s = self.shared(mask, ctx);
        run_layers(x, &self.layers, all_hidden, |l, x| self.layer(l, x, &s, ctx))
    }

    fn features(&self, last: &Tensor, _ctx: &Ctx) -> Tensor {
        last.select(1, 0)
    }

    fn linear_sites(&self) -> Vec<&LinearSite> {
        self.layers.iter().flat_map(|l| [&l.query, &l.key, &l.value, &l.attn_out, &l.inter, &l.out]).collect()
    }

    fn norm_sites(&self) -> Vec<&NormSite> {
        let layers = self.layers.iter().flat_map(|l| [&l.attn_ln, &l.out_ln]);
        std::iter::once(&self.emb.ln).chain(self.rel_ln.as_ref()).chain(layers).collect()
    }

    fn folded_tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String> {
        let named = |k: &str, t: &Option<Tensor>| t.as_ref().map(|t| (k.to_string(), t.shallow_clone()));
        let owned: Vec<(String, Tensor)> = [
            Some(("embeddings.word_embeddings.weight".to_string(), self.emb.word.shallow_clone())),
            named("embeddings.position_embeddings.weight", &self.emb.position),
            named("embeddings.token_type_embeddings.weight", &self.emb.token_type),
            named("encoder.rel_embeddings.weight", &self.rel_embeddings),
        ]
        .into_iter()
        .flatten()
        .collect();
        let plain = owned.iter().map(|(k, t)| (k.clone(), t)).collect();
        let extra = self.layers.iter().flat_map(|l| l.pos_key.iter().chain(l.pos_query.iter()));
        let linears = self.linear_sites().into_iter().chain(extra).chain(self.emb.proj.as_ref()).collect();
        fold(plain, self.norm_sites(), linears)
    }
}

/// transformers' `build_relative_position` (query i minus key j, log-bucketed when `buckets` > 0 via
/// `make_log_bucket_position`, with its fp32 operations): (t, t) int64.
fn relative_position(t: i64, buckets: i64, max_position: i64, device: tch::Device) -> Tensor {
    let ar = Tensor::arange(t, (Kind::Int64, device));
    let rel = ar.unsqueeze(1) - ar.unsqueeze(0); // (t, t)
    if buckets <= 0 || max_position <= 0 {
        return rel;
    }
    let mid = buckets / 2;
    let sign = rel.sign();
    let near = rel.lt(mid).logical_and(&rel.gt(-mid));
    let abs_pos = Tensor::full([1], mid - 1, (Kind::Int64, device)).where_self(&near, &rel.abs());
    // made on the device (no host copy: the search step may be captured as a CUDA graph)
    let denom = Tensor::scalar_tensor((max_position - 1) as f64 / mid as f64, (Kind::Float, device)).log();
    let log_pos = ((abs_pos.to_kind(Kind::Float) / mid).log() / denom * (mid - 1)).ceil() + mid;
    let bucket = rel.to_kind(Kind::Float).where_self(&abs_pos.le(mid), &(log_pos * sign));
    bucket.to_kind(Kind::Int64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' values (torch 2.11, CPU): 8 buckets, max position 64, query 0 against keys 0..40;
    /// v3's 256 buckets and 512 positions, every 37th key of 600.
    #[test]
    fn log_buckets_match_transformers() {
        let r = relative_position(40, 8, 64, tch::Device::Cpu);
        let row = Vec::<i64>::try_from(r.get(0)).unwrap();
        let mut want = vec![0, -1, -2, -3, -4];
        want.extend([-5; 6].iter().chain(&[-6; 15]).chain(&[-7; 14]));
        assert_eq!(row, want);
        let v3 = relative_position(600, 256, 512, tch::Device::Cpu).get(0).slice(0, 0, 600, 37);
        let want =
            [0, -37, -74, -111, -142, -162, -179, -193, -205, -216, -226, -235, -243, -250, -257, -263, -269];
        assert_eq!(Vec::<i64>::try_from(v3).unwrap(), want.to_vec());
        let plain = relative_position(5, -1, 64, tch::Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(plain.get(4)).unwrap(), vec![4, 3, 2, 1, 0]);
    }
}
