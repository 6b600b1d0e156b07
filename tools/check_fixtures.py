#!/usr/bin/env python3
"""Independent check of tests/fixtures/tiny_bert: a from-scratch functional BERT (plain torch ops,
no transformers / PEFT) that reads model.safetensors and the `init.*` tensors of each step file,
applies the delta modules purely from their names, and compares loss, gradients and outputs with
what make_fixtures.py stored. This is the computation the Rust side must reproduce, so a pass here
means the fixture names and semantics agree with tools/README.md.

Run: tools/make_fixtures.sh (generates, then runs this), or tools/make_fixtures.sh --check-only
"""
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "tiny_bert"
DT = torch.float64


class Bert:
    def __init__(self, weights, cfg, deltas):
        self.w = weights  # our names (no "bert." prefix) -> tensor
        self.cfg = cfg
        self.d = deltas  # our delta names -> tensor
        self.scale = 8 / 4  # lora_alpha / r of the lora fixture

    def linear(self, site, x):
        w = self.w
        h = F.linear(x, w[f"{site}.weight"], w[f"{site}.bias"])
        if f"{site}.lora_A" in self.d:  # parallel
            h = h + self.scale * F.linear(F.linear(x, self.d[f"{site}.lora_A"]), self.d[f"{site}.lora_B"])
        return self.sequential(site, h)

    def sequential(self, site, h):
        d, y = self.d, h
        if f"{site}.bitfit" in d:
            y = y + d[f"{site}.bitfit"]
        if f"{site}.lra.down_left" in d:
            p = lambda n: d[f"{site}.lra.{n}"]
            z = F.gelu(F.linear(h, torch.outer(p("down_left"), p("down_right")), p("down_bias")))
            y = y + F.linear(z, torch.outer(p("up_left"), p("up_right")), p("up_bias"))
        if f"{site}.adapter.down.weight" in d:
            p = lambda n: d[f"{site}.adapter.{n}"]
            z = F.gelu(F.linear(h, p("down.weight"), p("down.bias")))
            y = y + F.linear(z, p("up.weight"), p("up.bias"))
        return y

    def layer_norm(self, site, x):
        gamma = self.w[f"{site}.weight"]
        if f"{site}.lnfit" in self.d:
            gamma = gamma + self.d[f"{site}.lnfit"]
        h = F.layer_norm(x, x.shape[-1:], gamma, self.w[f"{site}.bias"], self.cfg["layer_norm_eps"])
        return self.sequential(site, h)

    def forward(self, ids, mask, types):
        w, c = self.w, self.cfg
        n, L = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:L]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = self.layer_norm("embeddings.LayerNorm", x)
        hidden = [x]
        H = c["num_attention_heads"]
        dh = c["hidden_size"] // H
        bias = (1.0 - mask[:, None, None, :].to(DT)) * torch.finfo(DT).min
        for i in range(c["num_hidden_layers"]):
            s = f"encoder.layer.{i}"
            heads = lambda t: t.view(n, L, H, dh).transpose(1, 2)
            q = heads(self.linear(f"{s}.attention.self.query", x))
            k = heads(self.linear(f"{s}.attention.self.key", x))
            v = heads(self.linear(f"{s}.attention.self.value", x))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + bias, dim=-1)
            ctx = (a @ v).transpose(1, 2).reshape(n, L, H * dh)
            x = self.layer_norm(f"{s}.attention.output.LayerNorm", self.linear(f"{s}.attention.output.dense", ctx) + x)
            inter = F.gelu(self.linear(f"{s}.intermediate.dense", x))
            x = self.layer_norm(f"{s}.output.LayerNorm", self.linear(f"{s}.output.dense", inter) + x)
            hidden.append(x)
        pooled = torch.tanh(F.linear(x[:, 0], w["pooler.dense.weight"], w["pooler.dense.bias"]))
        logits = F.linear(pooled, w["classifier.weight"], w["classifier.bias"])
        return hidden, pooled, logits


def close(name, got, want, tol=1e-6):
    want = want.to(DT)
    err = (got.detach() - want).abs().max().item()
    ref = want.abs().max().item()
    ok = err <= tol * max(ref, 1e-3)
    print(f"  {'ok ' if ok else 'BAD'} {name:60s} max|diff| {err:.2e} (max|ref| {ref:.2e})")
    return ok


def main():
    torch.set_num_threads(1)
    cfg = json.loads((TINY / "config.json").read_text())
    base = {k.removeprefix("bert."): v.to(DT) for k, v in load_file(str(TINY / "model.safetensors")).items()}
    ok = True

    g = load_file(str(TINY / "golden.safetensors"))
    hidden, pooled, logits = Bert(base, cfg, {}).forward(g["input_ids"], g["attention_mask"], g["token_type_ids"])
    print("golden")
    for i, h in enumerate(hidden):
        ok &= close(f"hidden.{i}", h, g[f"hidden.{i}"])
    ok &= close("pooled", pooled, g["pooled"])
    ok &= close("logits", logits, g["logits"])

    for method in ("lora", "bitfit", "lnfit", "lra", "adapter", "full"):
        st = load_file(str(TINY / f"step_{method}.safetensors"))
        print(f"step_{method}")
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(st[k], g[k]), k
        w = {k: v.clone() for k, v in base.items()}
        deltas = {}
        for k, v in st.items():
            if k.startswith("init."):
                n = k[5:]
                if n.startswith("classifier."):
                    w[n] = v.to(DT)
                else:
                    deltas[n] = v.to(DT)
        if method == "full":
            trainable = w
        else:
            trainable = dict(deltas)
            trainable.update({n: w[n] for n in ("classifier.weight", "classifier.bias")})
        for p in trainable.values():
            p.requires_grad_(True)
        _, _, logits = Bert(w, cfg, deltas).forward(st["input_ids"], st["attention_mask"], st["token_type_ids"])
        loss = F.cross_entropy(logits, st["labels"])
        loss.backward()
        ok &= close("loss", loss, st["loss"])
        if "logits" in st:
            ok &= close("logits", logits, st["logits"])
        grads = [k for k in st if k.startswith("grad.")]
        if method != "full":
            assert sorted(k[5:] for k in grads) == sorted(trainable), "grad/init key sets differ"
        for k in sorted(grads):
            ok &= close(k, trainable[k[5:]].grad, st[k])
    minilm = ROOT / "models" / "all-MiniLM-L6-v2"
    if (minilm / "model.safetensors").exists():
        print("minilm_golden (fp32 reference vs float64 recomputation)")
        mcfg = json.loads((minilm / "config.json").read_text())
        mw = {k: v.to(DT) for k, v in load_file(str(minilm / "model.safetensors")).items()}
        mw["classifier.weight"] = torch.zeros(1, mcfg["hidden_size"], dtype=DT)
        mw["classifier.bias"] = torch.zeros(1, dtype=DT)
        m = load_file(str(ROOT / "tests" / "fixtures" / "minilm_golden.safetensors"))
        hidden, pooled, _ = Bert(mw, mcfg, {}).forward(m["input_ids"], m["attention_mask"], m["token_type_ids"])
        ok &= close("last_hidden_state", hidden[-1], m["last_hidden_state"], tol=2e-5)
        ok &= close("pooler_output", pooled, m["pooler_output"], tol=2e-5)
    print("ALL OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
