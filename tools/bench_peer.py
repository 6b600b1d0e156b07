#!/usr/bin/env python3
"""The PyTorch side of `s3pet bench`: training-step time of transformers (+ PEFT for lora) on a fixed batch.

    python tools/bench_peer.py --shape minilm,bert-base --workload full,lora --batch-size 16 \
        --seq-len 128 --warmup 2 --steps 5 --device cpu --threads 4
    s3pet bench --shape minilm --workload lora --steps 0 --warmup 0 --emit-structures /tmp/st
    python tools/bench_peer.py --shape minilm --workload retrain,search1,search2 \
        --structure /tmp/st/minilm.retrain.json --candidates /tmp/st/minilm.candidates.json

Shapes: minilm (6 layers, hidden 384, 12 heads, FFN 1536), bert-base (12, 768, 12, 3072), bert-large
(24, 1024, 16, 4096), vocab 30522, random weights (BertForSequenceClassification(config) after
torch.manual_seed(0), 2 labels); mpnet-base, roberta-base, deberta-v3-base: the real configs s3pet bench
compiles in (src/bench/shapes/), random weights (AutoModelForSequenceClassification.from_config, 2 labels;
LoRA targets and the head's modules by family); or a model directory (its weights, a fresh 2-label head).
The batch is the one s3pet bench builds: B rows of T token ids 1000 + (7919 i + 104729 j) mod (vocab - 1000),
token type 0, no padding, labels i mod 2. Train mode (the config's dropout 0.1) in every workload.

Workloads:
- full: everything trainable. lora: PEFT r 8, alpha 16, no LoRA dropout, on query and value, the
  classifier in modules_to_save. One step of these two is a plain training loop and nothing else:
  forward with labels (cross-entropy; under torch.autocast(bfloat16) with --dtype bf16), loss.backward(),
  torch.optim.AdamW (lr 1e-5, its defaults otherwise) step, zero_grad.
- retrain: the delta modules of --structure (a structure.json, e.g. the random one `s3pet bench
  --emit-structures` writes) on the frozen backbone, plus the classifier. One step = zero_grad, forward
  with labels, backward, clip_grad_norm_ 1.0 over the trainable parameters, AdamW (lr 1e-5, weight decay
  0) step (the step s3pet's training loop takes).
- search1, search2: one S3PET bi-level search step (src/search/bilevel.rs) over every candidate of
  --candidates, each behind a scalar gate z_i. Gates: p = sigmoid((alpha - b) / beta) with the shift b
  solved on the host (once per alpha value) so that sum n_i p_i = budget, p <- p * stopgrad(sum p) / sum p,
  z = sigmoid(logit p + logit u) with u ~ U(0, 1) per candidate. A step is an alpha step (w lr 3e-4,
  alpha lr 0.1) then a w step (lr 3e-4), both AdamW with weight decay 0 and clip_grad_norm_ 2.0, beta 1.
  search1 (first order): alpha step = one forward/backward to alpha only; w step = one forward/backward
  with the gates detached: 2 passes. search2 (DARTS second order): (1) gradient of the training loss in
  w (gates detached); w' = one virtual AdamW step from the w optimiser's state (lr 3e-4, no clipping),
  written into the parameters after a snapshot w0; (2) gradient of the validation loss at w' in alpha
  and w' (dw'); (3), (4) alpha gradients of the training loss at w0 +- eps dw', eps = 0.01 / |dw'|;
  alpha.grad = d_alpha - xi (d+ - d-) / (2 eps); w0 restored; then the w step: 5 passes. Only the delta
  weights and the head are ever copied, never the backbone. The same fixed batch is the D_w and D_alpha
  batch, as in s3pet bench.
Deltas (src/delta/): LoRA (parallel, reads the site input: s B(A x), A kaiming-uniform, B 0), LNFit
(parallel at a LayerNorm: w * layer_norm(x) without affine, w 0), BitFit (sequential: + b, b 0), LRA
(sequential: Up(gelu(Down(h))) with rank-1 factorised Down (k, d) and Up (d, k), k = d / 32, xavier factors),
Houlsby adapter (sequential, bottleneck 24). A site module (Linear or LayerNorm) is wrapped:
h = module(x) + sum of gated parallel deltas(x); y = h + sum of gated sequential deltas(h).

--dtype bf16 runs forward and loss under torch.autocast(bfloat16); weights, gradients and optimiser state
stay fp32. CUDA is synchronised before the clock is read. Peak memory: torch.cuda.max_memory_allocated on
CUDA, VmHWM of /proc/self/status on CPU (reset per row through /proc/self/clear_refs, as s3pet does).
One JSON line per row on stdout. --self-check runs correctness checks of the delta wiring and the search
step instead of timing (see self_check).
"""
import argparse
import functools
import gc
import json
import math
import os
import sys
import time

SHAPES = {
    "minilm": (6, 384, 12, 1536),
    "bert-base": (12, 768, 12, 3072),
    "bert-large": (24, 1024, 16, 4096),
}
# the other named shapes: real configs of other families, the files s3pet bench compiles in
FAMILY_SHAPES = ("mpnet-base", "roberta-base", "deberta-v3-base")
SHAPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "bench", "shapes")
# LoRA on the attention's query and value, by family (s3pet's `lora` method, src/structure.rs)
LORA_TARGETS = {"bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
                "mpnet": ["q", "v"], "deberta-v2": ["query_proj", "value_proj"], "distilbert": ["q_lin", "v_lin"]}
WORKLOADS = ("full", "lora", "retrain", "search1", "search2")

# s3pet's defaults (src/delta/spec.rs) and search settings (src/bench.rs)
LORA_RANK, LORA_ALPHA, ADAPTER_BOTTLENECK = 8, 16.0, 24
SEARCH_W_LR, SEARCH_ALPHA_LR, SEARCH_CLIP, SEARCH_BETA = 3e-4, 0.1, 2.0, 1.0
DARTS_R = 0.01        # eps = DARTS_R / |dw'|
LOGIT_CLAMP = 1e-6    # relax(): logit(x) clamps x to [1e-6, 1 - 1e-6]
SHIFT_TOL = 1e-6      # |sum n p - budget| <= SHIFT_TOL * budget (src/search/gates.rs)


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---- delta modules ------------------------------------------------------------------------------

def _torch():
    import torch

    return torch


class Gates:
    """The gate values of the current forward pass, shared by every delta of a model: None (every gate
    at 1, a plain structure) or z split into one 0-d tensor per candidate (split once per pass)."""

    def __init__(self):
        self.values = None

    def set(self, z):
        self.values = None if z is None else z.unbind(0)


@functools.lru_cache(maxsize=None)
def _delta_classes():
    """The delta module classes (defined once, lazily: torch is imported after argument parsing)."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class Delta(nn.Module):
        parallel = False

        def __init__(self, gate, gates):
            super().__init__()
            self.gate = gate              # candidate index, or None (never gated)
            self._gates = [gates]         # in a list: not a submodule

        def gated(self, y):
            g = self._gates[0].values
            return y if self.gate is None or g is None else y * g[self.gate]

    class LoRA(Delta):
        parallel = True

        def __init__(self, d_in, d_out, rank, alpha, dropout, gate, gates):
            super().__init__(gate, gates)
            bound = 1.0 / math.sqrt(d_in)  # kaiming-uniform with a = sqrt 5, as nn.Linear / PEFT
            self.lora_A = nn.Parameter(torch.empty(rank, d_in).uniform_(-bound, bound))
            self.lora_B = nn.Parameter(torch.zeros(d_out, rank))
            self.scale = alpha / rank
            self.dropout = dropout

        def forward(self, x):
            if self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            return self.gated(F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale)

    class LNFit(Delta):
        parallel = True

        def __init__(self, d, eps, gate, gates):
            super().__init__(gate, gates)
            self.lnfit = nn.Parameter(torch.zeros(d))
            self.eps = eps

        def forward(self, x):  # the site's input, normalised again without the affine
            return self.gated(F.layer_norm(x, x.shape[-1:], None, None, self.eps) * self.lnfit)

    class BitFit(Delta):
        def __init__(self, d, gate, gates):
            super().__init__(gate, gates)
            self.bitfit = nn.Parameter(torch.zeros(d))

        def forward(self, h):
            return self.gated(self.bitfit)

    class LRA(Delta):
        def __init__(self, d, k, gate, gates):
            super().__init__(gate, gates)

            def xavier(n, rows, cols):  # gain sqrt 2, the factor seen as a (rows, cols) matrix
                bound = math.sqrt(2.0) * math.sqrt(6.0 / (rows + cols))
                return nn.Parameter(torch.empty(n).uniform_(-bound, bound))

            self.down_left = xavier(k, k, 1)     # Down (k, d) = down_left (x) down_right
            self.down_right = xavier(d, 1, d)
            self.down_bias = nn.Parameter(torch.zeros(k))
            self.up_left = xavier(d, d, 1)       # Up (d, k) = up_left (x) up_right
            self.up_right = xavier(k, 1, k)
            self.up_bias = nn.Parameter(torch.zeros(d))

        def forward(self, h):  # rank 1: no (k, d) matrix is built
            s = (h @ self.down_right).unsqueeze(-1)
            mid = F.gelu(s * self.down_left + self.down_bias)
            u = (mid @ self.up_right).unsqueeze(-1)
            return self.gated(u * self.up_left + self.up_bias)

        def zero_up(self):
            with torch.no_grad():
                self.up_left.zero_()
                self.up_bias.zero_()

    class Adapter(Delta):
        def __init__(self, d, m, gate, gates):
            super().__init__(gate, gates)
            self.down = nn.Linear(d, m)
            self.up = nn.Linear(m, d)
            with torch.no_grad():
                self.down.weight.normal_(0.0, 0.01)
                self.down.bias.zero_()
                self.up.weight.zero_()
                self.up.bias.zero_()

        def forward(self, h):
            return self.gated(self.up(F.gelu(self.down(h))))

        def zero_up(self):
            with torch.no_grad():
                self.up.weight.zero_()
                self.up.bias.zero_()

    class DeltaSite(nn.Module):
        """A frozen Linear or LayerNorm of the backbone with the deltas placed there (s3pet's
        LinearSite / NormSite): h = base(x) + sum parallel(x); y = h + sum sequential(h)."""

        def __init__(self, base):
            super().__init__()
            self.base = base
            self.parallel = nn.ModuleList()
            self.sequential = nn.ModuleList()

        def add(self, delta):
            (self.parallel if delta.parallel else self.sequential).append(delta)

        def forward(self, x):
            h = self.base(x)
            for d in self.parallel:
                h = h + d(x)
            y = h
            for d in self.sequential:
                y = y + d(h)
            return y

    return dict(LoRA=LoRA, LNFit=LNFit, BitFit=BitFit, LRA=LRA, Adapter=Adapter, DeltaSite=DeltaSite)


def module_params(spec, site_module):
    """s3pet's parameter count of one module spec at a site (src/delta/spec.rs ModuleSpec::count)."""
    torch = _torch()
    if isinstance(site_module, torch.nn.Linear):
        d_in, d_out = site_module.in_features, site_module.out_features
    else:
        d_in = d_out = site_module.normalized_shape[0]
    kind = spec["type"]
    if kind == "lora":
        return spec.get("rank") or LORA_RANK, d_in, d_out, (spec.get("rank") or LORA_RANK) * (d_in + d_out)
    if kind == "lra":
        k = spec.get("bottleneck") or max(d_out // 32, 1)
        return k, d_in, d_out, 3 * d_out + 3 * k
    if kind == "adapter":
        m = spec.get("bottleneck") or ADAPTER_BOTTLENECK
        return m, d_in, d_out, 2 * d_out * m + m + d_out
    return None, d_in, d_out, d_out


def attach_deltas(model, specs, gated):
    """Freezes the backbone (the classifier stays trainable) and wraps every site named in `specs` with
    its deltas, in spec order. gated: delta i gets gate i. Returns (gates, deltas in spec order)."""
    torch = _torch()
    cls = _delta_classes()
    for p in model.parameters():
        p.requires_grad = False
    for p in head_parameters(model):
        p.requires_grad = True
    gates = Gates()
    sites, deltas = {}, []
    for i, spec in enumerate(specs):
        name, kind = spec["site"], spec["type"]
        if name not in sites:
            parent_name, _, attr = name.rpartition(".")
            parent = model.base_model.get_submodule(parent_name)
            base = getattr(parent, attr)
            if not isinstance(base, (torch.nn.Linear, torch.nn.LayerNorm)):
                raise SystemExit(f"bench_peer.py: site {name} is a {type(base).__name__}, not a Linear or LayerNorm")
            site = cls["DeltaSite"](base)
            setattr(parent, attr, site)
            sites[name] = site
        site = sites[name]
        base = site.base
        hyper, d_in, d_out, n = module_params(spec, base)
        if spec.get("params") is not None and spec["params"] != n:
            raise SystemExit(f"bench_peer.py: {kind} at {name} has {n} parameters here, {spec['params']} in the file "
                             "(a structure for another shape?)")
        gate = i if gated else None
        is_norm = isinstance(base, torch.nn.LayerNorm)
        if kind == "lora" and not is_norm:
            alpha, dropout = float(spec.get("alpha") or LORA_ALPHA), float(spec.get("dropout") or 0.0)
            d = cls["LoRA"](d_in, d_out, hyper, alpha, dropout, gate, gates)
        elif kind == "lnfit" and is_norm:
            d = cls["LNFit"](d_out, base.eps, gate, gates)
        elif kind == "bitfit":
            d = cls["BitFit"](d_out, gate, gates)
        elif kind == "lra" and not is_norm:
            d = cls["LRA"](d_out, hyper, gate, gates)
        elif kind == "adapter" and not is_norm:
            d = cls["Adapter"](d_out, hyper, gate, gates)
        else:
            raise SystemExit(f"bench_peer.py: a {kind} module cannot attach to {name}")
        site.add(d.to(base.weight.device))
        deltas.append(d)
    return gates, deltas


# ---- gates (src/search/gates.rs) ----------------------------------------------------------------

def solve_shift(alpha, n, budget, beta, warm=None):
    """b with sum_i n_i sigmoid((alpha_i - b) / beta) = budget (float64 on the host): bracket from `warm`
    by doubling steps, then bisect until the relative error is at most SHIFT_TOL."""
    import numpy as np

    alpha, n = np.asarray(alpha, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if not 0 < budget < n.sum() or not np.isfinite(alpha).all():
        raise SystemExit(f"bench_peer.py: budget {budget} not strictly inside (0, {n.sum()}) or alpha not finite")

    def f(b):
        return float((n / (1.0 + np.exp(-(alpha - b) / beta))).sum()) - budget

    start = warm if warm is not None and math.isfinite(warm) else 0.0
    lo = hi = start
    step = max(beta, 1e-3)
    while f(lo) < 0:
        lo -= step
        step *= 2
    step = max(beta, 1e-3)
    while f(hi) > 0:
        hi += step
        step *= 2
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        v = f(mid)
        if abs(v) <= SHIFT_TOL * budget:
            return mid
        if v > 0:
            lo = mid
        else:
            hi = mid
    raise SystemExit("bench_peer.py: the sigmoid shift did not converge")


def gate_probs(alpha, b, beta):
    """p = sigmoid((alpha - b) / beta), then p * stopgrad(sum p) / sum p; b is a constant."""
    torch = _torch()
    p = torch.sigmoid((alpha - b) / beta)
    s = p.sum()
    return p * s.detach() / s


def relax(p, u):
    """z = sigmoid(logit p + logit u)."""
    torch = _torch()

    def logit(x):
        x = x.clamp(LOGIT_CLAMP, 1.0 - LOGIT_CLAMP)
        return torch.log(x) - torch.log1p(-x)

    return torch.sigmoid(logit(p) + logit(u))


# ---- the search step (src/search/bilevel.rs) ----------------------------------------------------

class Supernet:
    """The model with every candidate behind a gate, the structure logits alpha (one per candidate) and
    the budget. The shift is solved on the host once per alpha value (warm-started)."""

    def __init__(self, model, gates, candidates, budget, beta, dtype, device):
        torch = _torch()
        self.model, self.gates = model, gates
        self.n = [c["params"] for c in candidates]
        self.budget, self.beta = float(budget), beta
        self.alpha = torch.nn.Parameter(torch.zeros(len(candidates), device=device))
        self.w = [p for p in model.parameters() if p.requires_grad]  # deltas + classifier
        self.bf16 = dtype == "bf16"
        self.device = device
        self.shift = None
        self.shift_fresh = False

    def probs(self):
        if not self.shift_fresh:
            alpha = self.alpha.detach().double().cpu().numpy()  # a host round trip, once per alpha value
            self.shift = solve_shift(alpha, self.n, self.budget, self.beta, self.shift)
            self.shift_fresh = True
        return gate_probs(self.alpha, self.shift, self.beta)

    def alpha_changed(self):
        self.shift_fresh = False

    def loss(self, batch, z):
        torch = _torch()
        self.gates.set(z)
        try:
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                return self.model(**batch).loss
        finally:
            self.gates.set(None)


def adamw_lookahead_(opt, params, grads, lr):
    """Writes into `params` the values one torch.optim.AdamW step with `grads` at `lr` would give, from a
    COPY of the optimiser's state (moments and step count untouched): the virtual step w'. One param
    group; the same update as torch's (bias-corrected moments, decoupled weight decay)."""
    torch = _torch()
    group = opt.param_groups[0]
    (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
    states = [opt.state.get(p) for p in params]
    t = (float(states[0]["step"]) if states[0] else 0.0) + 1.0
    with torch.no_grad():
        if states[0]:
            m = torch._foreach_lerp([s["exp_avg"] for s in states], grads, 1.0 - b1)
            v = torch._foreach_mul([s["exp_avg_sq"] for s in states], b2)
            torch._foreach_addcmul_(v, grads, grads, value=1.0 - b2)
        else:  # no step yet: zero moments
            m = torch._foreach_mul(grads, 1.0 - b1)
            v = torch._foreach_mul(grads, grads)
            torch._foreach_mul_(v, 1.0 - b2)
        bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(bc2))
        torch._foreach_add_(denom, eps)
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_addcdiv_(params, m, denom, value=-lr / bc1)


class Stepper:
    """One search step's optimisers and noise: alpha_step then w_step, as s3pet's Stepper."""

    def __init__(self, net, order, w_lr=SEARCH_W_LR, alpha_lr=SEARCH_ALPHA_LR, clip=SEARCH_CLIP, seed=0):
        torch = _torch()
        self.net, self.order, self.clip = net, order, clip
        self.w_opt = torch.optim.AdamW(net.w, lr=w_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        self.a_opt = torch.optim.AdamW([net.alpha], lr=alpha_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(seed)
        self.last_alpha_grad = None

    def noise(self):
        """u ~ U(1e-6, 1 - 1e-6), one per candidate, drawn on the host and copied over (as s3pet)."""
        torch = _torch()
        k = self.net.alpha.numel()
        u = torch.rand(k, generator=self.gen) * (1.0 - 2e-6) + 1e-6
        return u.to(self.net.device)

    def alpha_step(self, bw, ba, xi, lr_a, u=None):
        torch = _torch()
        net = self.net
        u = self.noise() if u is None else u
        if self.order == 1:
            loss = net.loss(ba, relax(net.probs(), u))
            (g,) = torch.autograd.grad(loss, [net.alpha])
        else:
            g, loss = self.second_order_grad(bw, ba, u, xi)
        self.last_alpha_grad = g.detach().clone()
        net.alpha.grad = g
        torch.nn.utils.clip_grad_norm_([net.alpha], self.clip)
        for group in self.a_opt.param_groups:
            group["lr"] = lr_a
        self.a_opt.step()
        net.alpha.grad = None
        net.alpha_changed()
        return loss.detach()

    def second_order_grad(self, bw, ba, u, xi):
        """d_alpha L_val(w', alpha) - xi (d_alpha L_train(w+) - d_alpha L_train(w-)) / (2 eps)."""
        torch = _torch()
        net, w = self.net, self.net.w
        # (1) training gradient at w (gates detached), virtual AdamW step written into the parameters
        g = torch.autograd.grad(net.loss(bw, relax(net.probs().detach(), u)), w)
        with torch.no_grad():
            w0 = [p.detach().clone() for p in w]
        adamw_lookahead_(self.w_opt, w, list(g), xi)
        # (2) validation loss at w': gradient in alpha and in w'
        val_loss = net.loss(ba, relax(net.probs(), u))
        both = torch.autograd.grad(val_loss, [net.alpha] + w)
        d_alpha, dw = both[0], list(both[1:])
        with torch.no_grad():
            eps = DARTS_R / torch.linalg.vector_norm(torch.stack(torch._foreach_norm(dw))).clamp_min(1e-12)
            step = torch._foreach_mul(dw, eps)

        # (3), (4) alpha gradients of the training loss at w0 +- eps dw'
        def side(sign):
            with torch.no_grad():
                torch._foreach_copy_(w, w0)
                torch._foreach_add_(w, step, alpha=sign)
            (d,) = torch.autograd.grad(net.loss(bw, relax(net.probs(), u)), [net.alpha])
            return d

        plus, minus = side(1.0), side(-1.0)
        with torch.no_grad():
            torch._foreach_copy_(w, w0)
            return d_alpha - (plus - minus) / (2 * eps) * xi, val_loss

    def w_step(self, bw, lr_w, u=None):
        torch = _torch()
        net = self.net
        u = self.noise() if u is None else u
        loss = net.loss(bw, relax(net.probs().detach(), u))
        v = loss.item()  # s3pet reads the training loss (and fails on a non-finite one)
        if not math.isfinite(v):
            raise SystemExit(f"bench_peer.py: non-finite training loss {v}")
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.w, self.clip)
        for group in self.w_opt.param_groups:
            group["lr"] = lr_w
        self.w_opt.step()
        return v


# ---- models and inputs --------------------------------------------------------------------------

def slug(shape):
    """s3pet's file-name form of a shape (src/bench.rs emit_structures)."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "-") else "_" for c in shape)


def load_modules(path, shape, kind):
    """The module list of a structure.json (kind "retrain") or of a candidates file ("search"), with the
    budget; a directory stands for s3pet bench --emit-structures' output (SHAPE.retrain.json,
    SHAPE.candidates.json)."""
    if not path:
        opt = "--structure" if kind == "retrain" else "--candidates"
        raise SystemExit(f"bench_peer.py: workload {kind} needs {opt} FILE (from `s3pet bench --shape {shape} "
                         "--workload lora --steps 0 --warmup 0 --emit-structures DIR`)")
    if os.path.isdir(path):
        path = os.path.join(path, f"{slug(shape)}.{'retrain' if kind == 'retrain' else 'candidates'}.json")
    with open(path) as f:
        data = json.load(f)
    mods = data["modules"] if kind == "retrain" else data["candidates"]
    return mods, data.get("budget_params"), data.get("backbone_params")


def head_modules(model):
    """The task head's top-level modules: every child of the model outside its backbone that has
    parameters (BERT's classifier; DeBERTa's pooler and classifier; DistilBERT's pre_classifier too)."""
    return [n for n, m in model.named_children()
            if n != model.base_model_prefix and any(True for _ in m.parameters())]


def head_parameters(model):
    return [p for n in head_modules(model) for p in getattr(model, n).parameters()]


def make_model(shape, device, attn, seed=0):
    import torch
    from transformers import (AutoConfig, AutoModelForSequenceClassification, BertConfig,
                              BertForSequenceClassification)

    torch.manual_seed(seed)
    kw = {"attn_implementation": attn} if attn else {}
    if shape in FAMILY_SHAPES:
        with open(os.path.join(SHAPES_DIR, f"{shape}.json")) as f:
            spec = json.load(f)
        cfg = AutoConfig.for_model(spec.pop("model_type"), **spec, num_labels=2)
        with torch.device(device):
            model = AutoModelForSequenceClassification.from_config(cfg, **kw)
    elif shape in SHAPES:
        layers, d, heads, f = SHAPES[shape]
        cfg = BertConfig(vocab_size=30522, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=f, num_labels=2)
        if attn:
            cfg._attn_implementation = attn
        with torch.device(device):
            model = BertForSequenceClassification(cfg)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(shape, num_labels=2, dtype=torch.float32,
                                                                   ignore_mismatched_sizes=True, **kw)
    return model.to(device)


def build(shape, workload, device, attn, a=None):
    """The model of a row; for search rows also the Supernet. Returns (model, supernet or None)."""
    model = make_model(shape, device, attn)
    net = None
    if workload == "lora":
        from peft import LoraConfig, get_peft_model

        targets = LORA_TARGETS[model.config.model_type]
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets,
                                                 modules_to_save=head_modules(model)))
    elif workload == "full":
        for p in model.parameters():
            p.requires_grad = True
    elif workload in ("retrain", "search1", "search2"):
        kind = "retrain" if workload == "retrain" else "search"
        mods, budget, backbone = load_modules(a.structure if kind == "retrain" else a.candidates, shape, kind)
        here = sum(p.numel() for p in model.base_model.parameters())
        # s3pet counts a checkpoint's pooler in the backbone where the task model has none (MPNet, RoBERTa)
        d = model.config.hidden_size
        if backbone is not None and backbone not in (here, here + d * d + d):
            raise SystemExit(f"bench_peer.py: the {kind} file is for a backbone of {backbone} parameters, "
                             f"{shape} has {here}")
        gates, _ = attach_deltas(model, mods, gated=kind == "search")
        if kind == "search":
            net = Supernet(model, gates, mods, budget, SEARCH_BETA, a.dtype, device)
    else:
        raise SystemExit(f"bench_peer.py: unknown workload {workload!r} ({', '.join(WORKLOADS)})")
    model.train()
    return model, net


def fixed_batch(batch, seq_len, vocab, device, token_types=True):
    import torch

    i = torch.arange(batch).view(-1, 1)
    j = torch.arange(seq_len).view(1, -1)
    lo = 1000 if vocab > 2000 else 0  # s3pet's ids; small test vocabularies use all ids
    ids = lo + (i * 7919 + j * 104729) % (vocab - lo)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        **({"token_type_ids": torch.zeros_like(ids).to(device)} if token_types else {}),
        "labels": (torch.arange(batch) % 2).to(device),
    }


def bench_row(shape, workload, a):
    import torch
    import transformers

    device = torch.device(a.device)
    cuda = device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    model, net = build(shape, workload, device, a.attn, a)
    vocab = model.config.vocab_size
    # token type ids only where the family has them (not MPNet, DistilBERT, DeBERTa-v3)
    types = model.config.model_type not in ("mpnet", "distilbert") and getattr(model.config, "type_vocab_size", 1) > 0
    inputs = fixed_batch(a.batch_size, a.seq_len, vocab, device, types)
    params = [p for p in model.parameters() if p.requires_grad]
    bf16 = a.dtype == "bf16"
    extra = {}

    if net is None and workload in ("full", "lora"):
        # a plain transformers (+ PEFT) training loop and nothing else: model, AdamW, loss.backward, step
        # (no clipping, no autocast context in fp32)
        opt = torch.optim.AdamW(params, lr=1e-5)

        if bf16:
            def step():
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    loss = model(**inputs).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
        else:
            def step():
                loss = model(**inputs).loss
                loss.backward()
                opt.step()
                opt.zero_grad()

        trainable = sum(p.numel() for p in params)
        extra = {"loop": "plain"}
    elif net is None:
        opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        trainable = sum(p.numel() for p in params)
    else:
        order = 1 if workload == "search1" else 2
        st = Stepper(net, order)

        def step():
            st.alpha_step(inputs, inputs, SEARCH_W_LR, SEARCH_ALPHA_LR)  # same batch for D_w and D_alpha
            st.w_step(inputs, SEARCH_W_LR)

        trainable = sum(p.numel() for p in params) + net.alpha.numel()  # deltas + head + one alpha each
        extra = {"order": order, "candidates": net.alpha.numel(), "passes_per_step": 2 if order == 1 else 5}

    for _ in range(a.warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    ms = (time.perf_counter() - t0) * 1e3 / max(a.steps, 1)
    cpu_ms = (time.process_time() - c0) * 1e3 / max(a.steps, 1)  # all threads of the process
    row = {
        "shape": shape,
        "workload": workload,
        "device": str(device),
        "dtype": a.dtype,
        "threads": torch.get_num_threads(),
        "batch": a.batch_size,
        "seq_len": a.seq_len,
        "steps": a.steps,
        "ms_per_step": ms,
        "cpu_ms_per_step": cpu_ms,
        "examples_per_s": a.batch_size * 1e3 / ms,
        "tokens_per_s": a.batch_size * a.seq_len * 1e3 / ms,
        "trainable_params": trainable,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(device) if cuda else peak_rss(),
        "attn": getattr(model.config, "_attn_implementation", None),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **extra,
    }
    del model, net, params, inputs, step
    return row


# ---- self-check ---------------------------------------------------------------------------------


def perturb_(deltas, seed, replace):
    """Sets (replace) or shifts every delta parameter by N(0, 0.02) draws of a seeded generator; returns
    the generator for further draws."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for d in deltas:
            for p in d.parameters():
                r = torch.randn(p.shape, generator=g) * 0.02
                if replace:
                    p.copy_(r)
                else:
                    p.add_(r)
    return g

def self_check(shape, a):
    """Correctness checks of the retrain / supernet models and the search step (no timing); prints one
    JSON object per check and returns the number of failures.

    1. zero_deltas: with every delta at an output of zero (fresh init, LRA up factors zeroed) and every
       gate at 1, the supernet's loss equals the plain transformers model's, in eval mode and in train
       mode (same dropout seed); the same for the retrain structure.
    2. wiring: with random non-zero deltas, the loss moves and every one of the K gates gets a non-zero
       gradient in z (each candidate reaches the loss), except BitFit at a key, whose gradient is zero up
       to rounding (softmax ignores a key bias).
    3. virtual_adamw: the virtual step equals torch.optim.AdamW's real step on the same gradient (up to
       fp32 rounding: 1e-4 of the update).
    4. hvp: the finite-difference Hessian-vector term of order 2 (d+ - d-) / (2 eps) against the exact
       one by double backward, d/dalpha <grad_w L_train(w, z(alpha)), dw'> (eval mode, eager attention).
    5. decrease_order1 / decrease_order2: a few search steps (fresh deltas as initialised, dropout off,
       real noise) lower the loss at z = p on the batch.
    6. counts: trainable parameters = the files' module parameters + head (+ one alpha per candidate).
    """
    import torch

    device = torch.device(a.device)
    fails = 0

    def report(name, ok, **kw):
        nonlocal fails
        fails += 0 if ok else 1
        print(json.dumps({"check": name, "ok": bool(ok), **kw}), flush=True)

    batch = fixed_batch(a.batch_size, a.seq_len, make_model_vocab(shape), device)
    cands, budget, _ = load_modules(a.candidates, shape, "search")
    k = len(cands)

    def supernet(attn=a.attn, zero_outputs=True):
        model = make_model(shape, device, attn)
        gates, deltas = attach_deltas(model, cands, gated=True)
        if zero_outputs:
            for d in deltas:
                if hasattr(d, "zero_up"):
                    d.zero_up()
        return Supernet(model, gates, cands, budget, SEARCH_BETA, "fp32", device), deltas

    def plain_loss(model, train, seed=1):
        model.train(train)
        torch.manual_seed(seed)
        with torch.no_grad():
            return model(**batch).loss.item()

    # 1. zero deltas, gates at 1
    plain = make_model(shape, device, a.attn)
    net, deltas = supernet()
    ones = torch.ones(k, device=device)
    for train in (False, True):
        net.model.train(train)
        torch.manual_seed(1)
        with torch.no_grad():
            got = net.loss(batch, ones).item()
        want = plain_loss(plain, train)
        report("zero_deltas_supernet", abs(got - want) <= 1e-6 * max(1.0, abs(want)), mode="train" if train else "eval",
               supernet_loss=got, plain_loss=want)
    if a.structure:
        mods, _, _ = load_modules(a.structure, shape, "retrain")
        model = make_model(shape, device, a.attn)
        _, rd = attach_deltas(model, mods, gated=False)
        for d in rd:
            if hasattr(d, "zero_up"):
                d.zero_up()
        got, want = plain_loss(model, True), plain_loss(plain, True)
        report("zero_deltas_retrain", abs(got - want) <= 1e-6 * max(1.0, abs(want)), mode="train",
               retrain_loss=got, plain_loss=want, modules=len(mods))
        del model, rd

    # 2. every candidate reaches the loss
    net.model.eval()
    perturb_(deltas, 3, replace=True)
    # the gradient in z itself (in alpha every gate shares the rescaling's gradient through sum p)
    z = relax(net.probs(), torch.full((k,), 0.5, device=device)).detach().requires_grad_()
    loss = net.loss(batch, z)
    (gz,) = torch.autograd.grad(loss, [z])
    # a key bias shifts every attention score of a query equally: softmax ignores it, so the gate of
    # BitFit at a key has a zero gradient up to rounding
    scale = gz.abs().max().item()
    key_bitfit = [i for i, c in enumerate(cands) if c["type"] == "bitfit" and c["site"].endswith(".self.key")]
    others = [i for i in range(k) if i not in key_bitfit]
    dead = [f"{cands[i]['site']}:{cands[i]['type']}" for i in others if abs(gz[i].item()) <= 1e-7 * scale]
    key_max = max((abs(gz[i].item()) for i in key_bitfit), default=0.0)
    with torch.no_grad():
        base = net.loss(batch, torch.zeros(k, device=device)).item()
    report("wiring", not dead and abs(loss.item() - base) > 1e-6 and key_max <= 1e-7 * scale, candidates=k,
           gates_without_gradient=dead, min_other_grad_over_max=min(abs(gz[i].item()) for i in others) / scale,
           key_bitfit_grad_over_max=key_max / scale, loss_gates_relaxed=loss.item(), loss_gates_0=base)

    # 3. virtual AdamW = real AdamW
    st = Stepper(net, 2)
    rel = []
    for _ in range(3):  # from an empty state, then from a non-trivial one
        grads = [torch.randn_like(p) for p in net.w]
        w0 = [p.detach().clone() for p in net.w]
        adamw_lookahead_(st.w_opt, net.w, grads, SEARCH_W_LR)
        virt = [p.detach().clone() for p in net.w]
        with torch.no_grad():
            torch._foreach_copy_(net.w, w0)
        for p, gr in zip(net.w, grads):
            p.grad = gr
        st.w_opt.step()
        err = max((v - p.detach()).abs().max().item() for v, p in zip(virt, net.w))
        upd = max((w - p.detach()).abs().max().item() for w, p in zip(w0, net.w))
        rel.append(err / upd)
    report("virtual_adamw", max(rel) <= 1e-4, max_diff_over_update=max(rel))  # fp32 rounding only
    del net, deltas, st, plain

    # 4. finite-difference Hessian-vector product vs double backward
    net, deltas = supernet(attn="eager", zero_outputs=False)
    net.model.eval()
    g = perturb_(deltas, 4, replace=False)
    with torch.no_grad():
        net.alpha.copy_(torch.randn(k, generator=g) * 0.5)
    net.alpha_changed()
    u = torch.rand(k, generator=g).mul(0.98).add(0.01).to(device)
    st = Stepper(net, 2)
    gw = torch.autograd.grad(net.loss(batch, relax(net.probs().detach(), u)), net.w)
    w0 = [p.detach().clone() for p in net.w]
    adamw_lookahead_(st.w_opt, net.w, list(gw), SEARCH_W_LR)
    both = torch.autograd.grad(net.loss(batch, relax(net.probs(), u)), [net.alpha] + net.w)
    dw = [t.detach() for t in both[1:]]
    with torch.no_grad():
        torch._foreach_copy_(net.w, w0)
    full = st.second_order_grad(batch, batch, u, SEARCH_W_LR)[0]  # from the same w, same state
    fd_term = (both[0] - full) / SEARCH_W_LR                       # = (d+ - d-) / (2 eps)
    loss = net.loss(batch, relax(net.probs(), u))
    gw2 = torch.autograd.grad(loss, net.w, create_graph=True)
    inner = sum((x * y).sum() for x, y in zip(gw2, dw))
    (exact,) = torch.autograd.grad(inner, [net.alpha])
    rel = ((fd_term - exact).norm() / exact.norm().clamp_min(1e-30)).item()
    report("hvp", rel < 5e-2, rel_error=rel, exact_norm=exact.norm().item(), d_alpha_norm=both[0].norm().item(),
           correction_over_d_alpha=(SEARCH_W_LR * exact.norm() / both[0].norm()).item())
    del net, deltas, st, gw2, inner

    # 5. the loss decreases over a few steps
    for order in (1, 2):
        net, _ = supernet(zero_outputs=False)  # s3pet's init: LRA outputs are not zero, gates matter
        net.model.eval()  # dropout off, so that the before / after losses are comparable
        st = Stepper(net, order, seed=order)

        def loss_at_p():
            with torch.no_grad():
                return net.loss(batch, net.probs()).item()

        before = loss_at_p()
        train_losses = []
        for _ in range(a.check_steps):
            st.alpha_step(batch, batch, SEARCH_W_LR, SEARCH_ALPHA_LR)
            train_losses.append(st.w_step(batch, SEARCH_W_LR))
        after = loss_at_p()
        report(f"decrease_order{order}", after < before, loss_before=before, loss_after=after, steps=a.check_steps,
               train_losses=train_losses)
        del net, st

    # 6. parameter counts
    for workload in ("retrain", "search1") if a.structure else ("search1",):
        model, net = build(shape, workload, device, a.attn, a)
        head = 2 * model.config.hidden_size + 2  # a fresh 2-label classifier
        got = sum(p.numel() for p in model.parameters() if p.requires_grad) + (net.alpha.numel() if net else 0)
        mods = load_modules(a.structure if workload == "retrain" else a.candidates, shape,
                            "retrain" if workload == "retrain" else "search")[0]
        want = sum(m["params"] for m in mods) + head + (len(mods) if net else 0)
        report(f"counts_{workload}", got == want, trainable_params=got, expected=want)
        del model, net
    return fails


def make_model_vocab(shape):
    if shape in SHAPES:
        return 30522
    with open(os.path.join(shape, "config.json")) as f:
        return json.load(f)["vocab_size"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="minilm", help="minilm, bert-base, bert-large or a model dir; comma-separated")
    ap.add_argument("--workload", default="full,lora", help=f"{', '.join(WORKLOADS)}; comma-separated")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--attn", default=None, choices=["sdpa", "eager"],
                    help="attention implementation (default: transformers' choice, sdpa)")
    ap.add_argument("--structure", default=None,
                    help="retrain: a structure.json (SHAPE.retrain.json of s3pet bench --emit-structures), "
                         "or that directory")
    ap.add_argument("--candidates", default=None,
                    help="search1/search2: SHAPE.candidates.json of s3pet bench --emit-structures, or that directory")
    ap.add_argument("--self-check", action="store_true",
                    help="run the correctness checks (needs --candidates; --structure too for the retrain ones) "
                         "on each shape instead of timing; exit 1 on a failure")
    ap.add_argument("--check-steps", type=int, default=5, help="search steps of the self-check's decrease test")
    a = ap.parse_args(argv)

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.self_check:
        fails = sum(self_check(shape, a) for shape in a.shape.split(","))
        print(json.dumps({"self_check": "failed" if fails else "passed", "failures": fails}), flush=True)
        return 1 if fails else 0
    for shape in a.shape.split(","):
        for workload in a.workload.split(","):
            print(json.dumps(bench_row(shape, workload, a)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
