#!/usr/bin/env python3
"""Golden fixtures for s3pet's Rust tests, computed with the Python reference stack
(transformers / PEFT / tokenizers on CPU torch).

Writes (relative to the repository root):
  tests/fixtures/tiny_bert/{config.json, model.safetensors, tokenizer.json}  a tiny random BERT
  tests/fixtures/tiny_bert/golden.safetensors      eval-mode forward of the tiny model
  tests/fixtures/tiny_bert/golden_texts.json       the texts behind golden's input_ids
  tests/fixtures/tiny_bert/step_<method>.safetensors  one training step per delta method
  tests/fixtures/minilm_golden.safetensors, tests/fixtures/minilm_sentences.json  real MiniLM forward

Deterministic: fixed seeds, one CPU thread, and the tiny-model arithmetic is done in float64
(inputs and parameters are exactly representable in fp32; results are rounded to fp32 when
stored), so re-running gives byte-identical files. See tools/README.md for the tensor layout.

Run through tools/make_fixtures.sh (it sets LD_LIBRARY_PATH for the CPU-only torch install).
"""
import csv
import json
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModel, BertConfig, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from peft import LNTuningConfig, LoraConfig, get_peft_model

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("S3PET_DATA", ROOT.parent / "shared" / "data"))
GLUE = DATA / "glue"
MINILM = Path(os.environ.get("S3PET_MINILM", ROOT / "models" / "all-MiniLM-L6-v2"))
OUT = ROOT / "tests" / "fixtures"
TINY = OUT / "tiny_bert"

SEED = 1234
CALC = torch.float64  # dtype of the tiny-model arithmetic; everything is stored as fp32

# ---- tiny model shape ------------------------------------------------------------------------
VOCAB_TARGET = 1000
TINY_CFG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    type_vocab_size=2,
    num_labels=3,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    pad_token_id=0,
    initializer_range=0.2,  # larger than BERT's 0.02 so attention and gelu are far from linear
)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3

# Golden inputs: (text_a, text_b or None); true lengths 9, 6 and 8 (asserted below) -> [3, 9].
# Row 1 has a "##" continuation and an out-of-alphabet character (a whole-word [UNK]).
GOLDEN_TEXTS = [
    ("The president of the United States.", None),
    ("Oil prices \u2603", None),
    ("Oil", "It won."),
]
SEQ = 9
LABELS = [2, 0, 1]

LAYERS = range(TINY_CFG["num_hidden_layers"])
LINEAR_SITES = [
    f"encoder.layer.{i}.{m}"
    for i in LAYERS
    for m in ("attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense", "intermediate.dense", "output.dense")
]
LN_SITES = ["embeddings.LayerNorm"] + [
    f"encoder.layer.{i}.{m}" for i in LAYERS for m in ("attention.output.LayerNorm", "output.LayerNorm")
]
BLOCK_SITES = [f"encoder.layer.{i}.{m}" for i in LAYERS for m in ("attention.output.dense", "output.dense")]
LORA_R, LORA_ALPHA = 4, 8
ADAPTER_M = 8
FULL_KEYS = [
    "embeddings.word_embeddings.weight",
    "encoder.layer.1.attention.self.query.weight",
    "encoder.layer.0.output.LayerNorm.bias",
    "pooler.dense.weight",
    "classifier.weight",
]


def gen(tag):
    """A generator seeded from SEED and a tag, so each fixture's random draws are independent."""
    g = torch.Generator().manual_seed(SEED + sum(ord(c) * (i + 1) for i, c in enumerate(tag)))
    return g


def rand(g, *shape, std):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * std


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def save(tensors, path, metadata=None):
    save_file({k: (v.contiguous() if not v.is_floating_point() else f32(v)) for k, v in tensors.items()},
              str(path), metadata=metadata)
    os.chmod(path, 0o644)


# ---- 1. tokenizer + tiny model ---------------------------------------------------------------
def rte_sentences():
    with open(GLUE / "RTE" / "train.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    head = rows[0]
    i1, i2 = head.index("sentence1"), head.index("sentence2")
    for r in rows[1:]:
        yield r[i1]
        yield r[i2]


def train_tokenizer(specials=SPECIALS, unk="[UNK]", post=None):
    """WordPiece trained on the RTE training sentences. `post(tok)` gives the post-processor; the
    default is BERT's `[CLS] A [SEP]` / `[CLS] A [SEP] B:1 [SEP]:1`."""
    tok = Tokenizer(models.WordPiece(unk_token=unk, continuing_subword_prefix="##",
                                     max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_TARGET, min_frequency=2, special_tokens=specials,
                                        limit_alphabet=150, continuing_subword_prefix="##",
                                        show_progress=False)
    tok.train_from_iterator(list(rte_sentences()), trainer=trainer)
    # The trained token SET is reproducible (checked over 25 runs), but the trainer numbers tokens
    # partly in hash-map order, which changes from run to run (tied merges, the "##<char>" block).
    # Re-number canonically: specials, single characters, "##" + single characters, then all
    # merged tokens, each group by code point. WordPiece encoding does not depend on the ids.
    vocab = tok.get_vocab()

    def key(t):
        if t in specials:
            return (0, specials.index(t), "")
        if len(t) == 1:
            return (1, ord(t), "")
        if t.startswith("##") and len(t) == 3:
            return (2, ord(t[2]), "")
        return (3, 0, t)

    ordered = sorted(vocab, key=key)
    tok.model = models.WordPiece(vocab={t: i for i, t in enumerate(ordered)}, unk_token=unk,
                                 continuing_subword_prefix="##", max_input_chars_per_word=100)
    assert [tok.token_to_id(s) for s in specials] == list(range(len(specials))), "special ids"
    if post is None:
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
    else:
        tok.post_processor = post(tok)
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.no_truncation()
    tok.no_padding()
    return tok


def build_tiny(vocab_size):
    torch.manual_seed(SEED)
    cfg = BertConfig(vocab_size=vocab_size, **TINY_CFG)
    model = BertForSequenceClassification(cfg)
    # Make every tensor informative: LayerNorm scales away from 1, biases away from 0, and the
    # [PAD] embedding row non-zero (as in real checkpoints).
    g = gen("tiny-perturb")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + rand(g, *p.shape, std=0.2))
            elif name.endswith(".bias"):
                p.copy_(rand(g, *p.shape, std=0.1))
        model.bert.embeddings.word_embeddings.weight[0].copy_(rand(g, TINY_CFG["hidden_size"], std=0.2))
    return model


def encode_golden(tok):
    enc = [tok.encode(a, b) if b is not None else tok.encode(a) for a, b in GOLDEN_TEXTS]
    lens = [len(e.ids) for e in enc]
    assert max(lens) == SEQ and len(set(lens)) == len(lens), f"golden lengths {lens}"
    ids = torch.zeros(len(enc), SEQ, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for r, e in enumerate(enc):
        n = len(e.ids)
        ids[r, :n] = torch.tensor(e.ids)
        mask[r, :n] = torch.tensor(e.attention_mask)
        types[r, :n] = torch.tensor(e.type_ids)
    assert types[2].max() == 1 and (ids == 1).any(), "want a pair row and an [UNK]"
    return ids, mask, types, [e.tokens for e in enc]


def load_tiny(dropout):
    kw = {}
    if not dropout:
        kw = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    m = BertForSequenceClassification.from_pretrained(str(TINY), attn_implementation="eager", **kw)
    return m.to(CALC)


# ---- 3. delta training steps -----------------------------------------------------------------
def strip(name, prefix="bert"):
    """PEFT / transformers parameter path -> our name (no wrappers, no "<prefix>." backbone prefix)."""
    name = re.sub(r"^base_model\.model\.", "", name)
    name = name.replace(".base_layer.", ".")
    name = re.sub(r"\.modules_to_save\.default\.", ".", name)
    name = re.sub(r"\.ln_tuning_layers\.default\.", ".", name)
    name = re.sub(r"\.(lora_[AB])\.default\.weight$", r".\1", name)
    return re.sub(rf"^{prefix}\.", "", name)


def freeze_all_but_classifier(model):
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("classifier."))


def run_step(model, inputs, labels, extra_params=None, prefix="bert", loss_fn=None):
    """One train-mode forward/backward; returns (loss, logits, {our name: param}). The loss is the
    mean cross-entropy of the logits unless `loss_fn(output)` is given."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    logits = out.logits
    loss = F.cross_entropy(logits, labels) if loss_fn is None else loss_fn(out)  # mean over the batch
    loss.backward()
    trainable = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            trainable[strip(n, prefix)] = p
    for n, p in (extra_params or {}).items():
        assert n not in trainable
        trainable[n] = p
    return loss, logits, trainable


def step_record(inputs, labels, loss, trainable, inits):
    rec = dict(inputs)
    rec["labels"] = labels
    rec["loss"] = loss.detach().reshape(())
    assert set(inits) == set(trainable), sorted(set(inits) ^ set(trainable))
    for n in sorted(trainable):
        p = trainable[n]
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {n}"
        rec[f"init.{n}"] = inits[n]
        rec[f"grad.{n}"] = p.grad
    return rec


def classifier_inits(model):
    return {"classifier.weight": f32(model.classifier.weight), "classifier.bias": f32(model.classifier.bias)}


def init_lora(base, sites, g, r, alpha, prefix="bert."):
    """Seeded values for PEFT's lora_A [r, d_in] ~ N(0, 1/d_in) and lora_B [d_out, r] ~ N(0, 0.1^2)
    (PEFT would zero B) at `prefix + site`; returns {site.lora_A / site.lora_B: value}."""
    inits = {}
    with torch.no_grad():
        for site in sites:
            layer = base.get_submodule(prefix + site)
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            assert layer.scaling["default"] == alpha / r
            d_in, d_out = a.shape[1], b.shape[0]
            va = rand(g, r, d_in, std=1.0 / math.sqrt(d_in))
            vb = rand(g, d_out, r, std=0.1)
            a.copy_(va)
            b.copy_(vb)
            inits[f"{site}.lora_A"], inits[f"{site}.lora_B"] = va, vb
    return inits


def step_lora(inputs, labels):
    # Real PEFT LoRA. lora_A and lora_B both get seeded random values (PEFT would zero B).
    model = load_tiny(dropout=False)
    cls = classifier_inits(model)
    cfg = LoraConfig(
        r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none",
        target_modules=r"bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)"
                       r"|attention\.output\.dense|intermediate\.dense|output\.dense)",
        modules_to_save=["classifier"],
    )
    model = get_peft_model(model, cfg).to(CALC)
    inits = dict(cls, **init_lora(model.base_model.model, LINEAR_SITES, gen("lora"), LORA_R, LORA_ALPHA))
    loss, logits, trainable = run_step(model, inputs, labels)
    rec = step_record(inputs, labels, loss, trainable, inits)
    rec["logits"] = logits
    return rec


def step_bitfit(inputs, labels):
    # Plain transformers model: a delta added to a module's output has the gradient of that
    # module's bias, so the reference trains exactly the biases of the BitFit sites (value =
    # checkpoint bias + the delta's init) plus the classifier; the pooler stays frozen.
    model = load_tiny(dropout=False)
    freeze_all_but_classifier(model)
    inits = classifier_inits(model)
    g = gen("bitfit")
    params = {}
    with torch.no_grad():
        for site in LINEAR_SITES + LN_SITES:
            bias = model.bert.get_submodule(site).bias
            delta = rand(g, *bias.shape, std=0.05)
            bias.add_(delta.to(CALC))
            bias.requires_grad_(True)
            inits[f"{site}.bitfit"] = delta
            params[f"{site}.bitfit"] = bias
    loss, _, trainable = run_step(model, inputs, labels)
    trainable = {("classifier." + n.split(".")[-1] if n.startswith("classifier.") else f"{n[:-5]}.bitfit"): p
                 for n, p in trainable.items()}
    return step_record(inputs, labels, loss, trainable, inits)


def step_lnfit(inputs, labels):
    # Real PEFT LN tuning: it trains a copy of each LayerNorm. We train only the copy's weight,
    # set to gamma + w_init; its gradient is the gradient of the delta w.
    model = load_tiny(dropout=False)
    cls = classifier_inits(model)
    cfg = LNTuningConfig(target_modules=r"bert\.(embeddings|encoder\.layer\.\d+\.(attention\.output|output))"
                                        r"\.LayerNorm", modules_to_save=["classifier"])
    model = get_peft_model(model, cfg).to(CALC)
    g = gen("lnfit")
    inits = dict(cls)
    wmap = {}
    with torch.no_grad():
        for site in LN_SITES:
            layer = model.base_model.model.get_submodule("bert." + site)
            ln = layer.ln_tuning_layers["default"]
            w = rand(g, *ln.weight.shape, std=0.1)
            ln.weight.add_(w.to(CALC))
            ln.bias.requires_grad_(False)
            inits[f"{site}.lnfit"] = w
            wmap[f"{site}.weight"] = f"{site}.lnfit"
    loss, _, trainable = run_step(model, inputs, labels)
    trainable = {wmap.get(n, n): p for n, p in trainable.items()}
    return step_record(inputs, labels, loss, trainable, inits)


class LowRankAdapter(torch.nn.Module):
    """h -> h + Up(gelu(Down(h))), Down = outer(down_left, down_right) + down_bias (k x d),
    Up = outer(up_left, up_right) + up_bias (d x k); exact (erf) gelu."""

    def __init__(self, d, k, g):
        super().__init__()
        s = math.sqrt(2.0) * math.sqrt(6.0 / (d + 1))  # about xavier-uniform(gain sqrt 2) scale
        P = torch.nn.Parameter
        self.down_left = P(rand(g, k, std=1.0).to(CALC))
        self.down_right = P(rand(g, d, std=s / 2).to(CALC))
        self.down_bias = P(rand(g, k, std=0.1).to(CALC))
        self.up_left = P(rand(g, d, std=s / 2).to(CALC))
        self.up_right = P(rand(g, k, std=1.0).to(CALC))
        self.up_bias = P(rand(g, d, std=0.1).to(CALC))

    def forward(self, h):
        down = torch.outer(self.down_left, self.down_right)
        up = torch.outer(self.up_left, self.up_right)
        z = F.gelu(F.linear(h, down, self.down_bias), approximate="none")
        return h + F.linear(z, up, self.up_bias)


class Adapter(torch.nn.Module):
    """Houlsby: h -> h + up(gelu(down(h))), plain Linear layers, exact gelu."""

    def __init__(self, d, m, g):
        super().__init__()
        self.down = torch.nn.Linear(d, m).to(CALC)
        self.up = torch.nn.Linear(m, d).to(CALC)
        with torch.no_grad():
            self.down.weight.copy_(rand(g, m, d, std=1.0 / math.sqrt(d)))
            self.down.bias.copy_(rand(g, m, std=0.1))
            self.up.weight.copy_(rand(g, d, m, std=0.1))
            self.up.bias.copy_(rand(g, d, std=0.05))

    def forward(self, h):
        return h + self.up(F.gelu(self.down(h), approximate="none"))


def step_hooked(inputs, labels, kind):
    # PyTorch re-implementation: a forward hook on the dense layer whose output feeds
    # dropout -> residual -> LayerNorm replaces that output by delta(output).
    model = load_tiny(dropout=False)
    freeze_all_but_classifier(model)
    inits = classifier_inits(model)
    g = gen(kind)
    d = TINY_CFG["hidden_size"]
    extra = {}
    for site in BLOCK_SITES:
        mod = LowRankAdapter(d, d // 32, g) if kind == "lra" else Adapter(d, ADAPTER_M, g)
        model.bert.get_submodule(site).register_forward_hook(lambda _m, _i, out, mod=mod: mod(out))
        for n, p in mod.named_parameters():
            extra[f"{site}.{kind}.{n}"] = p
            inits[f"{site}.{kind}.{n}"] = f32(p)
    loss, _, trainable = run_step(model, inputs, labels, extra)
    return step_record(inputs, labels, loss, trainable, inits)


def step_full(inputs, labels):
    model = load_tiny(dropout=False)
    for p in model.parameters():
        p.requires_grad_(True)
    loss, _, trainable = run_step(model, inputs, labels)
    rec = dict(inputs)
    rec["labels"] = labels
    rec["loss"] = loss.detach().reshape(())
    for k in FULL_KEYS:
        rec[f"grad.{k}"] = trainable[k].grad
    return rec


# ---- 4. MiniLM -------------------------------------------------------------------------------
def read_tsv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def minilm_texts(tok):
    def ntok(a, b=None):
        return len(tok.encode(a, b).ids) if b is not None else len(tok.encode(a).ids)

    rte = read_tsv(GLUE / "RTE" / "dev.tsv")
    h = rte[0]
    rte_pairs = [(r[h.index("sentence1")], r[h.index("sentence2")]) for r in rte[1:]]
    mrpc = read_tsv(GLUE / "MRPC" / "dev.tsv")
    h = mrpc[0]
    mrpc_pairs = [(r[h.index("#1 String")], r[h.index("#2 String")]) for r in mrpc[1:]]
    cola = [r[3] for r in read_tsv(GLUE / "CoLA" / "dev.tsv")]
    sst = read_tsv(GLUE / "SST-2" / "dev.tsv")
    sst = [r[0] for r in sst[1:]]
    # Pairs: the shortest (in tokens) dev pair of RTE and of MRPC, first one on ties.
    rte_pair = min(rte_pairs, key=lambda p: ntok(*p))
    mrpc_pair = min(mrpc_pairs, key=lambda p: ntok(*p))
    # Singles: the first two dev sentences of CoLA and of SST-2.
    return [(cola[0], None), (sst[0], None), rte_pair, (cola[1], None), mrpc_pair, (sst[1], None)]


def make_minilm():
    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tok.enable_truncation(max_length=128)
    tok.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")  # pad to the longest in the batch
    texts = minilm_texts(tok)
    # One batch: tokenizers' encode_batch takes singles (str) and pairs ((a, b)) together.
    enc = tok.encode_batch([a if b is None else (a, b) for a, b in texts])
    ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
    types = torch.tensor([e.type_ids for e in enc], dtype=torch.int64)
    model = AutoModel.from_pretrained(str(MINILM), attn_implementation="eager", dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    save({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
          "last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output},
         OUT / "minilm_golden.safetensors")
    (OUT / "minilm_sentences.json").write_text(json.dumps([list(t) for t in texts], indent=1,
                                                          ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"minilm: batch {tuple(ids.shape)}, lengths {mask.sum(1).tolist()}")


def quiet_deterministic():
    """One CPU thread, deterministic kernels, no transformers chatter (shared by the fixture scripts)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def main():
    quiet_deterministic()
    # PEFT's LN tuning warns that nn.LayerNorm is an "unsupported layer type" (it only means PEFT
    # cannot read in/out features from it); the layer is wrapped and trained as intended.
    warnings.filterwarnings("ignore", message="Unsupported layer type")
    TINY.mkdir(parents=True, exist_ok=True)

    # 1. tokenizer + tiny model
    tok = train_tokenizer()
    vocab = tok.get_vocab_size()
    tok.save(str(TINY / "tokenizer.json"), pretty=True)
    model = build_tiny(vocab)
    tmp = Path(tempfile.mkdtemp())
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(tmp / f, TINY / f)
    finally:
        shutil.rmtree(tmp)
    print(f"tiny_bert: vocab {vocab}")

    # 2. golden eval forward
    ids, mask, types, tokens = encode_golden(tok)
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    model = load_tiny(dropout=True).eval()
    with torch.no_grad():
        out = model.bert(**inputs, output_hidden_states=True)
        logits = model.classifier(out.pooler_output)
    golden = dict(inputs)
    for i, h in enumerate(out.hidden_states):
        golden[f"hidden.{i}"] = h
    golden["pooled"] = out.pooler_output
    golden["logits"] = logits
    save(golden, TINY / "golden.safetensors")
    (TINY / "golden_texts.json").write_text(json.dumps(
        [{"text_a": a, "text_b": b, "tokens": t} for (a, b), t in zip(GOLDEN_TEXTS, tokens)],
        indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    # 3. training steps
    labels = torch.tensor(LABELS, dtype=torch.int64)
    steps = {
        "lora": lambda: step_lora(inputs, labels),
        "bitfit": lambda: step_bitfit(inputs, labels),
        "lnfit": lambda: step_lnfit(inputs, labels),
        "lra": lambda: step_hooked(inputs, labels, "lra"),
        "adapter": lambda: step_hooked(inputs, labels, "adapter"),
        "full": lambda: step_full(inputs, labels),
    }
    for name, fn in steps.items():
        rec = fn()
        save(rec, TINY / f"step_{name}.safetensors")
        print(f"step_{name}: loss {rec['loss'].item():.6f}, {len(rec)} tensors")

    # 4. MiniLM
    if (MINILM / "model.safetensors").exists():
        make_minilm()
    else:
        sys.exit(f"missing {MINILM}/model.safetensors (run scripts/setup.sh)")


if __name__ == "__main__":
    main()
