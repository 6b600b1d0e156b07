//! Our Llama-family decoder (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM): token embedding,
//! pre-norm blocks of RMSNorm -> grouped-query self-attention with RoPE (causal, padding mask, optional
//! sliding window) -> RMSNorm -> SwiGLU MLP, a final RMSNorm and a tied or separate LM head. Module paths
//! are the checkpoint's own (`model.layers.3.self_attn.q_proj`). A KV cache serves greedy generation.
use super::llama_config::LlamaConfig;
use super::loader::{Role, Vb};
use super::sites::{LinearSite, RmsNormSite};
use crate::delta::Ctx;
use crate::error::Result;
use tch::{Device, Kind, Tensor};

struct Attention {
    q: LinearSite,
    k: LinearSite,
    v: LinearSite,
    o: LinearSite,
}

struct Mlp {
    gate: LinearSite,
    up: LinearSite,
    down: LinearSite,
}

struct Layer {
    input_ln: RmsNormSite,
    attn: Attention,
    post_ln: RmsNormSite,
    mlp: Mlp,
    window: Option<i64>,
}

pub struct Llama {
    pub cfg: LlamaConfig,
    /// The activations' dtype (fp32, or bf16 with `--precision bf16`).
    act: Kind,
    embed: Tensor,           // (vocab, d)
    lm_head: Option<Tensor>, // (vocab, d) when untied
    layers: Vec<Layer>,
    norm: RmsNormSite,
    inv_freq: Tensor, // (head_dim / 2) fp32
}

/// Keys and values of every layer so far, (b, kv_heads, T, head_dim) each, and the key mask (b, T).
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    keys: Tensor,
}

impl KvCache {
    /// Tokens cached so far.
    pub fn len(&self) -> i64 {
        self.keys.size()[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one forward pass attends over: this pass's token positions (b, s) and the key mask of every
/// key it sees (b, T), cached keys first.
struct Span<'a> {
    positions: &'a Tensor,
    keys: &'a Tensor,
}

impl Llama {
    /// Loads the frozen backbone from `vb` (the checkpoint root), recording the sites in model order:
    /// per layer `input_layernorm`, `self_attn.{q,k,v,o}_proj`, `post_attention_layernorm`,
    /// `mlp.{gate,up,down}_proj`; then the final `model.norm`. o_proj and down_proj are block outputs.
    pub fn load(vb: &Vb, cfg: &LlamaConfig) -> Result<Self> {
        let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (hd, eps) = (cfg.head_dim(), cfg.rms_norm_eps);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.kv_heads() * hd);
        let (qkv_bias, o_bias) = cfg.attention_biases();
        let m = vb.pp("model");
        let embed = m.matrix("embed_tokens.weight", &[v, d])?;
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = m.pp("layers").pp(i);
            let (a, p) = (l.pp("self_attn"), l.pp("mlp"));
            layers.push(Layer {
                input_ln: l.rms_norm("input_layernorm", d, eps)?,
                attn: Attention {
                    q: a.linear("q_proj", d, q_out, qkv_bias, Role::Site)?,
                    k: a.linear("k_proj", d, kv_out, qkv_bias, Role::Site)?,
                    v: a.linear("v_proj", d, kv_out, qkv_bias, Role::Site)?,
                    o: a.linear("o_proj", q_out, d, o_bias, Role::BlockOutput)?,
                },
                post_ln: l.rms_norm("post_attention_layernorm", d, eps)?,
                mlp: Mlp {
                    gate: p.linear("gate_proj", d, f, cfg.mlp_bias, Role::Site)?,
                    up: p.linear("up_proj", d, f, cfg.mlp_bias, Role::Site)?,
                    down: p.linear("down_proj", f, d, cfg.mlp_bias, Role::BlockOutput)?,
                },
                window: cfg.window(i),
            });
        }
        let norm = m.rms_norm("norm", d, eps)?;
        // transformers ties the head to the embedding whenever the config says so
        let lm_head =
            if cfg.tie_word_embeddings { None } else { Some(vb.matrix("lm_head.weight", &[v, d])?) };
        let rope = cfg.rope().map_err(crate::Error::Msg)?;
        let inv_freq = Tensor::from_slice(&rope.inv_freq(hd)).to_device(vb.device());
        Ok(Llama { cfg: cfg.clone(), act: vb.act_kind(), embed, lm_head, layers, norm, inv_freq })
    }

    fn act(&self, x: &Tensor) -> Tensor {
        match self.cfg.hidden_act.as_str() {
            "gelu" => x.gelu("none"),
            "gelu_pytorch_tanh" => x.gelu("tanh"),
            "relu" => x.relu(),
            _ => x.silu(),
        }
    }

    /// cos and sin (b, 1, s, head_dim) of RoPE at `positions` (b, s), computed in fp32, in the
    /// activations' dtype.
    fn rope(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]); // (b, s, hd/2)
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1); // (b, 1, s, hd)
        (emb.cos().to_kind(self.act), emb.sin().to_kind(self.act))
    }

    /// The boolean attention mask (b, 1, s, T) of `s` queries at key indices T - s .. T-1: causal, within
    /// the window, real keys only; each query always sees itself, so a padded query is never left with
    /// no key (its output is ignored, but a row of all -inf would be NaN in the backward pass).
    fn mask(keys: &Tensor, s: i64, window: Option<i64>) -> Tensor {
        let (b, t) = (keys.size()[0], keys.size()[1]);
        let dev = keys.device();
        let q_idx = Tensor::arange_start(t - s, t, (Kind::Int64, dev)).view([s, 1]);
        let k_idx = Tensor::arange(t, (Kind::Int64, dev)).view([1, t]);
        let mut allowed = k_idx.le_tensor(&q_idx); // (s, T)
        if let Some(w) = window {
            allowed = allowed.logical_and(&(&q_idx - &k_idx).lt(w));
        }
        let real = keys.to_kind(Kind::Bool).view([b, 1, t]);
        let allowed =
            allowed.unsqueeze(0).logical_and(&real).logical_or(&k_idx.eq_tensor(&q_idx).unsqueeze(0));
        allowed.unsqueeze(1)
    }

    fn rotate_half(x: &Tensor) -> Tensor {
        let half = x.size()[3] / 2;
        Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], 3)
    }

    /// Self-attention of `x` (b, s, d) with RoPE; appends this pass's keys and values to `cache` (layer
    /// `li`) when given.
    fn attend(
        &self,
        li: usize,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Tensor,
        cache: Option<&mut KvCache>,
        ctx: &Ctx,
    ) -> Tensor {
        let a = &self.layers[li].attn;
        let (b, s) = (x.size()[0], x.size()[1]);
        let (h, kvh, hd) = (self.cfg.num_attention_heads, self.cfg.kv_heads(), self.cfg.head_dim());
        let split = |y: Tensor, n: i64| y.view([b, s, n, hd]).transpose(1, 2); // (b, n, s, hd)
        let (cos, sin) = rope;
        let turn = |t: Tensor| &t * cos + Self::rotate_half(&t) * sin;
        let q = turn(split(a.q.forward(x, ctx), h));
        let mut k = turn(split(a.k.forward(x, ctx), kvh));
        let mut v = split(a.v.forward(x, ctx), kvh);
        if let Some(c) = cache {
            if let (Some(pk), Some(pv)) = (c.k.get(li), c.v.get(li)) {
                k = Tensor::cat(&[pk, &k], 2);
                v = Tensor::cat(&[pv, &v], 2);
                c.k[li] = k.shallow_clone();
                c.v[li] = v.shallow_clone();
            } else {
                c.k.push(k.shallow_clone());
                c.v.push(v.shallow_clone());
            }
        }
        let t = k.size()[2];
        let rep = h / kvh; // grouped-query attention: each KV head serves `rep` query heads
        let expand = |y: Tensor| y.unsqueeze(2).expand([b, kvh, rep, t, hd], false).reshape([b, h, t, hd]);
        let (k, v) = (expand(k), expand(v));
        let p = if ctx.train { self.cfg.attention_dropout } else { 0.0 };
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), p, false, None, false);
        a.o.forward(&out.transpose(1, 2).reshape([b, s, h * hd]), ctx) // (b, s, d)
    }

    fn mlp(&self, m: &Mlp, x: &Tensor, ctx: &Ctx) -> Tensor {
        m.down.forward(&(self.act(&m.gate.forward(x, ctx)) * m.up.forward(x, ctx)), ctx)
    }

    /// The final-normed hidden states (b, s, d) of `ids` (b, s) at `span`.
    fn run(&self, ids: &Tensor, span: Span, mut cache: Option<&mut KvCache>, ctx: &Ctx) -> Tensor {
        let s = ids.size()[1];
        let mut x = Tensor::embedding(&self.embed, ids, -1, false, false).to_kind(self.act); // (b, s, d)
        let rope = self.rope(span.positions);
        let full = Self::mask(span.keys, s, None);
        for (li, layer) in self.layers.iter().enumerate() {
            let windowed = layer.window.map(|w| Self::mask(span.keys, s, Some(w)));
            let mask = windowed.as_ref().unwrap_or(&full);
            let n = layer.input_ln.forward(&x, ctx);
            x = &x + self.attend(li, &n, &rope, mask, cache.as_deref_mut(), ctx);
            let n = layer.post_ln.forward(&x, ctx);
            x = &x + self.mlp(&layer.mlp, &n, ctx);
        }
        self.norm.forward(&x, ctx)
    }

    /// Position ids of a (possibly left-padded) batch: the count of real tokens before each one.
    pub fn positions(mask: &Tensor) -> Tensor {
        (mask.cumsum(1, Kind::Int64) - 1).clamp_min(0)
    }

    /// Final-normed hidden states (b, t, d) of a padded batch (ids, mask: (b, t) int64).
    pub fn hidden(&self, ids: &Tensor, mask: &Tensor, ctx: &Ctx) -> Tensor {
        let positions = Self::positions(mask);
        self.run(ids, Span { positions: &positions, keys: mask }, None, ctx)
    }

    /// LM logits (.., vocab) of hidden states (.., d), fp32 (a bf16 head computes in bf16).
    pub fn lm_logits(&self, hidden: &Tensor) -> Tensor {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        hidden.to_kind(head.kind()).linear::<Tensor>(head, None).to_kind(Kind::Float)
    }

    /// Logits (b, t, vocab) of every position of a padded batch.
    pub fn logits(&self, ids: &Tensor, mask: &Tensor, ctx: &Ctx) -> Tensor {
        self.lm_logits(&self.hidden(ids, mask, ctx))
    }

    /// Fills a fresh cache with a LEFT-padded prompt batch (b, t); returns the last position's logits (b, V).
    pub fn prefill(&self, ids: &Tensor, mask: &Tensor, ctx: &Ctx) -> (Tensor, KvCache) {
        let positions = Self::positions(mask);
        let mut cache = KvCache { k: Vec::new(), v: Vec::new(), keys: mask.shallow_clone() };
        let h = self.run(ids, Span { positions: &positions, keys: mask }, Some(&mut cache), ctx);
        let last = h.narrow(1, h.size()[1] - 1, 1).squeeze_dim(1);
        (self.lm_logits(&last), cache)
    }

    /// One more token per row (b): its logits (b, V), the cache extended by it.
    pub fn step(&self, next: &Tensor, cache: &mut KvCache, ctx: &Ctx) -> Tensor {
        let b = next.size()[0];
        let positions = cache.keys.sum_dim_intlist(1, true, Kind::Int64); // (b, 1): real tokens so far
        cache.keys = Tensor::cat(&[&cache.keys, &Tensor::ones([b, 1], (Kind::Int64, next.device()))], 1);
        let keys = cache.keys.shallow_clone();
        let h = self.run(&next.view([b, 1]), Span { positions: &positions, keys: &keys }, Some(cache), ctx);
        self.lm_logits(&h.squeeze_dim(1))
    }

    /// Greedy decoding of a LEFT-padded prompt batch with the KV cache: (b, max_new) new ids; a row that
    /// emits one of `eos` keeps it and is padded with `pad` after it; stops once every row has.
    pub fn generate(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        max_new: i64,
        eos: &[i64],
        pad: i64,
        ctx: &Ctx,
    ) -> Tensor {
        tch::no_grad(|| {
            let ctx = &Ctx { train: false, ..*ctx };
            let b = ids.size()[0];
            let dev = ids.device();
            let (mut logits, mut cache) = self.prefill(ids, mask, ctx);
            let mut done = Tensor::zeros([b], (Kind::Bool, dev));
            let mut out = Vec::new();
            for step in 0..max_new {
                let next = logits.argmax(-1, false);
                let next = next.where_self(&done.logical_not(), &next.full_like(pad));
                for &e in eos {
                    done = done.logical_or(&next.eq(e));
                }
                out.push(next.shallow_clone());
                if step + 1 == max_new || done.all().int64_value(&[]) == 1 {
                    break;
                }
                logits = self.step(&next, &mut cache, ctx);
            }
            Tensor::stack(&out, 1)
        })
    }

    pub fn device(&self) -> Device {
        self.embed.device()
    }

    pub fn linear_sites(&self) -> Vec<&LinearSite> {
        let mut v = Vec::new();
        for l in &self.layers {
            v.extend([&l.attn.q, &l.attn.k, &l.attn.v, &l.attn.o, &l.mlp.gate, &l.mlp.up, &l.mlp.down]);
        }
        v
    }

    pub fn norm_sites(&self) -> Vec<&RmsNormSite> {
        let mut v = Vec::new();
        for l in &self.layers {
            v.extend([&l.input_ln, &l.post_ln]);
        }
        v.push(&self.norm);
        v
    }

    /// Every checkpoint tensor under its name with the linear deltas folded in (gates at 1): LoRA into
    /// the weight, BitFit into the Linear's bias (a Linear without one gets it: the merged config says
    /// so), LNFit into the norm's scale. Err names a site whose deltas cannot be folded.
    pub fn folded_tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String> {
        let f32 = |t: &Tensor| t.detach().to_kind(Kind::Float).to_device(Device::Cpu);
        let mut out = vec![("model.embed_tokens.weight".to_string(), f32(&self.embed))];
        for s in self.linear_sites() {
            let (w, b) = s.folded().ok_or_else(|| s.name.clone())?;
            out.push((format!("{}.weight", s.name), f32(&w)));
            let has_bitfit =
                s.deltas.iter().any(|d| matches!(d.module, crate::delta::DeltaModule::Bitfit(_)));
            if s.bias.is_some() || has_bitfit {
                out.push((format!("{}.bias", s.name), f32(&b)));
            }
        }
        for s in self.norm_sites() {
            let mut w = s.weight.detach().copy();
            for d in &s.deltas {
                match &d.module {
                    crate::delta::DeltaModule::Lnfit(m) => w += m.w.detach(),
                    _ => return Err(s.name.clone()),
                }
            }
            out.push((format!("{}.weight", s.name), f32(&w)));
        }
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".into(), f32(h)));
        }
        Ok(out)
    }
}
