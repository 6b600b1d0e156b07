#!/usr/bin/env python3
"""Golden fixtures for s3pet's T5 backbone (tests/t5.rs), computed with transformers and PEFT.

Writes, for v in (v10, v11), under tests/fixtures/tiny_t5_<v>/:
  config.json, model.safetensors, tokenizer.json   a tiny random T5ForConditionalGeneration
      v10: ReLU FFN, tied embeddings (decoder output scaled by d_model^-0.5)
      v11: gated-GELU FFN (wi_0, wi_1), untied LM head, 3 decoder layers, inner dim != d_model
  golden.safetensors   eval-mode forward: input_ids, attention_mask, labels (-100 padded),
      encoder (last hidden state), logits (teacher forced), loss, generated (greedy ids, start token first)
  step.safetensors     one train-mode step (dropout 0) with every S3PET-M candidate attached (gates at 1)
      plus LoRA on the cross-attention q and v: loss, init.<name> and grad.<name> of every delta tensor
  step_modules.json    those modules (structure.json module objects)
  golden_texts.json    the texts behind input_ids and the target words behind labels

The tokenizer (shared by both models) is a Unigram model whose pieces and scores are counted from the
first RTE training sentences in a fixed order (no trainer, so it is byte-identical on every run):
specials <pad>=0 </s>=1 <unk>=2, every character, and the most frequent words as "\u2581word" pieces.

LoRA is PEFT's; BitFit, LNFit and the low-rank adapter are PyTorch re-implementations (T5 linears and
norms have no bias: BitFit adds one to the module output through a forward hook, LNFit adds its delta
to the norm's scale, whose gradient equals the delta's). Arithmetic in float64, stored as fp32.
Run through tools/make_fixtures.sh (it sets LD_LIBRARY_PATH for the CPU-only torch install).
"""
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (seeding, fp32 helpers, determinism set-up)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import T5Config, T5ForConditionalGeneration  # noqa: E402

OUT = mf.OUT
CALC = torch.float64
SPECIALS = ["<pad>", "</s>", "<unk>"]
N_SENTENCES = 400
N_WORDS = 60
MS = "\u2581"

COMMON = dict(d_model=16, d_ff=32, num_heads=2, relative_attention_num_buckets=8,
              relative_attention_max_distance=12, dropout_rate=0.1, layer_norm_epsilon=1e-6,
              decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, initializer_factor=1.0)
VERSIONS = {
    "v10": dict(d_kv=8, num_layers=2, num_decoder_layers=2, feed_forward_proj="relu",
                tie_word_embeddings=True),
    "v11": dict(d_kv=6, num_layers=2, num_decoder_layers=3, feed_forward_proj="gated-gelu",
                tie_word_embeddings=False),
}

# Sources as s3pet's text-to-text formatting writes them; the second is long enough that relative
# positions reach the logarithmic buckets and the clamp; the third has a character outside the
# alphabet (<unk>). Targets are label words.
TEXTS = [
    ("rte sentence1: The cat sat on the mat. sentence2: A cat sat.", "entailment"),
    ("cb premise: Oil prices rose sharply in the world market after the government said that it "
     "would cut production. hypothesis: Prices fell.", "contradiction"),
    ("stsb sentence1: Snow \u2603 sentence2: It is cold.", "3.8"),
]
GEN_STEPS = 6
LORA_R, LORA_ALPHA = 2, 4.0
XATTN_LORA = ("EncDecAttention.q", "EncDecAttention.v")


def rte_sentences():
    with open(mf.GLUE / "RTE" / "train.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    i1, i2 = rows[0].index("sentence1"), rows[0].index("sentence2")
    out = []
    for r in rows[1:1 + N_SENTENCES // 2]:
        out += [r[i1], r[i2]]
    return out


def build_tokenizer(specials=SPECIALS, unk="<unk>", post=None):
    """The Unigram tokenizer of the module doc; `post` replaces T5's `$A </s>` post-processor."""
    norm = [unicodedata.normalize("NFKC", s).lower() for s in rte_sentences()]
    chars = Counter(c for s in norm for c in s if not c.isspace())
    words = Counter(w for s in norm for w in s.split())
    n_chars, n_words = sum(chars.values()), sum(words.values())
    vocab = [(s, 0.0) for s in specials]
    vocab.append((MS, math.log(len(norm) / n_chars) - 10.0))
    for c in sorted(chars):
        vocab.append((c, math.log(chars[c] / n_chars) - 10.0))
    top = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:N_WORDS]
    for w, n in sorted(top):
        vocab.append((MS + w, math.log(n / n_words)))
    tok = Tokenizer(models.Unigram(vocab, unk_id=specials.index(unk), byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=MS, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=MS, prepend_scheme="always")
    tok.post_processor = post or processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    assert [tok.token_to_id(s) for s in specials] == list(range(len(specials)))
    return tok


def pad(rows, value):
    n = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (n - len(r)) for r in rows], dtype=torch.int64)


def build_model(version, vocab_size, tag):
    torch.manual_seed(mf.SEED + len(tag))
    cfg = T5Config(vocab_size=vocab_size, **COMMON, **VERSIONS[version])
    model = T5ForConditionalGeneration(cfg)
    g = mf.gen(tag)
    with torch.no_grad():  # norm scales away from 1
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + mf.rand(g, *p.shape, std=0.2))
    return model


def untie(out, vocab_size, tag):
    """transformers 5 saves every T5 with a tied head; write a separate lm_head.weight and
    tie_word_embeddings false, as real v1.1 / Flan-T5 checkpoints have (transformers then unties)."""
    tensors = load_file(str(out / "model.safetensors"))
    tensors["lm_head.weight"] = mf.rand(mf.gen(tag), vocab_size, COMMON["d_model"], std=1.0)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)
    cfg = json.loads((out / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    cfg.pop("scale_decoder_outputs", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load(path):
    m = T5ForConditionalGeneration.from_pretrained(str(path), attn_implementation="eager", dropout_rate=0.0)
    return m.to(CALC)


def mix_modules(model):
    """Every S3PET-M candidate (LoRA r2 here, to test the rank) and LoRA on cross-attention q, v."""
    mods = []
    for name, m in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if name.endswith("layer_norm"):
            mods += [{"site": name, "type": "lnfit"}, {"site": name, "type": "bitfit"}]
        elif ".SelfAttention." in name and last in ("q", "k", "v", "o") or \
                ".DenseReluDense." in name and last in ("wi", "wi_0", "wi_1", "wo"):
            mods += [{"site": name, "type": "lora", "rank": LORA_R, "alpha": LORA_ALPHA},
                     {"site": name, "type": "bitfit"}]
            if last in ("o", "wo"):
                mods.append({"site": name, "type": "lra"})
        elif name.endswith(XATTN_LORA):
            mods.append({"site": name, "type": "lora", "rank": LORA_R, "alpha": LORA_ALPHA})
    return mods


class LowRankAdapter(torch.nn.Module):
    """h -> h + Up(gelu(Down(h))), Down = outer(down_left, down_right) + down_bias (k x d),
    Up = outer(up_left, up_right) + up_bias (d x k); exact (erf) gelu."""

    def __init__(self, d, k, g):
        super().__init__()
        P = torch.nn.Parameter
        self.down_left = P(mf.rand(g, k, std=1.0).to(CALC))
        self.down_right = P(mf.rand(g, d, std=0.3).to(CALC))
        self.down_bias = P(mf.rand(g, k, std=0.1).to(CALC))
        self.up_left = P(mf.rand(g, d, std=0.3).to(CALC))
        self.up_right = P(mf.rand(g, k, std=1.0).to(CALC))
        self.up_bias = P(mf.rand(g, d, std=0.1).to(CALC))

    def forward(self, h):
        down = torch.outer(self.down_left, self.down_right)
        up = torch.outer(self.up_left, self.up_right)
        return F.linear(F.gelu(F.linear(h, down, self.down_bias), approximate="none"), up, self.up_bias)


def step(path, mods, inputs, tag):
    """One train-mode forward/backward with every module of `mods` attached."""
    model = load(path)
    lora_sites = [m["site"] for m in mods if m["type"] == "lora"]
    cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none",
                     target_modules=[s for s in lora_sites])
    model = get_peft_model(model, cfg).to(CALC)
    base = model.base_model.model
    g = mf.gen(tag)
    inits, params = {}, {}
    d = base.config.d_model
    with torch.no_grad():
        for site in lora_sites:
            layer = base.get_submodule(site)
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            assert layer.scaling["default"] == LORA_ALPHA / LORA_R
            va = mf.rand(g, LORA_R, a.shape[1], std=1.0 / math.sqrt(a.shape[1]))
            vb = mf.rand(g, b.shape[0], LORA_R, std=0.1)
            a.copy_(va)
            b.copy_(vb)
            inits[f"{site}.lora_A"], inits[f"{site}.lora_B"] = va, vb
            params[f"{site}.lora_A"], params[f"{site}.lora_B"] = a, b
    # sequential deltas after the module's output (LoRA included): LRA and BitFit all read that output
    seq = {}
    for m in mods:
        site, kind = m["site"], m["type"]
        mod = base.get_submodule(site)
        if kind == "lnfit":
            w = mf.rand(g, d, std=0.1)
            with torch.no_grad():
                mod.weight.add_(w.to(CALC))
            mod.weight.requires_grad_(True)
            inits[f"{site}.lnfit"], params[f"{site}.lnfit"] = w, mod.weight
        elif kind == "bitfit":
            n = mod.weight.shape[0]
            b = mf.rand(g, n, std=0.05)
            p = torch.nn.Parameter(b.to(CALC))
            seq.setdefault(site, []).append(lambda h, p=p: p)
            inits[f"{site}.bitfit"], params[f"{site}.bitfit"] = b, p
        elif kind == "lra":
            lra = LowRankAdapter(d, d // 32 or 1, g)
            seq.setdefault(site, []).append(lra)
            for n, p in lra.named_parameters():
                inits[f"{site}.lra.{n}"], params[f"{site}.lra.{n}"] = mf.f32(p), p
    for site, fns in seq.items():
        base.get_submodule(site).register_forward_hook(
            lambda _m, _i, out, fns=fns: out + sum(f(out) for f in fns))
    model.train()
    out = model(**inputs)
    out.loss.backward()
    rec = dict(inputs)
    rec["loss"] = out.loss.detach().reshape(())
    for n in sorted(params):
        p = params[n]
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {n}"
        rec[f"init.{n}"] = inits[n]
        rec[f"grad.{n}"] = p.grad
    return rec


def make(version, tok):
    out = OUT / f"tiny_t5_{version}"
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=True)
    model = build_model(version, tok.get_vocab_size(), f"t5-{version}")
    tmp = Path(tempfile.mkdtemp())
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(tmp / f, out / f)
    finally:
        shutil.rmtree(tmp)
    if not VERSIONS[version]["tie_word_embeddings"]:
        untie(out, tok.get_vocab_size(), f"t5-{version}-head")
    src = [tok.encode(s) for s, _ in TEXTS]
    tgt = [tok.encode(t) for _, t in TEXTS]
    ids, mask = pad([e.ids for e in src], 0), pad([e.attention_mask for e in src], 0)
    labels = pad([e.ids for e in tgt], -100)
    assert (ids == 2).any() and ids.shape[1] > 2 * COMMON["relative_attention_max_distance"]
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    m = load(out).eval()
    assert m.config.tie_word_embeddings or not torch.equal(m.lm_head.weight, m.shared.weight)
    with torch.no_grad():
        res = m(**inputs)
        enc = m.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        gen = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=GEN_STEPS, do_sample=False,
                         num_beams=1, min_length=0, use_cache=False)
    golden = dict(inputs, encoder=enc, logits=res.logits, loss=res.loss.reshape(()), generated=gen)
    mf.save(golden, out / "golden.safetensors")
    (out / "golden_texts.json").write_text(json.dumps(
        [{"source": s, "target": t, "tokens": e.tokens} for (s, t), e in zip(TEXTS, src)],
        indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    mods = mix_modules(m)
    (out / "step_modules.json").write_text(json.dumps(mods, indent=1) + "\n", encoding="utf-8")
    rec = step(out, mods, inputs, f"t5-step-{version}")
    mf.save(rec, out / "step.safetensors")
    print(f"tiny_t5_{version}: vocab {tok.get_vocab_size()}, source {tuple(ids.shape)}, "
          f"generated {gen.tolist()}, loss {res.loss.item():.6f}, step loss {rec['loss'].item():.6f}, "
          f"{len(mods)} modules")


def main():
    mf.quiet_deterministic()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = build_tokenizer()
    for version in VERSIONS:
        make(version, tok)


if __name__ == "__main__":
    main()
