//! Our T5 encoder-decoder (v1.0 ReLU FFN, v1.1 / Flan gated GELU): relative position buckets, RMS norms,
//! pre-norm residual blocks, a causal decoder with cross-attention, a tied (scaled) or untied LM head,
//! teacher-forced loss and greedy decoding. Module paths are the checkpoint's own
//! (`decoder.block.3.layer.1.EncDecAttention.q`).
use super::loader::{Role, Vb};
use super::sites::{LinearGroup, LinearSite, RmsNormSite};
use super::t5_config::T5Config;
use crate::delta::Ctx;
use crate::error::Result;
use tch::{Kind, Tensor};

/// The q, k, v projections of an attention: one group reading the same input (self-attention), or q
/// alone and k, v together (cross-attention: q reads the decoder, k and v the encoder output).
enum Proj {
    Shared(LinearGroup),
    Cross { q: LinearGroup, kv: LinearGroup },
}

struct Attention {
    proj: Proj,
    o: LinearSite,
}

impl Attention {
    fn qkv_sites(&self) -> Vec<&LinearSite> {
        match &self.proj {
            Proj::Shared(g) => g.sites.iter().collect(),
            Proj::Cross { q, kv } => q.sites.iter().chain(kv.sites.iter()).collect(),
        }
    }

    /// [q, k, v] of `x` over `kv` (a group gives one output per member).
    fn project(&self, x: &Tensor, kv: &Tensor, ctx: &Ctx) -> Vec<Tensor> {
        match &self.proj {
            Proj::Shared(g) => g.forward(x, ctx),
            Proj::Cross { q, kv: g } => q.forward(x, ctx).into_iter().chain(g.forward(kv, ctx)).collect(),
        }
    }
}

struct Ffn {
    wi: LinearGroup, // [wi] or [wi_0, wi_1]
    wo: LinearSite,
}

struct EncoderBlock {
    attn_ln: RmsNormSite,
    attn: Attention,
    ffn_ln: RmsNormSite,
    ffn: Ffn,
}

struct DecoderBlock {
    attn_ln: RmsNormSite,
    attn: Attention,
    cross_ln: RmsNormSite,
    cross: Attention,
    ffn_ln: RmsNormSite,
    ffn: Ffn,
}

pub struct T5 {
    pub cfg: T5Config,
    /// The activations' dtype (fp32, or bf16 with `--precision bf16`).
    act: Kind,
    shared: Tensor,          // (vocab, d)
    lm_head: Option<Tensor>, // (vocab, d) when untied
    enc_table: Tensor,       // (buckets, heads): block 0's relative_attention_bias, shared by the stack
    dec_table: Tensor,
    encoder: Vec<EncoderBlock>,
    enc_ln: RmsNormSite,
    decoder: Vec<DecoderBlock>,
    dec_ln: RmsNormSite,
}

/// One attention's q, k, v, o (inner = heads x d_kv); o is the block's output projection. `cross`: k and v
/// read another input than q.
fn attention(vb: &Vb, d: i64, inner: i64, cross: bool) -> Result<Attention> {
    let proj = if cross {
        let q = vb.linear_group(&["q"], d, inner, false, Role::Site)?;
        Proj::Cross { q, kv: vb.linear_group(&["k", "v"], d, inner, false, Role::Site)? }
    } else {
        Proj::Shared(vb.linear_group(&["q", "k", "v"], d, inner, false, Role::Site)?)
    };
    Ok(Attention { proj, o: vb.linear("o", inner, d, false, Role::BlockOutput)? })
}

/// DenseReluDense: wi (or the gated wi_0, wi_1) and wo.
fn ffn(vb: &Vb, cfg: &T5Config) -> Result<Ffn> {
    let (d, f) = (cfg.d_model, cfg.d_ff);
    let names: &[&str] = if cfg.is_gated() { &["wi_0", "wi_1"] } else { &["wi"] };
    let wi = vb.linear_group(names, d, f, false, Role::Site)?;
    Ok(Ffn { wi, wo: vb.linear("wo", f, d, false, Role::BlockOutput)? })
}

/// T5's relative position buckets for (q_len, k_len), as transformers computes them (same float ops).
/// Built on `device` (no host-to-device copy inside a forward).
fn buckets(
    q_len: i64,
    k_len: i64,
    bidirectional: bool,
    (num_buckets, max_distance): (i64, i64),
    device: tch::Device,
) -> Tensor {
    let opts = (Kind::Int64, device);
    let ctx_pos = Tensor::arange(q_len, opts).unsqueeze(1); // (q, 1)
    let mem_pos = Tensor::arange(k_len, opts).unsqueeze(0); // (1, k)
    let rel = mem_pos - ctx_pos; // (q, k)
    let (mut nb, mut out) = (num_buckets, rel.zeros_like());
    let rel = if bidirectional {
        nb /= 2;
        out += rel.gt(0).to_kind(Kind::Int64) * nb;
        rel.abs()
    } else {
        -rel.clamp_max(0)
    };
    let max_exact = nb / 2;
    let small = rel.lt(max_exact);
    let large = (rel.to_kind(Kind::Float) / max_exact as f64).log()
        / (max_distance as f64 / max_exact as f64).ln()
        * (nb - max_exact) as f64;
    let large = (large.to_kind(Kind::Int64) + max_exact).clamp_max(nb - 1);
    out + rel.where_self(&small, &large)
}

impl T5 {
    /// Loads the frozen backbone from `vb` (the checkpoint root); the loader asks its factory what to
    /// attach at every site and records the sites, in model order: per block the self-attention norm and
    /// q, k, v, o, (decoder: the cross-attention norm and q, k, v, o), the FFN norm and wi (or wi_0, wi_1),
    /// wo; each stack's final norm after its blocks.
    pub fn load(vb: &Vb, cfg: &T5Config) -> Result<Self> {
        let (d, v) = (cfg.d_model, cfg.vocab_size);
        // transformers saves the tied embedding once, as `shared.weight` (older files as encoder.embed_tokens)
        let legacy = !vb.contains("shared.weight") && vb.contains("encoder.embed_tokens.weight");
        let shared =
            vb.matrix(if legacy { "encoder.embed_tokens.weight" } else { "shared.weight" }, &[v, d])?;
        // a separate head is used when the file has one that differs from the embedding (as transformers
        // decides); a config that says untied needs one
        let untied = vb.contains("lm_head.weight") && !vb.equals("lm_head.weight", &[v, d], &shared)?;
        let lm_head = if untied || !cfg.tie_word_embeddings {
            Some(vb.matrix("lm_head.weight", &[v, d])?)
        } else {
            None
        };
        let shape = [cfg.relative_attention_num_buckets, cfg.num_heads];
        let table = |s: &str| {
            vb.pp(s).pp("block.0.layer.0.SelfAttention").tensor("relative_attention_bias.weight", &shape)
        };
        let (enc_table, dec_table) = (table("encoder")?, table("decoder")?);
        let (eps, inner) = (cfg.layer_norm_epsilon, cfg.inner_dim());
        let mut encoder = Vec::new();
        for i in 0..cfg.num_layers {
            let b = vb.pp("encoder.block").pp(i).pp("layer");
            encoder.push(EncoderBlock {
                attn_ln: b.pp(0).rms_norm("layer_norm", d, eps)?,
                attn: attention(&b.pp(0).pp("SelfAttention"), d, inner, false)?,
                ffn_ln: b.pp(1).rms_norm("layer_norm", d, eps)?,
                ffn: ffn(&b.pp(1).pp("DenseReluDense"), cfg)?,
            });
        }
        let enc_ln = vb.pp("encoder").rms_norm("final_layer_norm", d, eps)?;
        let mut decoder = Vec::new();
        for i in 0..cfg.decoder_layers() {
            let b = vb.pp("decoder.block").pp(i).pp("layer");
            decoder.push(DecoderBlock {
                attn_ln: b.pp(0).rms_norm("layer_norm", d, eps)?,
                attn: attention(&b.pp(0).pp("SelfAttention"), d, inner, false)?,
                cross_ln: b.pp(1).rms_norm("layer_norm", d, eps)?,
                cross: attention(&b.pp(1).pp("EncDecAttention"), d, inner, true)?,
                ffn_ln: b.pp(2).rms_norm("layer_norm", d, eps)?,
                ffn: ffn(&b.pp(2).pp("DenseReluDense"), cfg)?,
            });
        }
        let dec_ln = vb.pp("decoder").rms_norm("final_layer_norm", d, eps)?;
        let act = vb.act_kind();
        Ok(T5 {
            cfg: cfg.clone(),
            act,
            shared,
            lm_head,
            enc_table,
            dec_table,
            encoder,
            enc_ln,
            decoder,
            dec_ln,
        })
    }

    fn act(&self, x: &Tensor) -> Tensor {
        match self.cfg.act() {
            "relu" => x.relu(),
            "gelu_new" | "gelu_pytorch_tanh" => x.gelu("tanh"),
            "silu" => x.silu(),
            _ => x.gelu("none"),
        }
    }

    fn drop(&self, x: Tensor, ctx: &Ctx) -> Tensor {
        x.dropout(self.cfg.dropout_rate, ctx.train)
    }

    /// Relative position bias (1, heads, q, k) from a stack's table.
    fn position_bias(&self, table: &Tensor, q: i64, k: i64, bidirectional: bool) -> Tensor {
        let (nb, md) = (self.cfg.relative_attention_num_buckets, self.cfg.relative_attention_max_distance);
        let idx = buckets(q, k, bidirectional, (nb, md), table.device());
        Tensor::embedding(table, &idx, -1, false, false).permute([2, 0, 1]).unsqueeze(0)
    }

    /// Unscaled dot-product attention of `x` over `kv` with an additive `bias` (position and mask).
    fn attend(&self, a: &Attention, x: &Tensor, kv: &Tensor, bias: &Tensor, ctx: &Ctx) -> Tensor {
        let (b, tq, tk) = (x.size()[0], x.size()[1], kv.size()[1]);
        let (h, dk) = (self.cfg.num_heads, self.cfg.d_kv);
        let qkv = a.project(x, kv, ctx);
        let q = qkv[0].view([b, tq, h, dk]).transpose(1, 2); // (b, h, tq, dk)
        let k = qkv[1].view([b, tk, h, dk]).transpose(1, 2); // (b, h, tk, dk)
        let v = qkv[2].view([b, tk, h, dk]).transpose(1, 2);
        let scores = q.matmul(&k.transpose(2, 3)) + bias; // (b, h, tq, tk), fp32 (the bias is)
        let p = if ctx.train { self.cfg.dropout_rate } else { 0.0 };
        let w = scores.softmax(-1, Kind::Float).dropout(p, ctx.train).to_kind(v.kind());
        let out = w.matmul(&v).transpose(1, 2).reshape([b, tq, h * dk]); // (b, tq, inner)
        a.o.forward(&out, ctx)
    }

    fn feed_forward(&self, f: &Ffn, x: &Tensor, ctx: &Ctx) -> Tensor {
        let h = match f.wi.forward(x, ctx).as_slice() {
            [wi_0, wi_1] => self.act(wi_0) * wi_1,
            wi => self.act(&wi[0]),
        };
        f.wo.forward(&self.drop(h, ctx), ctx)
    }

    /// Additive mask (b, 1, 1, k): 0 where `mask` is 1, the lowest float where it is 0.
    fn key_mask(mask: &Tensor) -> Tensor {
        let (b, t) = (mask.size()[0], mask.size()[1]);
        let open = mask.to_kind(Kind::Float);
        ((open.ones_like() - open) * f64::from(f32::MIN)).view([b, 1, 1, t])
    }

    /// Encoder output (b, t, d) after the final norm. ids, mask: (b, t) int64.
    pub fn encode(&self, ids: &Tensor, mask: &Tensor, ctx: &Ctx) -> Tensor {
        let t = ids.size()[1];
        let mut x = self.drop(self.embed(ids), ctx); // (b, t, d)
        let bias = self.position_bias(&self.enc_table, t, t, true) + Self::key_mask(mask); // (b, h, t, t)
        for blk in &self.encoder {
            let n = blk.attn_ln.forward(&x, ctx);
            x = &x + self.drop(self.attend(&blk.attn, &n, &n, &bias, ctx), ctx);
            let n = blk.ffn_ln.forward(&x, ctx);
            x = &x + self.drop(self.feed_forward(&blk.ffn, &n, ctx), ctx);
        }
        self.drop(self.enc_ln.forward(&x, ctx), ctx)
    }

    /// Decoder output (b, s, d) after the final norm, causal over `dec_ids` (b, s), attending to the
    /// encoder output `enc` (b, t, d) where `enc_mask` (b, t) is 1.
    pub fn decode(&self, dec_ids: &Tensor, enc: &Tensor, enc_mask: &Tensor, ctx: &Ctx) -> Tensor {
        let s = dec_ids.size()[1];
        let mut x = self.drop(self.embed(dec_ids), ctx); // (b, s, d)
        let opts = (Kind::Float, x.device());
        let causal = Tensor::ones([s, s], opts).triu(1) * f64::from(f32::MIN); // (s, s)
        let self_bias = self.position_bias(&self.dec_table, s, s, false) + causal; // (1, h, s, s)
        let cross_bias = Self::key_mask(enc_mask); // (b, 1, 1, t)
        for blk in &self.decoder {
            let n = blk.attn_ln.forward(&x, ctx);
            x = &x + self.drop(self.attend(&blk.attn, &n, &n, &self_bias, ctx), ctx);
            let n = blk.cross_ln.forward(&x, ctx);
            x = &x + self.drop(self.attend(&blk.cross, &n, enc, &cross_bias, ctx), ctx);
            let n = blk.ffn_ln.forward(&x, ctx);
            x = &x + self.drop(self.feed_forward(&blk.ffn, &n, ctx), ctx);
        }
        self.drop(self.dec_ln.forward(&x, ctx), ctx)
    }

    /// LM logits (b, s, vocab) of a decoder output: the tied embedding (after scaling by d^-0.5) or the
    /// untied head.
    pub fn lm_logits(&self, dec_out: &Tensor) -> Tensor {
        let x = if self.cfg.scales_decoder_output() {
            dec_out * (self.cfg.d_model as f64).powf(-0.5)
        } else {
            dec_out.shallow_clone()
        };
        let head = self.lm_head.as_ref().unwrap_or(&self.shared);
        // a bf16 frozen head: the matmul in bf16, the logits in fp32
        x.to_kind(head.kind()).linear::<Tensor>(head, None).to_kind(Kind::Float)
    }

    /// Token embeddings (b, t, d) in the activations' dtype.
    fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.shared, ids, -1, false, false).to_kind(self.act)
    }

    /// Decoder inputs for target ids (b, s) padded with -100: the start token, then the targets
    /// shifted right (-100 read as the pad token).
    pub fn shift_right(&self, labels: &Tensor) -> Tensor {
        let b = labels.size()[0];
        let start = Tensor::full([b, 1], self.cfg.decoder_start_token_id, (Kind::Int64, labels.device()));
        let s = labels.size()[1];
        let shifted = Tensor::cat(&[start, labels.narrow(1, 0, s - 1)], 1);
        shifted.masked_fill(&shifted.eq(-100), self.cfg.pad_token_id)
    }

    /// Teacher-forced logits (b, s, vocab) for target ids `labels` (b, s), -100 at padding.
    pub fn logits(&self, ids: &Tensor, mask: &Tensor, labels: &Tensor, ctx: &Ctx) -> Tensor {
        let enc = self.encode(ids, mask, ctx);
        let dec = self.decode(&self.shift_right(labels), &enc, mask, ctx);
        self.lm_logits(&dec)
    }

    /// Mean cross-entropy over the target tokens (positions with -100 ignored).
    pub fn loss_from_logits(logits: &Tensor, labels: &Tensor) -> Tensor {
        let v = logits.size()[2];
        logits.view([-1, v]).cross_entropy_loss::<Tensor>(
            &labels.view([-1]),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )
    }

    /// Greedy decoding: (b, 1 + steps) ids starting with the decoder start token; each row stops at the
    /// end-of-sequence token and is padded after it, and decoding stops early once every row has.
    pub fn generate(&self, ids: &Tensor, mask: &Tensor, max_new_tokens: i64, ctx: &Ctx) -> Tensor {
        tch::no_grad(|| {
            let ctx = &Ctx { train: false, ..*ctx };
            let enc = self.encode(ids, mask, ctx);
            let b = ids.size()[0];
            let dev = ids.device();
            let mut out = Tensor::full([b, 1], self.cfg.decoder_start_token_id, (Kind::Int64, dev));
            let mut done = Tensor::zeros([b], (Kind::Bool, dev));
            for _ in 0..max_new_tokens {
                let dec = self.decode(&out, &enc, mask, ctx);
                let last = dec.narrow(1, dec.size()[1] - 1, 1);
                let next = self.lm_logits(&last).squeeze_dim(1).argmax(-1, false); // (b)
                let next = next.where_self(&done.logical_not(), &next.full_like(self.cfg.pad_token_id));
                out = Tensor::cat(&[out, next.unsqueeze(1)], 1);
                done = done.logical_or(&next.eq(self.cfg.eos_token_id));
                if done.all().int64_value(&[]) == 1 {
                    break;
                }
            }
            out
        })
    }

    pub fn linear_sites(&self) -> Vec<&LinearSite> {
        let mut v = Vec::new();
        fn attn(a: &Attention) -> Vec<&LinearSite> {
            let mut v = a.qkv_sites();
            v.push(&a.o);
            v
        }
        for blk in &self.encoder {
            v.extend(attn(&blk.attn));
            v.extend(blk.ffn.wi.sites.iter().chain([&blk.ffn.wo]));
        }
        for blk in &self.decoder {
            v.extend(attn(&blk.attn));
            v.extend(attn(&blk.cross));
            v.extend(blk.ffn.wi.sites.iter().chain([&blk.ffn.wo]));
        }
        v
    }

    pub fn norm_sites(&self) -> Vec<&RmsNormSite> {
        let mut v = Vec::new();
        for blk in &self.encoder {
            v.extend([&blk.attn_ln, &blk.ffn_ln]);
        }
        v.push(&self.enc_ln);
        for blk in &self.decoder {
            v.extend([&blk.attn_ln, &blk.cross_ln, &blk.ffn_ln]);
        }
        v.push(&self.dec_ln);
        v
    }
}
