#!/usr/bin/env python3
"""Golden fixtures for the encoder families beyond BERT (MPNet, RoBERTa, DeBERTa-v2/v3, DistilBERT),
computed with transformers and PEFT, plus the real all-mpnet-base-v2 on real sentences.

Writes, for F in mpnet, roberta, deberta_v2, distilbert, under tests/fixtures/tiny_<F>/:
  config.json, model.safetensors, tokenizer.json   a tiny random <X>ForSequenceClassification (3 labels)
  golden.safetensors       eval-mode forward: input_ids, attention_mask, hidden.<i>, logits, params.*
  golden_texts.json        the texts behind input_ids, with their tokens
  step_<m>.safetensors     one train-mode step (dropout 0) for m in lora, bitfit, lnfit: inputs, labels,
                           loss, init.<name> / grad.<name> of every trained tensor
and tests/fixtures/tiny_xlm_roberta/ (config.json, model.safetensors, tokenizer.json, golden.safetensors:
the RoBERTa recipe under model_type xlm-roberta), tests/fixtures/mpnet_golden.safetensors +
mpnet_sentences.json (the real all-mpnet-base-v2, when models/all-mpnet-base-v2 is there).

Same conventions as make_fixtures.py (tools/README.md): seeded, one CPU thread, float64 arithmetic on
fp32-exact values, stored as fp32; names are module paths without the backbone prefix (`mpnet.`,
`roberta.`, `deberta.`, `distilbert.`); the task head (every module outside the backbone) is trained in
every method. Run through tools/make_fixtures.sh.
"""
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (seeding, fp32 helpers, WordPiece, PEFT step helpers)
import make_t5_fixtures as t5f  # noqa: E402  (the count-based Unigram tokenizer)

import torch  # noqa: E402
from peft import LNTuningConfig, LoraConfig, get_peft_model  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: E402
from transformers import (AutoModel, DebertaV2Config, DebertaV2ForSequenceClassification,  # noqa: E402
                          DistilBertConfig, DistilBertForSequenceClassification, MPNetConfig,
                          MPNetForSequenceClassification, RobertaConfig, RobertaForSequenceClassification,
                          XLMRobertaConfig, XLMRobertaForSequenceClassification)

OUT = mf.OUT
CALC = mf.CALC
MPNET = Path(os.environ.get("S3PET_MPNET", mf.ROOT / "models" / "all-mpnet-base-v2"))
MPNET_PARAMS = 109_486_464  # float parameters of all-mpnet-base-v2, pooler included
MPNET_MAX_LEN = 32
LAYERS = range(2)
LORA_R, LORA_ALPHA = mf.LORA_R, mf.LORA_ALPHA  # 4, 8 as for tiny_bert
LABELS = [2, 0, 1]
# Row 0 is long enough that relative positions reach the logarithmic buckets of MPNet (32 buckets:
# exact below 8) and
# DeBERTa (position_buckets 8); row 1 has a character outside every tiny vocabulary; row 2 is a pair.
TEXTS = [
    ("The president of the United States said that oil prices will rise again.", None),
    ("Oil prices \u2603", None),
    ("Oil rose.", "It won."),
]
COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
              initializer_range=0.2, num_labels=3)
BPE_MERGES = 300
BPE_SENTENCES = 400


# ---- tokenizers ------------------------------------------------------------------------------
def learn_byte_bpe(texts, pre, n_merges, specials):
    """A byte-level BPE learned by plain counting (no trainer, so the same on every run): words are
    what `pre` (a ByteLevel pre-tokenizer) splits, every merge is the most frequent adjacent pair,
    ties broken by the smaller pair. Vocabulary: specials, the 256 byte symbols, merged tokens in
    merge order."""
    words = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(t))
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append((a, b))
        for w, s in seqs.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    vocab = list(specials) + sorted(pre_tokenizers.ByteLevel.alphabet()) + [a + b for a, b in merges]
    assert len(set(vocab)) == len(vocab)
    return {t: i for i, t in enumerate(vocab)}, merges


def roberta_tokenizer():
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    vocab, merges = learn_byte_bpe(t5f.rte_sentences()[:BPE_SENTENCES], pre, BPE_MERGES, specials)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    tok.add_special_tokens(specials)
    return tok


def mpnet_tokenizer():
    # As all-mpnet-base-v2's: BERT WordPiece, lowercase, RoBERTa-style specials and template.
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    return mf.train_tokenizer(specials, "<unk>", lambda t: processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False))


def deberta_tokenizer():
    # DeBERTa-v3 style: SentencePiece Unigram with Metaspace, [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3
    # ([MASK]=4 here; 128000 in the real vocabulary), `[CLS] A [SEP]` / `[CLS] A [SEP] B:1 [SEP]:1`.
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    post = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                         special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return t5f.build_tokenizer(specials, "[UNK]", post)


# ---- families --------------------------------------------------------------------------------
def layer_sites(fmt, parts):
    return [fmt.format(i=i, m=m) for i in LAYERS for m in parts]


FAMILIES = {
    "mpnet": dict(
        cls=MPNetForSequenceClassification, prefix="mpnet", tokenizer=mpnet_tokenizer, head=["classifier"],
        config=lambda v: MPNetConfig(vocab_size=v, max_position_embeddings=64, relative_attention_num_buckets=32,
                                     layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                     **COMMON),
        linear=layer_sites("encoder.layer.{i}.{m}", ["attention.attn.q", "attention.attn.k", "attention.attn.v",
                                                     "attention.attn.o", "intermediate.dense", "output.dense"]),
        norms=["embeddings.LayerNorm"] + layer_sites("encoder.layer.{i}.{m}",
                                                     ["attention.LayerNorm", "output.LayerNorm"])),
    "roberta": dict(
        cls=RobertaForSequenceClassification, prefix="roberta", tokenizer=roberta_tokenizer, head=["classifier"],
        config=lambda v: RobertaConfig(vocab_size=v, max_position_embeddings=66, type_vocab_size=1,
                                       layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                       **COMMON),
        linear=layer_sites("encoder.layer.{i}.{m}", ["attention.self.query", "attention.self.key",
                                                     "attention.self.value", "attention.output.dense",
                                                     "intermediate.dense", "output.dense"]),
        norms=["embeddings.LayerNorm"] + layer_sites("encoder.layer.{i}.{m}",
                                                     ["attention.output.LayerNorm", "output.LayerNorm"])),
    "deberta_v2": dict(
        cls=DebertaV2ForSequenceClassification, prefix="deberta", tokenizer=deberta_tokenizer,
        head=["pooler", "classifier"],
        config=lambda v: DebertaV2Config(
            vocab_size=v, max_position_embeddings=64, type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0,
            relative_attention=True, position_buckets=8, max_relative_positions=-1, share_att_key=True,
            pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", position_biased_input=False,
            pooler_hidden_size=32, pooler_hidden_act="gelu", pooler_dropout=0.1, **COMMON),
        linear=layer_sites("encoder.layer.{i}.{m}", ["attention.self.query_proj", "attention.self.key_proj",
                                                     "attention.self.value_proj", "attention.output.dense",
                                                     "intermediate.dense", "output.dense"]),
        norms=["embeddings.LayerNorm", "encoder.LayerNorm"] + layer_sites(
            "encoder.layer.{i}.{m}", ["attention.output.LayerNorm", "output.LayerNorm"])),
    "distilbert": dict(
        cls=DistilBertForSequenceClassification, prefix="distilbert", tokenizer=mf.train_tokenizer,
        head=["pre_classifier", "classifier"],
        config=lambda v: DistilBertConfig(vocab_size=v, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                          max_position_embeddings=64, activation="gelu", dropout=0.1,
                                          attention_dropout=0.1, seq_classif_dropout=0.1,
                                          initializer_range=0.2, pad_token_id=0, num_labels=3),
        linear=layer_sites("transformer.layer.{i}.{m}", ["attention.q_lin", "attention.k_lin", "attention.v_lin",
                                                         "attention.out_lin", "ffn.lin1", "ffn.lin2"]),
        norms=["embeddings.LayerNorm"] + layer_sites("transformer.layer.{i}.{m}",
                                                     ["sa_layer_norm", "output_layer_norm"])),
}
FAMILIES["xlm_roberta"] = dict(
    FAMILIES["roberta"], cls=XLMRobertaForSequenceClassification,
    config=lambda v: XLMRobertaConfig(**FAMILIES["roberta"]["config"](v).to_diff_dict()))
NO_DROPOUT = {"distilbert": dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0),
              "deberta_v2": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pooler_dropout=0.0)}
STEP_FAMILIES = ["mpnet", "roberta", "deberta_v2", "distilbert"]


def build(fam, name, vocab):
    torch.manual_seed(mf.SEED + sum(map(ord, name)))
    model = fam["cls"](fam["config"](vocab))
    g = mf.gen(f"tiny-{name}")
    with torch.no_grad():  # as tiny_bert: norm scales away from 1, biases away from 0
        for n, p in model.named_parameters():
            if "LayerNorm.weight" in n or "layer_norm.weight" in n:
                p.copy_(1.0 + mf.rand(g, *p.shape, std=0.2))
            elif n.endswith(".bias"):
                p.copy_(mf.rand(g, *p.shape, std=0.1))
    return model


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def save_model(model, out):
    tmp = Path(tempfile.mkdtemp())
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(tmp / f, out / f)
            os.chmod(out / f, 0o644)
    finally:
        shutil.rmtree(tmp)


def load(fam, name, out, dropout):
    # the heads of MPNet and RoBERTa use hidden_dropout_prob (classifier_dropout is unset)
    kw = {} if dropout else NO_DROPOUT.get(name, dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    return fam["cls"].from_pretrained(str(out), attn_implementation="eager", **kw).to(CALC)


def encode(tok, pad_id):
    enc = [tok.encode(a, b) if b is not None else tok.encode(a) for a, b in TEXTS]
    n = max(len(e.ids) for e in enc)
    ids = torch.full((len(enc), n), pad_id, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for r, e in enumerate(enc):
        ids[r, :len(e.ids)] = torch.tensor(e.ids)
        mask[r, :len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}, [e.tokens for e in enc]


def param_counts(model, prefix):
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix + "."))
    return {"params.total": torch.tensor(total), "params.backbone": torch.tensor(backbone)}


def golden(fam, name, out, inputs):
    model = load(fam, name, out, dropout=True).eval()
    with torch.no_grad():
        res = model(**inputs, output_hidden_states=True)
    rec = dict(inputs, logits=res.logits, **param_counts(model, fam["prefix"]))
    for i, h in enumerate(res.hidden_states):
        rec[f"hidden.{i}"] = h
    return rec


def head_inits(model, fam):
    return {n: mf.f32(p) for n, p in model.named_parameters() if n.split(".")[0] in fam["head"]}


def regex(prefix, sites):
    return rf"{prefix}\.(" + "|".join(s.replace(".", r"\.") for s in sites) + ")"


def step(fam, name, out, inputs, labels, method):
    model = load(fam, name, out, dropout=False)
    prefix = fam["prefix"]
    inits = head_inits(model, fam)
    g = mf.gen(f"{name}-{method}")
    if method == "lora":
        cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none",
                         target_modules=regex(prefix, fam["linear"]), modules_to_save=fam["head"])
        model = get_peft_model(model, cfg).to(CALC)
        inits.update(mf.init_lora(model.base_model.model, fam["linear"], g, LORA_R, LORA_ALPHA, prefix + "."))
        rename = {}
    elif method == "lnfit":
        cfg = LNTuningConfig(target_modules=regex(prefix, fam["norms"]), modules_to_save=fam["head"])
        model = get_peft_model(model, cfg).to(CALC)
        rename = {}
        with torch.no_grad():
            for site in fam["norms"]:
                ln = model.base_model.model.get_submodule(f"{prefix}.{site}").ln_tuning_layers["default"]
                w = mf.rand(g, *ln.weight.shape, std=0.1)
                ln.weight.add_(w.to(CALC))
                ln.bias.requires_grad_(False)
                inits[f"{site}.lnfit"] = w
                rename[f"{site}.weight"] = f"{site}.lnfit"
    else:  # bitfit: train the biases themselves (value = checkpoint bias + delta), as for tiny_bert
        for n, p in model.named_parameters():
            p.requires_grad_(n.split(".")[0] in fam["head"])
        rename = {}
        with torch.no_grad():
            for site in fam["linear"] + fam["norms"]:
                bias = model.get_submodule(f"{prefix}.{site}").bias
                delta = mf.rand(g, *bias.shape, std=0.05)
                bias.add_(delta.to(CALC))
                bias.requires_grad_(True)
                inits[f"{site}.bitfit"] = delta
                rename[f"{site}.bias"] = f"{site}.bitfit"
    loss, logits, trainable = mf.run_step(model, inputs, labels, prefix=prefix)
    trainable = {rename.get(n, n): p for n, p in trainable.items()}
    rec = mf.step_record(inputs, labels, loss, trainable, inits)
    rec["logits"] = logits
    return rec


def metadata(fam, method):
    """One safetensors metadata entry, `fixture`, a JSON object with sorted keys (safetensors writes
    several entries in hash-map order, which would change the bytes from run to run)."""
    meta = {"backbone_prefix": fam["prefix"] + ".", "head": fam["head"], "method": method}
    if method == "lora":
        meta.update(rank=LORA_R, alpha=LORA_ALPHA, sites=fam["linear"])
    elif method == "lnfit":
        meta["sites"] = fam["norms"]
    else:
        meta["sites"] = fam["linear"] + fam["norms"]
    return {"fixture": json.dumps(meta, sort_keys=True)}


def make_family(name):
    fam = FAMILIES[name]
    out = OUT / f"tiny_{name}"
    out.mkdir(parents=True, exist_ok=True)
    tok = fam["tokenizer"]()
    tok.save(str(out / "tokenizer.json"), pretty=True)
    model = build(fam, name, tok.get_vocab_size())
    save_model(model, out)
    pad_id = model.config.pad_token_id
    inputs, tokens = encode(tok, pad_id)
    g = golden(fam, name, out, inputs)
    mf.save(g, out / "golden.safetensors")
    write_json(out / "golden_texts.json", [{"text_a": a, "text_b": b, "tokens": t} for (a, b), t in zip(TEXTS, tokens)])
    msg = (f"tiny_{name}: vocab {tok.get_vocab_size()}, inputs {tuple(inputs['input_ids'].shape)}, "
           f"lengths {inputs['attention_mask'].sum(1).tolist()}, params {g['params.total'].item():,}")
    if name in STEP_FAMILIES:
        labels = torch.tensor(LABELS, dtype=torch.int64)
        for method in ("lora", "bitfit", "lnfit"):
            rec = step(fam, name, out, inputs, labels, method)
            mf.save(rec, out / f"step_{method}.safetensors", metadata(fam, method))
            msg += f", {method} loss {rec['loss'].item():.6f} ({sum(k.startswith('grad.') for k in rec)} grads)"
    print(msg)


# ---- the real all-mpnet-base-v2 --------------------------------------------------------------
def make_mpnet():
    tok = Tokenizer.from_file(str(MPNET / "tokenizer.json"))
    tok.enable_truncation(max_length=MPNET_MAX_LEN)
    tok.enable_padding(pad_id=1, pad_type_id=0, pad_token="<pad>")  # pad to the longest in the batch
    texts = mf.minilm_texts(tok)
    enc = tok.encode_batch([a if b is None else (a, b) for a, b in texts])
    ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
    model = AutoModel.from_pretrained(str(MPNET), attn_implementation="eager", dtype=torch.float32).eval()
    n = sum(p.numel() for p in model.parameters())
    assert n == MPNET_PARAMS, f"all-mpnet-base-v2 has {n:,} parameters, expected {MPNET_PARAMS:,}"
    with torch.no_grad():
        res = model(input_ids=ids, attention_mask=mask)
    mf.save({"input_ids": ids, "attention_mask": mask, "last_hidden_state": res.last_hidden_state,
             "pooler_output": res.pooler_output, "params.total": torch.tensor(n)},
            OUT / "mpnet_golden.safetensors")
    write_json(OUT / "mpnet_sentences.json", [list(t) for t in texts])
    print(f"all-mpnet-base-v2: batch {tuple(ids.shape)}, lengths {mask.sum(1).tolist()}, {n:,} parameters")


def main():
    mf.quiet_deterministic()
    import warnings
    warnings.filterwarnings("ignore", message="Unsupported layer type")
    for name in STEP_FAMILIES + ["xlm_roberta"]:
        make_family(name)
    if (MPNET / "model.safetensors").exists():
        make_mpnet()
    else:
        print(f"skipping all-mpnet-base-v2: no {MPNET}/model.safetensors (scripts/setup.sh --model all-mpnet-base-v2)")


if __name__ == "__main__":
    main()
