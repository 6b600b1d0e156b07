#!/usr/bin/env python3
"""Golden fixtures for the S3PET bi-level search: two search steps on the tiny BERT, first order
and second order (DARTS), in float64, stored as fp32.

Writes (relative to the repository root):
  tests/fixtures/tiny_bert/search_order1.safetensors
  tests/fixtures/tiny_bert/search_order2.safetensors
Both hold the same inputs and initial values; see tools/README.md ("Search fixtures") for the
layout and /work/shared/docs/S3PET.md sections 1-4 for the algorithm.

Needs tests/fixtures/tiny_bert/{config.json, model.safetensors} (written by make_fixtures.py,
whose helpers this script imports). Run through tools/make_fixtures.sh, which runs this after
make_fixtures.py with the CPU-only torch environment (LD_LIBRARY_PATH, CUDA_VISIBLE_DEVICES="").

Deterministic: one seeded generator, one CPU thread, float64 arithmetic on fp32-exact inputs;
re-running gives byte-identical files. Self-checks (the script fails if one does not hold): the
budget solve converges, the hand-written AdamW update used for the virtual step equals
torch.optim.AdamW's, and a central finite-difference check of the first-order alpha gradient.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (tiny-model loader, seeding and fp32 helpers)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

CALC = mf.CALC  # float64
TINY = mf.TINY

# ---- search set-up ---------------------------------------------------------------------------
LORA_RANK, LORA_SCALE = 1, 16.0  # lora_alpha 16 / r 1
BUDGET = 500.0                   # absolute parameter budget B
BETA = 1.0                       # sigmoid temperature
T_TOTAL = 4                      # schedule length; we run the first STEPS steps
STEPS = 2
LR_W, LR_A = 3e-4, 0.1           # peak learning rates, linear decay to 0 over T_TOTAL, no warm-up
ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY = (0.9, 0.999), 1e-8, 0.0
CLIP = 2.0                       # global L2 gradient-norm clip, on w and on alpha separately
DARTS_R = 0.01                   # eps = DARTS_R / ||dw'||
CLAMP = 1e-6                     # logit(x) clamps x to [CLAMP, 1 - CLAMP]
SHIFT_TOL = 1e-12                # |sum n p - B| < SHIFT_TOL * B
INIT_STD, ALPHA_STD = 0.1, 0.5   # delta tensors N(0, 0.1^2), structure logits N(0, 0.5^2)
BATCH, SEQ = 4, 8
PAD, CLS, SEP, FIRST_ID = 0, 2, 3, 5
ROW_LENGTHS = [8, 7, 6, 4]       # permuted per batch; the length-7 row is the sentence pair
PAIR_LEN, PAIR_A = 7, 2          # [CLS] a a [SEP] b b [SEP] [PAD], type 1 on "b b [SEP]"
FD_H = 1e-5                      # central-difference step of the alpha-gradient check
FD_TOL = 1e-6

D = mf.TINY_CFG["hidden_size"]
K = D // 32  # LRA bottleneck
SITE_TYPES = [("embeddings.LayerNorm", ("lnfit", "bitfit"))] + [
    (f"encoder.layer.{i}.{m}", types)
    for i in mf.LAYERS
    for m, types in (
        ("attention.self.query", ("lora", "bitfit")),
        ("attention.self.key", ("lora", "bitfit")),
        ("attention.self.value", ("lora", "bitfit")),
        ("attention.output.dense", ("lora", "bitfit", "lra")),
        ("attention.output.LayerNorm", ("lnfit", "bitfit")),
        ("intermediate.dense", ("lora", "bitfit")),
        ("output.dense", ("lora", "bitfit", "lra")),
        ("output.LayerNorm", ("lnfit", "bitfit")),
    )
]
CANDIDATES = [(site, kind) for site, types in SITE_TYPES for kind in types]  # 38, fixed order
PARALLEL = ("lora", "lnfit")
LRA_NAMES = ("down_left", "down_right", "down_bias", "up_left", "up_right", "up_bias")


def delta_shapes(site, kind, module):
    """{our tensor name: shape} of one candidate, in storage / draw order."""
    if isinstance(module, torch.nn.Linear):
        d_in, d_out = module.in_features, module.out_features
    else:
        d_in = d_out = module.normalized_shape[0]
    if kind == "lora":
        return {f"{site}.lora_A": (LORA_RANK, d_in), f"{site}.lora_B": (d_out, LORA_RANK)}
    if kind == "bitfit":
        return {f"{site}.bitfit": (d_out,)}
    if kind == "lnfit":
        return {f"{site}.lnfit": (d_out,)}
    if kind == "lra":
        shapes = dict(down_left=(K,), down_right=(d_out,), down_bias=(K,),
                      up_left=(d_out,), up_right=(K,), up_bias=(d_out,))
        return {f"{site}.lra.{n}": shapes[n] for n in LRA_NAMES}
    raise ValueError(kind)


# ---- gated model -----------------------------------------------------------------------------
class GatedBert:
    """The tiny transformers BERT (frozen, dropout 0, float64) with every candidate attached by a
    forward hook on its site. `params` (our names -> tensors, deltas + classifier) and `z` (gates,
    [38]) are read at call time, so any set of weights (w, w', w+-) can be evaluated."""

    def __init__(self):
        self.model = mf.load_tiny(dropout=False)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.train()  # every dropout probability is 0
        self.params = None
        self.z = None
        self.shapes = {}  # all delta tensors, candidate order
        self.n = []       # parameter count per candidate
        for site, _types in SITE_TYPES:
            module = self.model.bert.get_submodule(site)
            idx = [i for i, (s, _) in enumerate(CANDIDATES) if s == site]
            for i in idx:
                sh = delta_shapes(site, CANDIDATES[i][1], module)
                self.shapes.update(sh)
                self.n.append(sum(math.prod(s) for s in sh.values()))
            module.register_forward_hook(self._hook(site, idx))

    def _hook(self, site, idx):
        def hook(module, args, out):
            x, P, z = args[0], self.params, self.z
            h = out
            for i in idx:  # parallel deltas read the site input
                kind = CANDIDATES[i][1]
                if kind == "lora":
                    h = h + z[i] * LORA_SCALE * F.linear(F.linear(x, P[f"{site}.lora_A"]), P[f"{site}.lora_B"])
                elif kind == "lnfit":
                    xn = F.layer_norm(x, x.shape[-1:], eps=module.eps)  # no affine
                    h = h + z[i] * (P[f"{site}.lnfit"] * xn)
            y = h
            for i in idx:  # sequential deltas all read h; outputs are summed
                kind = CANDIDATES[i][1]
                if kind == "bitfit":
                    y = y + z[i] * P[f"{site}.bitfit"]
                elif kind == "lra":
                    q = lambda n: P[f"{site}.lra.{n}"]  # noqa: E731
                    a = F.gelu(F.linear(h, torch.outer(q("down_left"), q("down_right")), q("down_bias")),
                               approximate="none")
                    y = y + z[i] * F.linear(a, torch.outer(q("up_left"), q("up_right")), q("up_bias"))
            return y

        return hook

    def loss(self, params, z, batch):
        """Mean cross-entropy of the classifier on the pooled output."""
        self.params, self.z = params, z
        try:
            pooled = self.model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     token_type_ids=batch["token_type_ids"]).pooler_output
        finally:
            self.params, self.z = None, None
        logits = F.linear(pooled, params["classifier.weight"], params["classifier.bias"])
        return F.cross_entropy(logits, batch["labels"])


# ---- gates -----------------------------------------------------------------------------------
def solve_shift(alpha, n):
    """b with sum_i n_i sigmoid((alpha_i - b) / beta) = B, by float64 bisection run until the
    bracket cannot be split further; no gradient."""
    alpha = alpha.detach()

    def excess(b):
        return float((n * torch.sigmoid((alpha - b) / BETA)).sum()) - BUDGET

    lo, hi = float(alpha.min()) - 40 * BETA, float(alpha.max()) + 40 * BETA
    assert excess(lo) > 0 > excess(hi), "budget not bracketed"
    while True:
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
    b = lo if abs(excess(lo)) <= abs(excess(hi)) else hi
    assert abs(excess(b)) < SHIFT_TOL * BUDGET, f"budget solve did not converge: {excess(b)}"
    return b


def gate_probs(alpha, b, sum_fixed=None):
    """p = sigmoid((alpha - b)/beta) rescaled by stopgrad(sum p) / sum p (b is a constant).
    sum_fixed replaces stopgrad(sum p) by a given constant (finite-difference check only)."""
    p = torch.sigmoid((alpha - b) / BETA)
    s = p.sum()
    return p * (s.detach() if sum_fixed is None else sum_fixed) / s


def logit(x):
    x = x.clamp(CLAMP, 1.0 - CLAMP)
    return torch.log(x) - torch.log1p(-x)


def relax(p, u):
    return torch.sigmoid(logit(p) + logit(u))


# ---- optimisation ----------------------------------------------------------------------------
def adamw_update(param, grad, state, lr):
    """torch.optim.AdamW's update from a COPY of its per-parameter state (nothing is modified):
    step t -> t + 1, bias-corrected moments, decoupled weight decay. Returns the new value."""
    b1, b2 = ADAM_BETAS
    t = (float(state["step"]) if state else 0.0) + 1.0
    m = state["exp_avg"] * b1 + (1 - b1) * grad if state else (1 - b1) * grad
    v = state["exp_avg_sq"] * b2 + (1 - b2) * grad * grad if state else (1 - b2) * grad * grad
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    return param * (1 - lr * WEIGHT_DECAY) - (lr / bc1) * m / (v.sqrt() / math.sqrt(bc2) + ADAM_EPS)


def adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)


def global_norm(tensors):
    return torch.sqrt(sum((t * t).sum() for t in tensors))


def alpha_grad_order2(net, w, opt_w, alpha, b, u, bw, ba, xi):
    """DARTS hypergradient; returns (alpha.grad, L_val(w', alpha))."""
    names = list(w)
    # (a) train gradient at w with the gates detached; virtual AdamW step from a copy of the state
    z = relax(gate_probs(alpha, b).detach(), u)
    g = torch.autograd.grad(net.loss(w, z, bw), [w[k] for k in names])
    w_virt = {k: adamw_update(w[k].detach(), gk, opt_w.state.get(w[k], {}), xi).requires_grad_()
              for k, gk in zip(names, g)}
    # (b) validation loss at w'; gradients wrt alpha and w'
    lv = net.loss(w_virt, relax(gate_probs(alpha, b), u), ba)
    d = torch.autograd.grad(lv, [alpha] + [w_virt[k] for k in names])
    d_alpha, dw = d[0], dict(zip(names, d[1:]))
    # (c), (d) finite-difference Hessian-vector term at w +- eps dw'
    eps = DARTS_R / global_norm(dw.values())

    def d_alpha_train(sign):
        w_pm = {k: w[k].detach() + sign * eps * dw[k] for k in names}
        return torch.autograd.grad(net.loss(w_pm, relax(gate_probs(alpha, b), u), bw), [alpha])[0]

    d_plus, d_minus = d_alpha_train(1.0), d_alpha_train(-1.0)
    # (e) w itself was never modified
    return d_alpha - xi * (d_plus - d_minus) / (2 * eps), lv


def run_search(net, setup, order):
    n = setup["n"]
    w = {k: v.to(CALC).clone().requires_grad_() for k, v in setup["init_w"].items()}
    alpha = setup["init_alpha"].to(CALC).clone().requires_grad_()
    opt_w, opt_a = adamw(list(w.values()), LR_W), adamw([alpha], LR_A)
    rec = {}
    for s in range(STEPS):
        frac = (T_TOTAL - s) / T_TOTAL
        lr_w, lr_a = LR_W * frac, LR_A * frac
        bw, ba = setup["batches"][f"bw{s}"], setup["batches"][f"ba{s}"]
        u_a, u_w = setup["u"][f"u.alpha{s}"].to(CALC), setup["u"][f"u.w{s}"].to(CALC)

        # 1. alpha step (b for the current alpha, shared noise u.alpha<s> in every pass)
        b = solve_shift(alpha, n)
        if order == 1:
            val = net.loss(w, relax(gate_probs(alpha, b), u_a), ba)
            ga = torch.autograd.grad(val, [alpha])[0]
        else:
            ga, val = alpha_grad_order2(net, w, opt_w, alpha, b, u_a, bw, ba, xi=lr_w)
        rec[f"step{s}.alpha_grad"] = ga.detach().clone()
        alpha.grad = ga.detach().clone()
        torch.nn.utils.clip_grad_norm_([alpha], CLIP)
        opt_a.param_groups[0]["lr"] = lr_a
        opt_a.step()
        opt_a.zero_grad(set_to_none=True)

        # 2. w step (b for the new alpha, gates detached, fresh noise u.w<s>)
        b = solve_shift(alpha, n)
        p = gate_probs(alpha.detach(), b)
        train = net.loss(w, relax(p, u_w), bw)
        gw = torch.autograd.grad(train, list(w.values()))
        for t, gt in zip(w.values(), gw):
            t.grad = gt
        gnorm = torch.nn.utils.clip_grad_norm_(list(w.values()), CLIP)
        expect = {k: adamw_update(t.detach(), t.grad, opt_w.state.get(t, {}), lr_w) for k, t in w.items()}
        before = {k: t.detach().clone() for k, t in w.items()}
        opt_w.param_groups[0]["lr"] = lr_w
        opt_w.step()
        opt_w.zero_grad(set_to_none=True)
        for k, t in w.items():  # the virtual step's AdamW equals torch's
            upd = (t.detach() - before[k]).abs().max()
            err = (t.detach() - expect[k]).abs().max()
            assert err <= 1e-9 * upd + 1e-300, f"AdamW mismatch on {k}: {err} vs update {upd}"

        rec[f"step{s}.alpha"] = alpha.detach().clone()
        rec[f"step{s}.p"] = p.detach()
        rec[f"step{s}.shift"] = torch.tensor([b], dtype=CALC)
        rec[f"step{s}.val_loss"] = val.detach().reshape(1)
        rec[f"step{s}.train_loss"] = train.detach().reshape(1)
        rec[f"step{s}.w_grad_norm"] = gnorm.detach().reshape(1)
        for k, t in w.items():
            rec[f"step{s}.w.{k}"] = t.detach().clone()
        print(f"order {order} step {s}: shift {b:.9f}  val_loss {val.item():.9f}  "
              f"train_loss {train.item():.9f}  |g_alpha| {ga.norm().item():.4g}  |g_w| {gnorm.item():.4g}  "
              f"p[:5] {[round(x, 7) for x in p[:5].tolist()]}")
    return rec


# ---- inputs ----------------------------------------------------------------------------------
def make_batch(g, vocab):
    ids = torch.randint(FIRST_ID, vocab, (BATCH, SEQ), generator=g, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    lengths = [ROW_LENGTHS[i] for i in torch.randperm(BATCH, generator=g).tolist()]
    for r, n in enumerate(lengths):
        ids[r, 0], ids[r, n - 1] = CLS, SEP
        ids[r, n:] = PAD
        mask[r, :n] = 1
        if n == PAIR_LEN:
            ids[r, PAIR_A + 1] = SEP
            types[r, PAIR_A + 2:n] = 1
    labels = torch.randint(0, mf.TINY_CFG["num_labels"], (BATCH,), generator=g, dtype=torch.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}


def make_setup(net):
    """All random draws, from one generator in a fixed order: delta tensors (candidate order),
    alpha, then per step the D_w batch, the D_alpha batch, u.alpha, u.w. Every value is fp32."""
    g = mf.gen("search")
    init_w = {k: mf.rand(g, *sh, std=INIT_STD) for k, sh in net.shapes.items()}
    assert all((v != 0).all() for v in init_w.values())
    init_w["classifier.weight"] = mf.f32(net.model.classifier.weight)
    init_w["classifier.bias"] = mf.f32(net.model.classifier.bias)
    init_alpha = mf.rand(g, len(CANDIDATES), std=ALPHA_STD)
    vocab = net.model.config.vocab_size
    batches, u = {}, {}
    for s in range(STEPS):
        batches[f"bw{s}"] = make_batch(g, vocab)
        batches[f"ba{s}"] = make_batch(g, vocab)
        for tag in ("alpha", "w"):
            u[f"u.{tag}{s}"] = torch.rand(len(CANDIDATES), generator=g, dtype=torch.float32) * 0.98 + 0.01
    return dict(n=torch.tensor(net.n, dtype=CALC), init_w=init_w, init_alpha=init_alpha, batches=batches, u=u)


def common_record(setup):
    rec = {f"init.{k}": v for k, v in setup["init_w"].items()}
    rec["init.alpha"] = setup["init_alpha"]
    for name, batch in setup["batches"].items():
        for k, v in batch.items():
            rec[f"{name}.{k}"] = v
    rec.update(setup["u"])
    rec["candidates.n"] = setup["n"]
    rec["budget"] = torch.tensor([BUDGET])
    return rec


# ---- finite-difference check -----------------------------------------------------------------
def fd_check(net, setup):
    """Order-1 alpha gradient at step 0 vs central differences on every alpha entry. b and the
    stop-gradient sum in the rescaling are held at their values at the base point, which is the
    function the analytic gradient differentiates. Also prints (not checked) the total derivative
    with b re-solved, to show how far "no gradient through b" is from it."""
    n = setup["n"]
    w = {k: v.to(CALC) for k, v in setup["init_w"].items()}
    alpha0 = setup["init_alpha"].to(CALC)
    u, ba = setup["u"]["u.alpha0"].to(CALC), setup["batches"]["ba0"]
    b0 = solve_shift(alpha0, n)
    s0 = torch.sigmoid((alpha0 - b0) / BETA).sum()
    a = alpha0.clone().requires_grad_()
    grad = torch.autograd.grad(net.loss(w, relax(gate_probs(a, b0), u), ba), [a])[0]
    fd, fd_total = torch.zeros_like(grad), torch.zeros_like(grad)
    with torch.no_grad():
        for i in range(len(alpha0)):
            vals, vals_total = [], []
            for sign in (1.0, -1.0):
                ap = alpha0.clone()
                ap[i] += sign * FD_H
                vals.append(net.loss(w, relax(gate_probs(ap, b0, sum_fixed=s0), u), ba))
                vals_total.append(net.loss(w, relax(gate_probs(ap, solve_shift(ap, n)), u), ba))
            fd[i] = (vals[0] - vals[1]) / (2 * FD_H)
            fd_total[i] = (vals_total[0] - vals_total[1]) / (2 * FD_H)
    scale = grad.abs().max()
    err = ((fd - grad).abs().max() / scale).item()
    big = grad.abs() > 1e-2 * scale
    err_entry = ((fd - grad).abs()[big] / grad.abs()[big]).max().item()
    err_total = ((fd_total - grad).abs().max() / scale).item()
    print(f"FD check (order-1 alpha grad, step 0, all {len(alpha0)} entries, h {FD_H:g}, b and sum held): "
          f"max |fd - grad| / max|grad| = {err:.3e}, max per-entry relative error "
          f"(|grad| > 1% of max) = {err_entry:.3e}; max|grad| = {scale.item():.4e}")
    print(f"  for comparison, total derivative with b re-solved: max |fd - grad| / max|grad| = {err_total:.3e}")
    assert err < FD_TOL, "finite-difference check failed"


# ---- main ------------------------------------------------------------------------------------
def save(rec, path):
    # One metadata entry only: safetensors writes the metadata map in hash order, so two entries
    # would make the header bytes differ from run to run.
    meta = {"candidates": ",".join(f"{s}:{k}" for s, k in CANDIDATES)}
    save_file({k: (mf.f32(v) if v.is_floating_point() else v.contiguous()) for k, v in rec.items()},
              str(path), metadata=meta)
    path.chmod(0o644)


def main():
    mf.quiet_deterministic()

    net = GatedBert()
    assert len(CANDIDATES) == 38 and sum(net.n) > BUDGET
    setup = make_setup(net)
    print(f"search: {len(CANDIDATES)} candidates, {sum(net.n)} candidate parameters, budget {BUDGET:g}, "
          f"{len(setup['init_w'])} w tensors")
    fd_check(net, setup)
    common = common_record(setup)
    for order in (1, 2):
        rec = dict(common)
        rec.update(run_search(net, setup, order))
        path = TINY / f"search_order{order}.safetensors"
        save(rec, path)
        print(f"search_order{order}: {len(rec)} tensors, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
