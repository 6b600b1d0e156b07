//! The per-site delta executor: a site's deltas run as one small group of kernels with its base op.
//!
//! - BitFit and LNFit fold into the base op's own affine parameters: `linear(x, W, b + sum g_i b_i)`,
//!   `layer_norm(x, w + sum g_i w_i, b + sum g_j b_j)`; no full-size tensor per module.
//! - LoRA factors that read the same input run as one matmul for every A (the members of a
//!   [`LinearGroup`](super::sites::LinearGroup), e.g. query, key and value, share it) and one
//!   `addmm` per output for the B factors, added into the base output.
//! - Nonlinear sequential modules (LRA, adapters) at a block output h add `[inner_1(h), .., 1] @
//!   [m_1; ..; c]` in one `addmm`, where c sums the site's constant vectors (BitFit, the modules' up
//!   biases), because those read h before any of them is added.
//!
//! The gates are in the parameters already (see [`crate::delta::pass`]), or applied to each module's
//! gated factor (the reference path, [`crate::delta::Delta::params`]). In a replica pass the delta
//! parameters have a leading replica dimension R and the activations hold R copies of the batch, one
//! after the other (rows r b .. (r + 1) b): the frozen base op runs once over all of them and each
//! delta's term per replica.
use super::sites::{LinearSite, NormSite, RmsNormSite};
use crate::delta::{Contribution, Ctx, Delta, SequentialKind};
use tch::{Kind, Tensor};

/// One site's delta terms for this pass, sorted by how they are applied (fp32, gated).
#[derive(Default)]
struct Terms {
    bias: Vec<Tensor>,
    scale: Vec<Tensor>,
    low_rank: Vec<(Tensor, Tensor, f64)>,
    seq: Vec<(SequentialKind, Vec<Tensor>, Tensor, Tensor)>,
}

impl Terms {
    fn of(deltas: &[Delta], ctx: &Ctx) -> Terms {
        let mut t = Terms::default();
        for d in deltas {
            match d.contribution(ctx) {
                Contribution::Bias(b) => t.bias.push(b),
                Contribution::Scale(w) => t.scale.push(w),
                Contribution::LowRank { a, b, dropout } => t.low_rank.push((a, b, dropout)),
                Contribution::Sequential { module, params, m, bias } => t.seq.push((module, params, m, bias)),
            }
        }
        t
    }
}

/// `base` plus every tensor of `adds` (in fp32), cast to `kind`; `None` when both are empty.
fn sum_onto(base: Option<&Tensor>, adds: &[Tensor], kind: Kind) -> Option<Tensor> {
    if adds.is_empty() {
        return base.map(|b| b.to_kind(kind));
    }
    let first = match base {
        Some(b) => b.to_kind(Kind::Float) + &adds[0],
        None => adds[0].shallow_clone(),
    };
    Some(adds[1..].iter().fold(first, |acc, a| acc + a).to_kind(kind))
}

fn shallow(v: &[Tensor]) -> Vec<Tensor> {
    v.iter().map(|t| t.shallow_clone()).collect()
}

/// `x` (.., d) as rows: (n, d), or (r, n, d) in a replica pass.
fn rows(x: &Tensor, r: Option<i64>) -> Tensor {
    let d = *x.size().last().unwrap_or(&1);
    match r {
        Some(r) => x.reshape([r, -1, d]),
        None => x.reshape([-1, d]),
    }
}

/// y + u @ m on rows (one `addmm`, or `baddbmm` with a replica dimension).
fn mm_add(y: &Tensor, u: &Tensor, m: &Tensor) -> Tensor {
    if y.dim() == 2 {
        y.addmm(u, m)
    } else {
        y.baddbmm(u, m, 1.0, 1.0)
    }
}

/// The shape of `x` with its last dimension `d`.
fn with_last(x: &Tensor, d: i64) -> Vec<i64> {
    let mut s = x.size();
    if let Some(l) = s.last_mut() {
        *l = d;
    }
    s
}

/// x W^T + bias with a frozen `w`: in `w`'s dtype when the activations differ (bf16 weights under
/// fp32 activations: the matmul in bf16, the result and `delta_bias` in fp32).
fn base_linear(x: &Tensor, w: &Tensor, frozen: Option<&Tensor>, delta_bias: &[Tensor]) -> Tensor {
    let kind = x.kind();
    if w.kind() == kind {
        return x.linear(w, sum_onto(frozen, delta_bias, kind).as_ref());
    }
    let y = x.to_kind(w.kind()).linear(w, frozen).to_kind(kind);
    match sum_onto(None, delta_bias, kind) {
        Some(b) => y + b,
        None => y,
    }
}

/// The base outputs of a group's members (their frozen matmuls and foldable bias terms), one matmul
/// when the group has a fused weight.
fn base_outputs(
    sites: &[&LinearSite],
    fused: Option<&(Tensor, Option<Tensor>)>,
    x: &Tensor,
    folds: &[Vec<Tensor>],
) -> Vec<Tensor> {
    let Some((w, b)) = fused.filter(|_| sites.len() > 1) else {
        return sites.iter().zip(folds).map(|(s, f)| base_linear(x, &s.weight, s.bias.as_ref(), f)).collect();
    };
    let sizes: Vec<i64> = sites.iter().map(|s| s.shape.d_out()).collect();
    let y = if folds.iter().all(|f| f.is_empty()) {
        base_linear(x, w, b.as_ref(), &[])
    } else {
        // the members' bias terms side by side (a member without any: zeros, or its frozen bias)
        let opts = (Kind::Float, x.device());
        let each: Vec<Tensor> = sites
            .iter()
            .zip(folds)
            .map(|(s, f)| {
                let zero = || Tensor::zeros([s.shape.d_out()], opts);
                sum_onto(s.bias.as_ref(), f, Kind::Float).unwrap_or_else(zero)
            })
            .collect();
        let cat = Tensor::cat(&each, 0);
        if w.kind() == x.kind() {
            x.linear(w, Some(&cat.to_kind(x.kind())))
        } else {
            x.to_kind(w.kind()).linear::<Tensor>(w, None).to_kind(x.kind()) + cat
        }
    };
    y.split_with_sizes(&sizes, -1)
}

/// The outputs of a group of Linear sites that read the same `x`, in member order.
pub fn linear_group(
    sites: &[&LinearSite],
    fused: Option<&(Tensor, Option<Tensor>)>,
    x: &Tensor,
    ctx: &Ctx,
) -> Vec<Tensor> {
    let r = ctx.replicas();
    let terms: Vec<Terms> = sites.iter().map(|s| Terms::of(&s.deltas, ctx)).collect();
    // constant vectors fold into the base bias unless a nonlinear term reads h or replicas differ
    let folds: Vec<Vec<Tensor>> = terms
        .iter()
        .map(|t| if t.seq.is_empty() && r.is_none() { shallow(&t.bias) } else { Vec::new() })
        .collect();
    let base = base_outputs(sites, fused, x, &folds);
    let low_rank = low_rank_terms(&terms, x, ctx);
    let mut out = Vec::with_capacity(sites.len());
    for (i, (y, t)) in base.into_iter().zip(&terms).enumerate() {
        let d = sites[i].shape.d_out();
        let mut h = match (&low_rank[i], r) {
            (None, None) if t.seq.is_empty() => {
                out.push(y);
                continue;
            }
            _ => rows(&y, r),
        };
        if let Some(adds) = &low_rank[i] {
            h = adds.iter().fold(h, |h, (u, b)| mm_add(&h, u, &b.to_kind(h.kind()).transpose(-1, -2)));
        }
        let y = if t.seq.is_empty() {
            match sum_onto(None, &t.bias, h.kind()).filter(|_| r.is_some()) {
                Some(b) => h + b.unsqueeze(-2),
                None => h,
            }
        } else {
            sequential(&h, t)
        };
        out.push(y.reshape(with_last(x, d)));
    }
    out
}

/// Per member, the (u, b) pairs of its LoRA terms: u = x A^T with every A that reads `x` stacked into
/// one matmul (dropout-free ones; a LoRA with dropout in training draws its own mask).
fn low_rank_terms(terms: &[Terms], x: &Tensor, ctx: &Ctx) -> Vec<Option<Vec<(Tensor, Tensor)>>> {
    let r = ctx.replicas();
    let xs = rows(x, r);
    let stacked = |p: f64| p == 0.0 || !ctx.train;
    let a_all: Vec<Tensor> = terms
        .iter()
        .flat_map(|t| t.low_rank.iter().filter(|l| stacked(l.2)).map(|l| l.0.shallow_clone()))
        .collect();
    let u_all = (!a_all.is_empty()).then(|| {
        let a = Tensor::cat(&a_all, -2).to_kind(xs.kind()); // (.., sum r, d_in)
        xs.matmul(&a.transpose(-1, -2)) // (.., n, sum r)
    });
    let mut col = 0;
    terms
        .iter()
        .map(|t| {
            if t.low_rank.is_empty() {
                return None;
            }
            let pairs = t.low_rank.iter().map(|(a, b, p)| {
                let rank = a.size()[a.dim() - 2];
                let u = match (&u_all, stacked(*p)) {
                    (Some(u), true) => {
                        col += rank;
                        u.narrow(-1, col - rank, rank)
                    }
                    _ => xs.dropout(*p, ctx.train).matmul(&a.to_kind(xs.kind()).transpose(-1, -2)),
                };
                (u, b.shallow_clone())
            });
            Some(pairs.collect())
        })
        .collect()
}

/// h + [inner_1(h), .., 1] @ [m_1; ..; c]: the nonlinear sequential terms of a block output and its
/// constant vectors c, all reading the same h.
fn sequential(h: &Tensor, t: &Terms) -> Tensor {
    let kind = h.kind();
    let mut us = Vec::with_capacity(t.seq.len() + 1);
    let mut ms = Vec::with_capacity(t.seq.len() + 1);
    let mut consts = shallow(&t.bias);
    for (module, params, m, bias) in &t.seq {
        let params: Vec<Tensor> = params.iter().map(|p| p.to_kind(kind)).collect();
        us.push(module.inner(&params, h));
        ms.push(m.to_kind(kind));
        consts.push(bias.shallow_clone());
    }
    if let Some(c) = sum_onto(None, &consts, kind) {
        us.push(Tensor::ones(with_last(h, 1).as_slice(), (kind, h.device())));
        ms.push(c.unsqueeze(-2));
    }
    mm_add(h, &Tensor::cat(&us, -1), &Tensor::cat(&ms, -2))
}

/// A LayerNorm with LNFit folded into its scale and BitFit into its shift.
pub fn norm(site: &NormSite, x: &Tensor, ctx: &Ctx) -> Tensor {
    let t = Terms::of(&site.deltas, ctx);
    let d = site.weight.size()[0];
    let kind = x.kind();
    let w = sum_onto(Some(&site.weight), &t.scale, kind);
    let b = sum_onto(Some(&site.bias), &t.bias, kind);
    match ctx.replicas().filter(|_| !(t.scale.is_empty() && t.bias.is_empty())) {
        None => x.layer_norm([d], w.as_ref(), b.as_ref(), site.eps, true),
        Some(r) => {
            let n = rows(&x.layer_norm::<Tensor>([d], None, None, site.eps, true), Some(r));
            let (w, b) = (
                w.unwrap_or_else(|| site.weight.to_kind(kind)),
                b.unwrap_or_else(|| site.bias.to_kind(kind)),
            );
            b.unsqueeze(-2).addcmul(&n, &w.unsqueeze(-2)).reshape(x.size().as_slice())
        }
    }
}

/// An RMS norm: n = x / sqrt(mean(x²) + eps) in fp32; n ⊙ (w + LNFit scales) + BitFit biases.
pub fn rms_norm(site: &RmsNormSite, x: &Tensor, ctx: &Ctx) -> Tensor {
    let t = Terms::of(&site.deltas, ctx);
    let kind = x.kind();
    let xf = x.to_kind(Kind::Float);
    let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    let n = (xf * (var + site.eps).rsqrt()).to_kind(kind); // (.., d)
    let w = sum_onto(Some(&site.weight), &t.scale, kind).unwrap_or_else(|| site.weight.to_kind(kind));
    let b = sum_onto(None, &t.bias, kind);
    match ctx.replicas().filter(|_| !(t.scale.is_empty() && t.bias.is_empty())) {
        None => match b {
            Some(b) => b.addcmul(&n, &w),
            None => &n * w,
        },
        Some(r) => {
            let nr = rows(&n, Some(r));
            let y = match b {
                Some(b) => b.unsqueeze(-2).addcmul(&nr, &w.unsqueeze(-2)),
                None => nr * w.unsqueeze(-2),
            };
            y.reshape(x.size().as_slice())
        }
    }
}
