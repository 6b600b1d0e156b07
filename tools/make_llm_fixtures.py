#!/usr/bin/env python3
"""Golden fixtures for the decoder-only (Llama-family) backbones, computed with transformers and PEFT,
plus the real SmolLM2-135M-Instruct on real prompts.

Writes, for F in llama, llama3, qwen2, mistral, under tests/fixtures/tiny_<F>/:
  config.json, model.safetensors   a tiny random <X>ForCausalLM (hidden 32, 2 layers, 4 heads, 2 KV heads)
  tokenizer.json, tokenizer_config.json (chat template), generation_config.json
  golden.safetensors       eval forward of a right-padded batch: input_ids, attention_mask, hidden.<i>,
                           logits [3, T, V], params.total
  golden_texts.json        the texts behind input_ids, with their tokens
  step_<m>.safetensors     one train-mode step (causal-LM loss, dropout 0) for m in lora, bitfit, lnfit:
                           inputs, labels, loss, init.<name> / grad.<name> of every trained tensor
(llama3 has golden only) and, when models/smollm2-135m-instruct (fp32) is there,
tests/fixtures/smollm2_golden.safetensors + smollm2_prompts.json.

Same conventions as make_fixtures.py (tools/README.md): seeded, one CPU thread, but fp32 arithmetic
(see CALC), names = module paths without the `model.` backbone prefix
(`layers.0.self_attn.q_proj`, `norm`). Run through tools/make_fixtures.sh.
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_encoder_fixtures as ef  # noqa: E402  (byte-level BPE, model saving)
import make_fixtures as mf  # noqa: E402  (seeding, fp32 helpers, PEFT step helpers)
import make_t5_fixtures as t5f  # noqa: E402  (RTE sentences)

import torch  # noqa: E402
from peft import LNTuningConfig, LoraConfig, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,  # noqa: E402
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

OUT = mf.OUT
# float32, not float64 as for the encoders: transformers' Llama-family eager attention takes the
# softmax in float32 whatever the model dtype (and RoPE's cos/sin too), so float64 would gain nothing,
# and its mask value (float64 min) becomes -inf in that float32 softmax: a query whose keys are all
# masked (Mistral's window over right padding) then gives NaN, which reaches the real rows through
# the padded keys' values.
CALC = torch.float32
SMOLLM2 = Path(os.environ.get("S3PET_SMOLLM2", mf.ROOT / "models" / "smollm2-135m-instruct"))
SMOLLM2_PARAMS = 134_515_008
GEN_TOKENS = 32
TOP_K = 32
PREFIX = "model"
LORA_R, LORA_ALPHA = mf.LORA_R, mf.LORA_ALPHA  # 4, 8
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # as SmolLM2: 0, 1 (bos), 2 (eos, pad)
# SmolLM2-135M-Instruct's chat template (its GGUF's tokenizer.chat_template), ChatML.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Golden batch: a chat-rendered row (the longest: it spans more than the Mistral window), a plain
# sentence with digits and a character outside the BPE merges, and a short row (most padding).
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is oil cheap?"}]
TEXTS = ["Oil prices rose 12% in 2024 \u2603", "The cat sat."]
COMMON = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=64, rms_norm_eps=1e-6,
              initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=2, attention_dropout=0.0)
FAMILIES = {
    "llama": dict(cls=LlamaForCausalLM, config=lambda v: LlamaConfig(
        vocab_size=v, tie_word_embeddings=True, rope_theta=10000.0, **COMMON)),
    # llama3 rope scaling, written in the hub's config style (rope_theta + rope_scaling); with head dim 8
    # and theta 1e4 the wavelengths 6.3, 63, 628, 6283 fall on each side of 16 and 64 = 64/4 and 64/1.
    "llama3": dict(cls=LlamaForCausalLM, config=lambda v: LlamaConfig(
        vocab_size=v, tie_word_embeddings=False, rope_theta=10000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64}, **COMMON), hub_style=True),
    # q/k/v biases (Qwen2 always has them), linear rope scaling (factor 2) to cover that rope type too
    "qwen2": dict(cls=Qwen2ForCausalLM, config=lambda v: Qwen2Config(
        vocab_size=v, tie_word_embeddings=False, rope_theta=1e6, use_sliding_window=False,
        rope_scaling={"rope_type": "linear", "factor": 2.0}, **COMMON)),
    "mistral": dict(cls=MistralForCausalLM, config=lambda v: MistralConfig(
        vocab_size=v, tie_word_embeddings=False, rope_theta=10000.0, sliding_window=4, **COMMON)),
}
STEP_FAMILIES = ["llama", "qwen2", "mistral"]
LINEAR = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
LAYERS = range(COMMON["num_hidden_layers"])
LINEAR_SITES = [f"layers.{i}.{m}" for i in LAYERS for m in LINEAR]
NORM_SITES = [f"layers.{i}.{m}" for i in LAYERS for m in ("input_layernorm", "post_attention_layernorm")] + ["norm"]


# ---- tokenizer -------------------------------------------------------------------------------
def build_tokenizer():
    """Byte-level BPE as SmolLM2's: Digits(individual) + ByteLevel pre-tokenizer, no BOS added."""
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    texts = t5f.rte_sentences()[:ef.BPE_SENTENCES]
    vocab, merges = ef.learn_byte_bpe(texts, pre, ef.BPE_MERGES, SPECIALS)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(SPECIALS)
    return tok


def write_tokenizer(tok, out):
    tok.save(str(out / "tokenizer.json"), pretty=True)
    cfg = {"bos_token": SPECIALS[1], "eos_token": SPECIALS[2], "pad_token": SPECIALS[2], "unk_token": SPECIALS[0],
           "add_bos_token": False, "add_prefix_space": False, "additional_special_tokens": SPECIALS,
           "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "model_max_length": 64,
           "tokenizer_class": "GPT2Tokenizer"}
    ef.write_json(out / "tokenizer_config.json", cfg)
    ef.write_json(out / "generation_config.json", {k: COMMON[k] for k in ("bos_token_id", "eos_token_id",
                                                                           "pad_token_id")})


# ---- tiny models -----------------------------------------------------------------------------
def build(name, vocab):
    torch.manual_seed(mf.SEED + sum(map(ord, name)))
    model = FAMILIES[name]["cls"](FAMILIES[name]["config"](vocab))
    g = mf.gen(f"tiny-{name}")
    with torch.no_grad():  # norm scales away from 1, biases away from 0
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + mf.rand(g, *p.shape, std=0.2))
            elif n.endswith(".bias"):
                p.copy_(mf.rand(g, *p.shape, std=0.1))
    return model


def to_hub_style(out):
    """transformers 5 writes `rope_parameters`; rewrite as `rope_theta` + `rope_scaling` (the style of the
    hub's Llama-3 configs), checking that transformers reads it back to the same parameters."""
    path = out / "config.json"
    cfg = json.loads(path.read_text())
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope
    before = LlamaConfig.from_pretrained(str(out)).rope_parameters
    path.write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")
    assert LlamaConfig.from_pretrained(str(out)).rope_parameters == before


def load(name, out):
    return FAMILIES[name]["cls"].from_pretrained(str(out), attn_implementation="eager").to(CALC)


def encode(tok, out):
    """The golden batch; the chat row is rendered by transformers from tokenizer_config.json, and
    transformers' tokenizer must give the same ids as tokenizer.json through `tokenizers`."""
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    rows = [hf_tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)] + TEXTS
    enc = [tok.encode(t) for t in rows]
    assert all(hf_tok(r)["input_ids"] == e.ids for r, e in zip(rows, enc))
    n = max(len(e.ids) for e in enc)
    ids = torch.full((len(enc), n), COMMON["pad_token_id"], dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for r, e in enumerate(enc):  # right padding
        ids[r, :len(e.ids)] = torch.tensor(e.ids)
        mask[r, :len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}, rows, [e.tokens for e in enc]


def golden(name, out, inputs):
    model = load(name, out).eval()
    with torch.no_grad():
        res = model(**inputs, output_hidden_states=True)
    rec = dict(inputs, logits=res.logits, **{"params.total": torch.tensor(sum(p.numel() for p in model.parameters()))})
    for i, h in enumerate(res.hidden_states):
        rec[f"hidden.{i}"] = h
    return rec


def lm_labels(inputs):
    return inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)


def step(name, out, inputs, method):
    model = load(name, out)
    g = mf.gen(f"{name}-{method}")
    inits, extra, rename = {}, {}, {}
    if method == "lora":
        cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                         target_modules=ef.regex(PREFIX, LINEAR_SITES))
        model = get_peft_model(model, cfg).to(CALC)
        inits = mf.init_lora(model.base_model.model, LINEAR_SITES, g, LORA_R, LORA_ALPHA, PREFIX + ".")
    elif method == "lnfit":
        cfg = LNTuningConfig(target_modules=ef.regex(PREFIX, NORM_SITES), task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg).to(CALC)
        with torch.no_grad():
            for site in NORM_SITES:
                norm = model.base_model.model.get_submodule(f"{PREFIX}.{site}").ln_tuning_layers["default"]
                w = mf.rand(g, *norm.weight.shape, std=0.1)
                norm.weight.add_(w.to(CALC))
                inits[f"{site}.lnfit"] = w
                rename[f"{site}.weight"] = f"{site}.lnfit"
    else:  # bitfit: a bias added to the output of every linear by a forward hook (Qwen2's q/k/v biases
        # included: the gradient of an added bias is the gradient of the module's own bias)
        model.requires_grad_(False)
        for site in LINEAR_SITES:
            mod = model.get_submodule(f"{PREFIX}.{site}")
            b = mf.rand(g, mod.out_features, std=0.05)
            p = torch.nn.Parameter(b.to(CALC))
            mod.register_forward_hook(lambda _m, _i, o, p=p: o + p)
            inits[f"{site}.bitfit"], extra[f"{site}.bitfit"] = b, p
    labels = lm_labels(inputs)
    loss, _, trainable = mf.run_step(model, dict(inputs, labels=labels), labels, extra, prefix=PREFIX,
                                     loss_fn=lambda o: o.loss)
    trainable = {rename.get(n, n): p for n, p in trainable.items()}
    return mf.step_record(inputs, labels, loss, trainable, inits)


def metadata(method):
    meta = {"backbone_prefix": PREFIX + ".", "method": method, "loss": "causal LM, mean over labels != -100",
            "sites": NORM_SITES if method == "lnfit" else LINEAR_SITES}
    if method == "lora":
        meta.update(rank=LORA_R, alpha=LORA_ALPHA)
    return {"fixture": json.dumps(meta, sort_keys=True)}


def make_family(name, tok):
    out = OUT / f"tiny_{name}"
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(tok, out)
    ef.save_model(build(name, tok.get_vocab_size()), out)
    if FAMILIES[name].get("hub_style"):
        to_hub_style(out)
    inputs, rows, tokens = encode(tok, out)
    g = golden(name, out, inputs)
    if name == "mistral":  # the window must matter on the real positions of the golden batch
        full = FAMILIES[name]["cls"].from_pretrained(str(out), attn_implementation="eager", sliding_window=None)
        with torch.no_grad():
            d = (full.to(CALC).eval()(**inputs).logits - g["logits"]).abs()[inputs["attention_mask"] == 1].max()
        assert d > 1e-2, f"sliding window changes the logits by only {d}"
    mf.save(g, out / "golden.safetensors")
    ef.write_json(out / "golden_texts.json", [{"text": r, "tokens": t} for r, t in zip(rows, tokens)])
    msg = (f"tiny_{name}: vocab {tok.get_vocab_size()}, inputs {tuple(inputs['input_ids'].shape)}, lengths "
           f"{inputs['attention_mask'].sum(1).tolist()}, params {g['params.total'].item():,}")
    if name in STEP_FAMILIES:
        for method in ("lora", "bitfit", "lnfit"):
            rec = step(name, out, inputs, method)
            mf.save(rec, out / f"step_{method}.safetensors", metadata(method))
            msg += f", {method} loss {rec['loss'].item():.6f} ({sum(k.startswith('grad.') for k in rec)} grads)"
    print(msg)


# ---- the real SmolLM2-135M-Instruct ------------------------------------------------------------
def smollm2_prompts():
    rte = mf.read_tsv(mf.GLUE / "RTE" / "dev.tsv")
    h = rte[0]
    premise, hypothesis = min(((r[h.index("sentence1")], r[h.index("sentence2")]) for r in rte[1:]),
                              key=lambda p: len(p[0]) + len(p[1]))
    sst = mf.read_tsv(mf.GLUE / "SST-2" / "dev.tsv")[1][0].strip()
    return [
        {"source": "RTE dev, the shortest pair in characters",
         "messages": [{"role": "user", "content": f"Premise: {premise}\nHypothesis: {hypothesis}\n"
                                                  "Does the premise entail the hypothesis? Explain your reasoning."}]},
        {"source": "SST-2 dev #0",
         "messages": [{"role": "user", "content": f"Review: {sst}\nIs this movie review positive or negative? "
                                                  "Explain why."}]},
        {"source": "written here",
         "messages": [{"role": "system", "content": "You are a poet."},
                      {"role": "user", "content": "Write a short poem about the sea."}]},
    ]


def make_smollm2():
    tok = AutoTokenizer.from_pretrained(str(SMOLLM2))
    model = AutoModelForCausalLM.from_pretrained(str(SMOLLM2), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    assert n == SMOLLM2_PARAMS, f"SmolLM2 has {n:,} parameters, expected {SMOLLM2_PARAMS:,}"
    prompts = smollm2_prompts()
    rows = [tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False) for p in prompts]
    ids = [tok(r)["input_ids"] for r in rows]
    T = max(map(len, ids))
    input_ids = torch.full((len(ids), T), tok.pad_token_id, dtype=torch.int64)
    mask = torch.zeros_like(input_ids)
    for r, x in enumerate(ids):
        input_ids[r, :len(x)] = torch.tensor(x)
        mask[r, :len(x)] = 1
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits
    last = torch.stack([logits[r, len(x) - 1] for r, x in enumerate(ids)])
    top = logits.topk(TOP_K, dim=-1)
    gen, margin = [], []
    for x in ids:  # one prompt at a time: no padding in generation
        with torch.no_grad():
            res = model.generate(torch.tensor([x]), attention_mask=torch.ones(1, len(x), dtype=torch.int64),
                                 max_new_tokens=GEN_TOKENS, do_sample=False, num_beams=1,
                                 output_scores=True, return_dict_in_generate=True)
        new = res.sequences[0, len(x):]
        assert len(new) == GEN_TOKENS and tok.eos_token_id not in new[:-1].tolist(), \
            f"generation ended early: {tok.decode(new)!r}"
        scores = torch.stack(res.scores)[:, 0]  # (steps, V)
        t2 = scores.topk(2, dim=-1).values
        gen.append(new)
        margin.append(t2[:, 0] - t2[:, 1])
    rec = {"input_ids": input_ids, "attention_mask": mask, "logits.last": last, "topk.ids": top.indices,
           "topk.values": top.values, "generated": torch.stack(gen), "generated.margin": torch.stack(margin),
           "params.total": torch.tensor(n)}
    mf.save(rec, OUT / "smollm2_golden.safetensors")
    for p, r, g in zip(prompts, rows, gen):
        p["text"] = r
        p["generated_text"] = tok.decode(g)
    ef.write_json(OUT / "smollm2_prompts.json", prompts)
    print(f"smollm2: batch {tuple(input_ids.shape)}, lengths {mask.sum(1).tolist()}, {n:,} parameters, "
          f"smallest greedy margin {torch.stack(margin).min().item():.4f}")


def smollm2_is_fp32():
    path = SMOLLM2 / "model.safetensors"
    if not path.exists():
        return False
    with safe_open(str(path), "pt") as f:
        return f.get_slice("model.norm.weight").get_dtype() == "F32"


def main():
    mf.quiet_deterministic()
    import warnings
    warnings.filterwarnings("ignore", message="Unsupported layer type")
    tok = build_tokenizer()
    for name in FAMILIES:
        make_family(name, tok)
    if smollm2_is_fp32():
        make_smollm2()
    else:
        print(f"skipping SmolLM2: no fp32 {SMOLLM2}/model.safetensors (scripts/setup.sh --model smollm2-135m-instruct)")


if __name__ == "__main__":
    main()
