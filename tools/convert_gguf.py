#!/usr/bin/env python3
"""Convert a Llama-architecture GGUF (SmolLM2-135M-Instruct, Q4_1 / Q8_0 / F32) into a Hugging Face
directory, and check the result against transformers' own GGUF loading.

    convert_gguf.py GGUF OUT_DIR [--config CONFIG.json] [--dtype fp32|bf16] [--check]
    convert_gguf.py GGUF OUT_DIR --check-only

Writes OUT_DIR/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
special_tokens_map.json, generation_config.json}. OUT_DIR is written as OUT_DIR.partial and renamed
at the end (after --check passes, when given), so a half-written directory never has the final name.

Weights: every tensor is dequantized by gguf-py (`gguf.quants.dequantize`, llama.cpp's own Python
reader) to fp32. llama.cpp's converter permutes the rows of attn_q / attn_k so that its RoPE can
rotate adjacent pairs (GPT-J style); Hugging Face's Llama rotates the two halves of each head
(rotate_half). Its inverse is applied here per head: rows (h, 2, d/2) <- (h, d/2, 2), with the
key-value head count for attn_k. Names: token_embd -> model.embed_tokens, blk.N.attn_q ->
model.layers.N.self_attn.q_proj, ..., output_norm -> model.norm; no output.weight means tied
embeddings (lm_head not stored, as transformers saves a tied model). bf16 = the fp32 values rounded
by torch (round to nearest even).

Config: --config (the committed ../shared/configs/<model>/config.json) after checking that every
architectural number in it equals the GGUF metadata; `torch_dtype` is set to the dtype written.

Tokenizer: byte-level BPE from the GGUF vocabulary and merges (tokenizer.ggml.model gpt2). The GGUF's
pre-tokenizer type is `smollm`, which llama.cpp splits with "\\p{N}" (every digit alone) and then the
GPT-2 regex: here Digits(individual_digits) + ByteLevel(use_regex). The 17 control tokens are added
as special tokens. tokenizer_config.json carries the GGUF's chat template.

--check (needs transformers >= 5 and gguf): (1) transformers' GGUF loading
(`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`, its Llama un-permutation) gives the same
value for every tensor; (2) transformers' independent torch dequantizer
(transformers.integrations.gguf.dequant) agrees with gguf-py's on every quantized tensor; (3) logits
of the converted directory and of the GGUF-loaded model agree on a chat prompt (max abs diff <= 1e-4);
(4) the tokenizer has transformers' GGUF tokenizer's vocabulary and merges and gives the same ids on
texts (digits included); (5) the parameter count (tied embeddings once) equals --params.
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws tqdm bars
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# config key -> GGUF metadata key (under the architecture's prefix) it must equal
CONFIG_FROM_GGUF = {
    "num_hidden_layers": "block_count",
    "max_position_embeddings": "context_length",
    "hidden_size": "embedding_length",
    "intermediate_size": "feed_forward_length",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "rope_theta": "rope.freq_base",
    "rms_norm_eps": "attention.layer_norm_rms_epsilon",
    "vocab_size": "vocab_size",
    "head_dim": "rope.dimension_count",
}
TOKEN_IDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "padding_token_id"}
CONTROL = 3  # llama.cpp token type of control (special) tokens
CHECK_PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def metadata(reader):
    out = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
            out[key] = list(field.contents())
        else:
            out[key] = field.contents()
    return out


def unpermute(w, n_head):
    """Inverse of llama.cpp's `permute` for the rows of a q / k projection (see the module doc)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(gguf_name):
    stem, suffix = gguf_name.rsplit(".", 1)
    if stem.startswith("blk."):
        _, n, part = stem.split(".", 2)
        return f"model.layers.{n}.{LAYER_NAMES[part]}.{suffix}"
    return f"{GLOBAL_NAMES[stem]}.{suffix}"


def read_tensors(reader, meta):
    """{hf name: fp32 numpy array} in the Hugging Face layout."""
    from gguf.quants import dequantize

    arch = meta["general.architecture"]
    assert arch == "llama", f"only the llama architecture is supported, not {arch}"
    heads, kv_heads = meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"]
    out = {}
    for t in reader.tensors:
        w = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32, copy=True)
        expect = tuple(int(x) for x in reversed(t.shape))  # GGUF lists the innermost dimension first
        assert w.shape == expect, f"{t.name}: dequantized shape {w.shape}, header says {expect}"
        if ".attn_q." in t.name:
            w = unpermute(w, heads)
        elif ".attn_k." in t.name:
            w = unpermute(w, kv_heads)
        out[hf_name(t.name)] = w
    return out


def build_config(meta, config_path, tied, dtype):
    arch = meta["general.architecture"]
    cfg = json.loads(Path(config_path).read_text())
    bad = []
    for key, gkey in CONFIG_FROM_GGUF.items():
        got = meta.get(f"{arch}.{gkey}")
        if got is not None and not np.isclose(float(cfg[key]), float(got), rtol=1e-6):
            bad.append(f"{key}: config {cfg[key]}, GGUF {arch}.{gkey} {got}")
    for key, gkey in TOKEN_IDS.items():
        if cfg.get(key) != meta.get(f"tokenizer.ggml.{gkey}"):
            bad.append(f"{key}: config {cfg.get(key)}, GGUF {meta.get('tokenizer.ggml.' + gkey)}")
    if cfg.get("tie_word_embeddings") != tied:
        bad.append(f"tie_word_embeddings: config {cfg.get('tie_word_embeddings')}, GGUF {tied}")
    if bad:
        sys.exit(f"{config_path} does not match the GGUF metadata:\n  " + "\n  ".join(bad))
    cfg["torch_dtype"] = {"fp32": "float32", "bf16": "bfloat16"}[dtype]
    return cfg


def build_tokenizer(meta):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    assert meta["tokenizer.ggml.model"] == "gpt2", meta["tokenizer.ggml.model"]
    assert meta["tokenizer.ggml.pre"] == "smollm", meta["tokenizer.ggml.pre"]
    tokens = meta["tokenizer.ggml.tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate tokens"
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    specials = [t for t, ty in zip(tokens, meta["tokenizer.ggml.token_type"]) if ty == CONTROL]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    assert tok.get_vocab_size() == len(tokens)
    return tok, specials


def tokenizer_files(meta, specials):
    tokens = meta["tokenizer.ggml.tokens"]
    name = lambda key: tokens[meta[f"tokenizer.ggml.{key}"]]  # noqa: E731
    special = {"bos_token": name("bos_token_id"), "eos_token": name("eos_token_id"),
               "unk_token": name("unknown_token_id"), "pad_token": name("padding_token_id")}
    config = dict(special, add_bos_token=bool(meta["tokenizer.ggml.add_bos_token"]),
                  add_prefix_space=False, additional_special_tokens=specials,
                  chat_template=meta["tokenizer.chat_template"], clean_up_tokenization_spaces=False,
                  model_max_length=int(meta["llama.context_length"]), tokenizer_class="GPT2Tokenizer")
    special_map = dict(special, additional_special_tokens=specials)
    generation = {"bos_token_id": meta["tokenizer.ggml.bos_token_id"],
                  "eos_token_id": meta["tokenizer.ggml.eos_token_id"],
                  "pad_token_id": meta["tokenizer.ggml.padding_token_id"]}
    return config, special_map, generation


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert(gguf_path, out, config_path, dtype):
    import gguf
    import torch
    from safetensors.torch import save_file

    reader = gguf.GGUFReader(str(gguf_path))
    meta = metadata(reader)
    tensors = read_tensors(reader, meta)
    tied = "lm_head.weight" not in tensors
    cfg = build_config(meta, config_path, tied, dtype)
    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    out.mkdir(parents=True)
    save_file({k: torch.from_numpy(tensors[k]).to(tdtype) for k in sorted(tensors)},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)
    write_json(out / "config.json", cfg)
    tok, specials = build_tokenizer(meta)
    tok.save(str(out / "tokenizer.json"))
    tcfg, smap, gen = tokenizer_files(meta, specials)
    write_json(out / "tokenizer_config.json", tcfg)
    write_json(out / "special_tokens_map.json", smap)
    write_json(out / "generation_config.json", gen)
    n = sum(v.size for v in tensors.values())
    print(f"[convert] {len(tensors)} tensors, {n:,} parameters ({'tied' if tied else 'untied'} embeddings), "
          f"{dtype} -> {out}")
    return n


# ---- --check ---------------------------------------------------------------------------------
def check(gguf_path, out, want=None, tol=1e-4):
    import gguf
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.integrations.gguf.dequant import dequantize as hf_dequantize
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    failures = []
    ours = load_file(str(out / "model.safetensors"))
    dtype = next(iter(ours.values())).dtype

    # (2) two independent dequantizers
    reader = gguf.GGUFReader(str(gguf_path))
    worst = 0.0
    for t in reader.tensors:
        if t.tensor_type.name in ("F32", "F16", "BF16"):
            continue
        a = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)
        b = hf_dequantize(torch.from_numpy(np.array(t.data).view(np.uint8).reshape(-1)),
                          int(t.tensor_type)).numpy()
        worst = max(worst, float(np.abs(a - b).max()))
    print(f"[check] gguf-py vs transformers' torch dequantizer: max abs diff {worst:.3g} over the quantized tensors")
    if worst > 0:
        failures.append(f"dequantizers differ by {worst}")

    # (1) every tensor against transformers' GGUF loading
    ref = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                               dtype=torch.float32, attn_implementation="eager").eval()
    sd = {k: v for k, v in ref.state_dict().items()}
    if ref.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    if set(sd) != set(ours):
        failures.append(f"tensor names differ: {sorted(set(sd) ^ set(ours))[:10]}")
    worst_t, worst_name = 0.0, ""
    for k in sorted(set(sd) & set(ours)):
        d = (ours[k].float() - sd[k].to(dtype).float()).abs().max().item()
        if d > worst_t:
            worst_t, worst_name = d, k
    print(f"[check] {len(ours)} tensors against transformers' GGUF loading ({dtype}): max abs diff "
          f"{worst_t:.3g}{' at ' + worst_name if worst_name else ''}")
    if worst_t > 0:
        failures.append(f"tensors differ by {worst_t} ({worst_name})")

    # (3) logits
    tok = AutoTokenizer.from_pretrained(str(out))
    mine = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="eager").eval()
    ids = tok.apply_chat_template(CHECK_PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        for p in ref.parameters():  # the reference with the weights rounded as written (a no-op in fp32)
            p.copy_(p.to(dtype).float())
        l_mine = mine(**ids).logits
        l_ref = ref(**ids).logits
    d = (l_mine - l_ref).abs().max().item()
    print(f"[check] logits on a {ids['input_ids'].shape[1]}-token chat prompt: max abs diff {d:.3g} (tol {tol:g})")
    if d > tol:
        failures.append(f"logits differ by {d}")

    # (4) tokenizer
    ref_tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    ours_json = json.loads((out / "tokenizer.json").read_text())
    ref_json = json.loads(ref_tok.backend_tokenizer.to_str())
    same_vocab = ours_json["model"]["vocab"] == ref_json["model"]["vocab"]
    norm = lambda ms: [m if isinstance(m, str) else " ".join(m) for m in ms]  # noqa: E731
    same_merges = norm(ours_json["model"]["merges"]) == norm(ref_json["model"]["merges"])
    texts = [tok.apply_chat_template(CHECK_PROMPT, add_generation_prompt=True, tokenize=False),
             "The quick brown fox jumps over the lazy dog's back, doesn't it?",
             "  Leading spaces, tabs\tand\nnew lines; caf\u00e9 na\u00efve \u2603 emoji \U0001F600.",
             "In 2024, 1234567 people paid $3.50 each."]
    same_ids = all(tok(t)["input_ids"] == ref_tok(t)["input_ids"] for t in texts)
    print(f"[check] tokenizer: vocab {'=' if same_vocab else '!='}, merges {'=' if same_merges else '!='}, ids on "
          f"{len(texts)} texts (chat template, accents, emoji, digits) {'=' if same_ids else '!='} transformers' "
          f"GGUF tokenizer")
    if not (same_vocab and same_merges and same_ids):
        failures.append("tokenizer differs")

    # (5) parameter count
    n = sum(v.numel() for v in ours.values())
    print(f"[check] parameters: {n:,}" + (f" (expected {want:,})" if want else ""))
    if want and n != want:
        failures.append(f"parameter count {n} != {want}")
    if failures:
        sys.exit("[check] FAILED: " + "; ".join(failures))
    print("[check] OK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--config", type=Path, help="config.json to write (checked against the GGUF metadata)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--check", action="store_true", help="check the conversion against transformers")
    ap.add_argument("--check-only", action="store_true", help="only check an existing OUT_DIR")
    ap.add_argument("--params", type=int, help="expected parameter count (checked by --check)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if a.check_only:
        check(a.gguf.resolve(), a.out, a.params)
        return
    if a.config is None:
        ap.error("--config is required to convert")
    stage = a.out.with_name(a.out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    convert(a.gguf, stage, a.config, a.dtype)
    if a.check:
        check(a.gguf.resolve(), stage, a.params)
    shutil.rmtree(a.out, ignore_errors=True)
    os.rename(stage, a.out)
    print(f"[convert] wrote {a.out}")


if __name__ == "__main__":
    main()
