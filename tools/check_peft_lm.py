#!/usr/bin/env python3
"""Checks `s3pet export --format peft` and `s3pet import-peft` for decoder LLMs (task_type CAUSAL_LM)
against real PEFT on transformers' LlamaForCausalLM (`tools/check_peft.py --causal` runs this).

Export: short s3pet runs of a Llama-family model on RTE posed as a prompt (crate::prompt: the chat
template's user turn `Premise: ...\\nHypothesis: ...\\nDoes the premise entail the hypothesis? Answer yes or
no.`, the answer words' first tokens scored at the last prompt token) with (a) LoRA of two ranks and
alphas, BitFit as PEFT's lora_bias on a LoRA Linear and on a Linear without LoRA, LNFit on RMS norms;
(b) a structure searched in `--space mix-peft`. Each is exported, loaded by PEFT (the LN_TUNING
sub-adapter first, merged, then the LoRA adapter) and PEFT's answer-word logits are compared with
`s3pet predict`'s. Import: a LoRA adapter (rank_pattern, alpha_pattern, lora_bias) and an LN_TUNING
adapter saved by PEFT with random non-zero weights go through `s3pet import-peft`, then `s3pet predict`.

    LD_LIBRARY_PATH=tools/.venv/cuda-stubs CUDA_VISIBLE_DEVICES="" \\
        tools/.venv/bin/python tools/check_peft_lm.py [--model tests/fixtures/tiny_llama] [--work /tmp/check_peft_lm]

Prints one JSON line per case and a summary; exits 1 when any max abs difference exceeds --tol (1e-4).
"""
import argparse
import json
import os
import sys

import torch
from peft import LNTuningConfig, LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_peft import ROOT, module_set, report, sh  # noqa: E402

TRAIN = ["--max-train-examples", "32", "--epochs", "1", "--batch-size", "8", "--max-eval-examples", "16",
         "--lr", "3e-2", "--threads", "2", "--max-length", "1024"]
SEARCH = ["--space", "mix-peft", "--budget", "2e-2", "--max-train-examples", "32", "--max-eval-examples", "16",
          "--search-epochs", "1", "--retrain-epochs", "1", "--batch-size", "8", "--lr", "3e-2", "--threads", "2", "--max-length", "1024"]


def body(premise, hypothesis):
    """src/prompt.rs's RTE prompt."""
    return f"Premise: {premise.strip()}\nHypothesis: {hypothesis.strip()}\nDoes the premise entail the hypothesis? Answer yes or no."


def mix_structure(layers):
    m = [{"site": "model.layers.0.self_attn.q_proj", "type": "lora", "rank": 4, "alpha": 8.0},
         {"site": "model.layers.0.self_attn.q_proj", "type": "bitfit"},
         {"site": f"model.layers.{layers - 1}.self_attn.v_proj", "type": "lora", "rank": 2, "alpha": 16.0},
         {"site": f"model.layers.{layers - 1}.mlp.down_proj", "type": "bitfit"},
         {"site": "model.layers.0.mlp.up_proj", "type": "lora", "rank": 4, "alpha": 8.0},
         {"site": "model.layers.0.input_layernorm", "type": "lnfit"},
         {"site": "model.norm", "type": "lnfit"}]
    return m


def load(model_dir, adapter=None, bare=False):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    if adapter and not bare:
        lora_first = json.load(open(os.path.join(adapter, "adapter_config.json")))["peft_type"] == "LORA"
        sub = os.path.join(adapter, "ln_tuning")
        if lora_first and os.path.isdir(sub):
            model = PeftModel.from_pretrained(model, sub).merge_and_unload()
        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def word_logits(model, tok, pairs, word_ids):
    out = []
    with torch.no_grad():
        for a, b in pairs:
            text = tok.apply_chat_template([{"role": "user", "content": body(a, b)}], add_generation_prompt=True,
                                           tokenize=False)
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            out.append(model(input_ids=ids).logits[0, -1, word_ids])
    return torch.stack(out)


def s3pet_logits(s3pet, run, inputs):
    lines = [json.loads(l) for l in sh([s3pet, "predict", "--run", run, "--input", inputs, "--device", "cpu"]).splitlines() if l]
    return torch.tensor([l["logits"] for l in lines])


def check_export(a, name, run, pairs, inputs, tok):
    out = os.path.join(a.work, f"peft_{name}")
    sh([a.s3pet, "export", "--run", run, "--format", "peft", "--out", out, "--overwrite"])
    words = json.load(open(os.path.join(out, "s3pet_export.json")))["prompt"]["word_ids"]
    got = word_logits(load(a.model, out), tok, pairs, words)
    want = s3pet_logits(a.s3pet, run, inputs)
    bare = word_logits(load(a.model), tok, pairs, words)
    mods = module_set(run)
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    extra = {"modules": len(mods), "types": sorted({m[1] for m in mods}), "task_type": cfg["task_type"]}
    return out, words, report(f"export_{name}", got, want, bare, a.tol, extra)


def python_adapters(a, layers):
    made = {}
    torch.manual_seed(1)
    cases = {
        "py_lora": LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                              rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 4}, lora_bias=True,
                              init_lora_weights=False),
        "py_ln": LNTuningConfig(task_type=TaskType.CAUSAL_LM, target_modules=["input_layernorm", "norm"]),
    }
    for name, cfg in cases.items():
        model = get_peft_model(load(a.model), cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad and ("lora_B" in n and n.endswith("bias") or "ln_tuning_layers" in n):
                    p.add_(torch.randn_like(p) * 0.2)
        out = os.path.join(a.work, name)
        model.save_pretrained(out)
        made[name] = out
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--s3pet", default=os.path.join(ROOT, "target/release/s3pet"))
    ap.add_argument("--model", default=os.path.join(ROOT, "tests/fixtures/tiny_llama"))
    ap.add_argument("--data-dir", default=os.environ.get("S3PET_DATA", os.path.join(ROOT, "../shared/data")))
    ap.add_argument("--work", default="/tmp/check_peft_lm")
    ap.add_argument("--inputs", type=int, default=16)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    layers = json.load(open(os.path.join(a.model, "config.json")))["num_hidden_layers"]
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(a.data_dir, "glue/RTE/dev.tsv"), encoding="utf-8")]
    pairs = [(r[1], r[2]) for r in rows[1:a.inputs + 1]]
    inputs = os.path.join(a.work, "pairs.tsv")
    with open(inputs, "w", encoding="utf-8") as fh:
        fh.writelines(f"{x}\t{y}\n" for x, y in pairs)
    tok = AutoTokenizer.from_pretrained(a.model)
    common = ["--model", a.model, "--data-dir", a.data_dir, "--overwrite", "-q", "--device", "cpu"]
    worst = 0.0
    mods = mix_structure(layers)
    run = os.path.join(a.work, "run_mix")
    st_full = os.path.join(a.work, "mix.json")
    total = structure_params(json.load(open(os.path.join(a.model, "config.json"))), mods)
    json.dump({"budget_params": total, "total_params": total, "modules": mods}, open(st_full, "w"))
    sh([a.s3pet, "train", "--task", "rte", "--structure", st_full, "--out", run, *common, *TRAIN])
    _, words, diff = check_export(a, "mix", run, pairs, inputs, tok)
    worst = max(worst, diff)
    searched = os.path.join(a.work, "run_searched")
    sh([a.s3pet, "run", "--task", "rte", "--out", searched, *common, *SEARCH])
    exported, _, diff = check_export(a, "searched", searched, pairs, inputs, tok)
    worst = max(worst, diff)
    back = os.path.join(a.work, "reimported")
    sh([a.s3pet, "import-peft", exported, "--model", a.model, "--out", back, "--overwrite", "-q", "--max-length", "1024"])
    same = module_set(back) == module_set(searched)
    got, want = s3pet_logits(a.s3pet, back, inputs), word_logits(load(a.model, exported), tok, pairs, words)
    bare = word_logits(load(a.model), tok, pairs, words)
    worst = max(worst, report("reimport_searched", got, want, bare, a.tol, {"same_modules": same}) if same else float("inf"))
    for name, adapter in python_adapters(a, layers).items():
        run = os.path.join(a.work, f"run_{name}")
        sh([a.s3pet, "import-peft", adapter, "--task", "rte", "--model", a.model, "--out", run, "--overwrite", "-q", "--max-length", "1024"])
        got = s3pet_logits(a.s3pet, run, inputs)
        want = word_logits(load(a.model, adapter), tok, pairs, words)
        mods = module_set(run)
        worst = max(worst, report(f"import_{name}", got, want, bare, a.tol,
                                  {"modules": len(mods), "types": sorted({m[1] for m in mods})}))
    print(json.dumps({"max_abs_diff": worst, "tol": a.tol, "ok": worst <= a.tol}))
    sys.exit(0 if worst <= a.tol else 1)


def structure_params(cfg, mods):
    """The modules' parameter count (S3PET.md section 1) on a Llama-family config."""
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
              "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}
    total = 0
    for m in mods:
        d_in, d_out = shapes.get(m["site"].rsplit(".", 1)[-1], (d, d))
        total += {"lora": m.get("rank", 8) * (d_in + d_out), "bitfit": d_out, "lnfit": d}[m["type"]]
    return total


if __name__ == "__main__":
    main()
