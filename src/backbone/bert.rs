//! Our BERT encoder (embeddings, self-attention with padding mask, token types, FFN, post-LayerNorm,
//! pooler). Module paths are the checkpoint's own (`encoder.layer.3.attention.self.query`).
//! RoBERTa / XLM-RoBERTa are this encoder with positions counted from the padding index, token types
//! unused and the pooler optional (their head reads the first token).
use super::config::BertConfig;
use super::loader::{Role, Vb};
use super::sites::{LinearGroup, LinearSite, NormSite};
use crate::delta::Ctx;
use crate::error::Result;
use tch::{Kind, Tensor};

struct Layer {
    /// query, key, value: one group (they read the same input)
    qkv: LinearGroup,
    attn_out: LinearSite,
    attn_ln: NormSite,
    inter: LinearSite,
    out: LinearSite,
    out_ln: NormSite,
}

pub struct Bert {
    pub cfg: BertConfig,
    /// The activations' dtype (fp32, or bf16 with `--precision bf16`).
    act: Kind,
    word: Tensor,     // (vocab, d)
    position: Tensor, // (max_pos, d)
    token_type: Tensor,
    emb_ln: NormSite,
    layers: Vec<Layer>,
    /// BERT's (its head reads it); RoBERTa's when the checkpoint has one (loaded, counted, unused).
    pooler: Option<LinearSite>,
}

impl Bert {
    /// Loads the frozen backbone from `vb` (the checkpoint root); the loader asks its factory what to
    /// attach at every site and records the sites.
    pub fn load(vb: &Vb, cfg: &BertConfig) -> Result<Self> {
        let (d, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let word = emb.matrix("word_embeddings.weight", &[cfg.vocab_size, d])?;
        let position = emb.matrix("position_embeddings.weight", &[cfg.max_position_embeddings, d])?;
        let token_type = emb.matrix("token_type_embeddings.weight", &[cfg.type_vocab_size, d])?;
        let emb_ln = emb.layer_norm("LayerNorm", d, eps)?;
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp("encoder.layer").pp(i);
            let (attn, att_out) = (l.pp("attention.self"), l.pp("attention.output"));
            layers.push(Layer {
                qkv: attn.linear_group(&["query", "key", "value"], d, d, true, Role::Site)?,
                attn_out: att_out.linear("dense", d, d, true, Role::BlockOutput)?,
                attn_ln: att_out.layer_norm("LayerNorm", d, eps)?,
                inter: l.pp("intermediate").linear("dense", d, f, true, Role::Site)?,
                out: l.pp("output").linear("dense", f, d, true, Role::BlockOutput)?,
                out_ln: l.pp("output").layer_norm("LayerNorm", d, eps)?,
            });
        }
        // BERT's head reads the pooler; RoBERTa's task model has none, so a checkpoint's is only counted
        let pooler = match (cfg.is_roberta(), cfg.reads_pooler()) {
            (false, _) => Some(vb.pp("pooler").linear("dense", d, d, true, Role::Frozen)?),
            (true, true) => {
                vb.pp("pooler").unused_linear("dense", d)?;
                None
            }
            (true, false) => None,
        };
        let act = vb.act_kind();
        Ok(Bert { cfg: cfg.clone(), act, word, position, token_type, emb_ln, layers, pooler })
    }

    fn act(&self, x: &Tensor) -> Tensor {
        super::encoder::activation(&self.cfg.hidden_act, x)
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
        let (pos, types) = if self.cfg.is_roberta() {
            let p = super::encoder::padded_positions(mask, self.cfg.pad_id()); // (b, t)
            (Tensor::embedding(&self.position, &p, -1, false, false), types.zeros_like())
        // (b, t, d)
        } else {
            (self.position.narrow(0, 0, t), types.shallow_clone()) // (t, d)
        };
        let emb = Tensor::embedding(&self.word, ids, -1, false, false)
            + pos
            + Tensor::embedding(&self.token_type, &types, -1, false, false); // (b, t, d)
        let emb = emb.to_kind(self.act); // fp32 activations from bf16 tables, or bf16 ones
        let mut x = self.emb_ln.forward(&emb, ctx).dropout(pdrop, ctx.train);
        let keep = mask.to_kind(tch::Kind::Bool).view([b, 1, 1, t]); // (b, 1, 1, t)
        let (h, dh) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let attn_p = if ctx.train { self.cfg.attention_probs_dropout_prob } else { 0.0 };
        let mut hidden = Vec::new();
        if all_hidden {
            hidden.push(x.shallow_clone());
        }
        for layer in &self.layers {
            let split = |y: &Tensor| y.view([b, t, h, dh]).transpose(1, 2); // (b, h, t, dh)
            let qkv = layer.qkv.forward(&x, ctx);
            let (q, k, v) = (split(&qkv[0]), split(&qkv[1]), split(&qkv[2]));
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

    /// tanh(dense(first token)): (b, t, d) -> (b, d); the first token itself without a pooler.
    pub fn pool(&self, last: &Tensor, ctx: &Ctx) -> Tensor {
        match &self.pooler {
            Some(p) => p.forward(&last.select(1, 0), ctx).tanh(),
            None => last.select(1, 0),
        }
    }

    /// What the task head reads: BERT's pooled output, RoBERTa's first token. (b, t, d) -> (b, d).
    pub fn features(&self, last: &Tensor, ctx: &Ctx) -> Tensor {
        if self.cfg.is_roberta() {
            last.select(1, 0)
        } else {
            self.pool(last, ctx)
        }
    }

    /// Every site in model order, for inspection and folding.
    pub fn linear_sites(&self) -> Vec<&LinearSite> {
        let mut v = Vec::new();
        for l in &self.layers {
            v.extend(l.qkv.sites.iter());
            v.extend([&l.attn_out, &l.inter, &l.out]);
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

    /// All tensors of the task model's backbone under their checkpoint names, with linear deltas folded in
    /// (gates at 1).
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
        // RoBERTa's task model has no pooler: an unused one is not written
        let pooler = self.pooler.as_ref().filter(|_| !self.cfg.is_roberta());
        for s in self.linear_sites().into_iter().chain(pooler) {
            let (w, b) = s.folded().ok_or_else(|| s.name.clone())?;
            out.push((format!("{}.weight", s.name), w));
            out.push((format!("{}.bias", s.name), b));
        }
        Ok(out)
    }
}
