#!/usr/bin/env python3
"""Checks `s3pet export --format peft` and `s3pet import-peft` against real PEFT on the real MiniLM.

Export: short s3pet runs on RTE (plain LoRA; a structure mixing LoRA of several ranks and alphas, BitFit
on LoRA Linears and on Linears without LoRA, LNFit and BitFit on LayerNorms; LayerNorm deltas only; a
structure searched by `s3pet run --space mix-peft`) are exported, loaded by PEFT onto transformers'
BertForSequenceClassification (the LN_TUNING sub-adapter first, merged, then the LoRA adapter) and their
logits compared with `s3pet predict` on real RTE sentence pairs. The searched run's export is also
imported back with `s3pet import-peft` and must give the same structure and logits.
Import: adapters made by PEFT itself (LoRA with rank_pattern, alpha_pattern, rsLoRA and lora_bias;
LoRA with bias="lora_only"; LN_TUNING), with random non-zero weights, are imported with
`s3pet import-peft` and `s3pet predict` is compared with PEFT's logits.

    LD_LIBRARY_PATH=tools/.venv/cuda-stubs CUDA_VISIBLE_DEVICES="" \\
        tools/.venv/bin/python tools/check_peft.py [--work /tmp/check_peft] [--searched-run RUN]

Without --searched-run, the searched run is made here (`s3pet run --task rte --space mix-peft --budget
5e-4`, 256 training examples, one search and one retrain epoch: about 2 minutes on 2 cores).

`--causal` checks decoder LLMs instead (tools/check_peft_lm.py, task_type CAUSAL_LM).

Prints one JSON line per case and a summary; exits 1 when any max abs difference exceeds --tol (1e-4).
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from peft import LNTuningConfig, LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import BertForSequenceClassification, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_OPTS = ["--max-train-examples", "64", "--epochs", "1", "--batch-size", "16",
              "--max-eval-examples", "32", "--lr", "5e-3", "--threads", "2"]


SEARCH_OPTS = ["--space", "mix-peft", "--budget", "5e-4", "--max-train-examples", "256",
               "--max-eval-examples", "128", "--search-epochs", "1", "--retrain-epochs", "1",
               "--batch-size", "16", "--lr", "5e-3", "--threads", "2"]


def sh(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{r.stderr}")
    return r.stdout


def lora_count(d_in, d_out, r):
    return r * (d_in + d_out)


def mix_structure(n_layers, d, f):
    """LoRA of ranks 8 / 4 / 2 / 16 with different alphas, BitFit on LoRA Linears, LNFit and BitFit on norms."""
    mods = []
    for i in range(n_layers):
        p = f"encoder.layer.{i}"
        mods.append({"site": f"{p}.attention.self.query", "type": "lora", "rank": 8, "alpha": 16.0})
        if i % 2 == 0:
            mods.append({"site": f"{p}.attention.self.value", "type": "lora", "rank": 4, "alpha": 16.0})
        mods.append({"site": f"{p}.output.LayerNorm", "type": "lnfit"})
    mods += [
        {"site": "encoder.layer.0.attention.self.query", "type": "bitfit"},
        {"site": "encoder.layer.1.attention.self.query", "type": "bitfit"},
        {"site": f"encoder.layer.{n_layers - 1}.intermediate.dense", "type": "lora", "rank": 2, "alpha": 3.0},
        {"site": f"encoder.layer.{n_layers - 1}.intermediate.dense", "type": "bitfit"},
        {"site": "encoder.layer.3.attention.output.dense", "type": "lora", "rank": 16, "alpha": 8.0},
        {"site": "embeddings.LayerNorm", "type": "lnfit"},
        {"site": "embeddings.LayerNorm", "type": "bitfit"},
        {"site": "encoder.layer.2.attention.output.LayerNorm", "type": "bitfit"},
        # BitFit on Linears without LoRA: rank-1 LoRA with zero factors and the bias in lora_B.bias
        {"site": "encoder.layer.2.attention.self.key", "type": "bitfit"},
        {"site": "encoder.layer.1.intermediate.dense", "type": "bitfit"},
        {"site": "encoder.layer.4.output.dense", "type": "bitfit"},
    ]
    return mods


def norms_structure(n_layers):
    mods = [{"site": "embeddings.LayerNorm", "type": "lnfit"}]
    for i in range(n_layers):
        mods.append({"site": f"encoder.layer.{i}.attention.output.LayerNorm", "type": "lnfit"})
        mods.append({"site": f"encoder.layer.{i}.attention.output.LayerNorm", "type": "bitfit"})
    return mods


def count(m, d, f):
    site = m["site"]
    if m["type"] in ("lnfit", "bitfit"):
        return f if site.endswith("intermediate.dense") else d
    d_in = f if site.endswith(".output.dense") and ".attention." not in site else d
    d_out = f if site.endswith("intermediate.dense") else d
    return lora_count(d_in, d_out, m["rank"])


def write_structure(path, mods, d, f):
    total = sum(count(m, d, f) for m in mods)
    json.dump({"budget_params": total, "total_params": total, "source": "check_peft", "modules": mods},
              open(path, "w"), indent=1)


def peft_logits(model_dir, adapter_dir, num_labels, pairs, max_length):
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels, dtype=torch.float32)
    lora_first = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))["peft_type"] == "LORA"
    ln_sub = os.path.join(adapter_dir, "ln_tuning")
    if lora_first and os.path.isdir(ln_sub):
        # the second adapter (LN_TUNING): loaded by PEFT and merged, then the LoRA adapter on top
        model = PeftModel.from_pretrained(model, ln_sub).merge_and_unload()
    model = PeftModel.from_pretrained(model, adapter_dir).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    out = []
    with torch.no_grad():
        for a, b in pairs:
            enc = tok(a, b, truncation="longest_first", max_length=max_length, return_token_type_ids=True,
                      return_tensors="pt")
            out.append(model(**enc).logits[0])
    return torch.stack(out)


def classifier_only_logits(model_dir, adapter_dir, num_labels, pairs, max_length):
    """The backbone without any delta, with the adapter's classifier: how far the deltas move the logits."""
    from safetensors.torch import load_file
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels, dtype=torch.float32).eval()
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    for leaf in ("weight", "bias"):
        key = next(k for k in saved if k.endswith(f"classifier.{leaf}") or k.endswith(f"classifier.modules_to_save.{leaf}"))
        model.classifier.get_parameter(leaf).data.copy_(saved[key])
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    with torch.no_grad():
        return torch.stack([model(**tok(a, b, truncation="longest_first", max_length=max_length,
                                        return_token_type_ids=True, return_tensors="pt")).logits[0]
                            for a, b in pairs])


def s3pet_logits(s3pet, run, inputs):
    lines = [json.loads(l) for l in sh([s3pet, "predict", "--run", run, "--input", inputs]).splitlines() if l]
    return torch.tensor([l["logits"] for l in lines])


def report(case, got, want, bare, tol, extra):
    """Max abs diff of got vs want; a case whose deltas move the logits by less than 100 tol proves nothing
    and counts as a failure."""
    diff = (got - want).abs().max().item()
    moved = (bare - want).abs().max().item()
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    row = {"case": case, "inputs": len(got), "max_abs_diff": diff, "label_agreement": agree,
           "deltas_move_logits_by": moved, **extra}
    print(json.dumps(row), flush=True)
    return diff if moved > 100 * tol else float("inf")


def make_python_adapters(model_dir, work, num_labels):
    """Adapters saved by PEFT itself, with random non-zero weights everywhere (no-op initialisation off)."""
    made = {}
    torch.manual_seed(1)
    cases = {
        "py_lora": LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                              target_modules=["query", "value", "intermediate.dense"],
                              rank_pattern={"intermediate.dense": 4}, alpha_pattern={"value": 4},
                              use_rslora=True, lora_bias=True, init_lora_weights=False),
        "py_lora_bias": LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, bias="lora_only",
                                   target_modules=["key", "attention.output.dense"], init_lora_weights=False),
        "py_ln": LNTuningConfig(task_type=TaskType.SEQ_CLS, target_modules=["LayerNorm"]),
    }
    for name, cfg in cases.items():
        base = BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels, dtype=torch.float32)
        model = get_peft_model(base, cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad and ("lora_B" in n and n.endswith("bias") or ".bias" in n and "lora" not in n
                                        or "ln_tuning_layers" in n):
                    p.add_(torch.randn_like(p) * 0.05)
        out = os.path.join(work, name)
        model.save_pretrained(out)
        made[name] = out
    return made


def module_set(run):
    """A run's modules as comparable tuples (site, type, rank, alpha)."""
    mods = json.load(open(os.path.join(run, "structure.json")))["modules"]
    return sorted((m["site"], m["type"], m.get("rank"), m.get("alpha")) for m in mods)


def check_export(a, name, run, pairs, inputs):
    """Exports an s3pet run, loads it with PEFT and compares PEFT's logits with `s3pet predict`."""
    out = os.path.join(a.work, f"peft_{name}")
    sh([a.s3pet, "export", "--run", run, "--format", "peft", "--out", out, "--overwrite"])
    got = peft_logits(a.model, out, 2, pairs, 128)
    want = s3pet_logits(a.s3pet, run, inputs)
    mods = module_set(run)
    bare = classifier_only_logits(a.model, out, 2, pairs, 128)
    extra = {"modules": len(mods), "types": sorted({m[1] for m in mods}),
             "adapters": sorted(x for x in os.listdir(out) if not x.endswith(".json"))}
    return out, report(f"export_{name}", got, want, bare, a.tol, extra)


def searched_run(a, common):
    """A structure searched in the deployable space (or --searched-run), retrained: the run directory."""
    if a.searched_run:
        return a.searched_run
    run = os.path.join(a.work, "run_searched")
    sh([a.s3pet, "run", "--task", "rte", "--out", run, *SEARCH_OPTS, *common])
    return run


def check_reimport(a, run, exported, pairs, inputs, common):
    """The searched run's export imported back: the same modules, and the same logits as PEFT's."""
    back = os.path.join(a.work, "run_searched_reimported")
    sh([a.s3pet, "import-peft", exported, "--out", back, *common])
    if module_set(back) != module_set(run):
        sys.exit(f"re-imported structure differs:\n{module_set(back)}\nvs\n{module_set(run)}")
    got = s3pet_logits(a.s3pet, back, inputs)
    want = peft_logits(a.model, exported, 2, pairs, 128)
    bare = classifier_only_logits(a.model, exported, 2, pairs, 128)
    diff_orig = (got - s3pet_logits(a.s3pet, run, inputs)).abs().max().item()
    return report("reimport_searched", got, want, bare, a.tol,
                  {"modules": len(module_set(back)), "same_structure": True,
                   "max_abs_diff_to_original_run": diff_orig})


def main():
    if "--causal" in sys.argv:  # decoder LLMs (CAUSAL_LM): tools/check_peft_lm.py
        sys.argv.remove("--causal")
        import check_peft_lm
        return check_peft_lm.main()
    ap = argparse.ArgumentParser()
    ap.add_argument("--s3pet", default=os.path.join(ROOT, "target/release/s3pet"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models/all-MiniLM-L6-v2"))
    ap.add_argument("--data-dir", default=os.environ.get("S3PET_DATA", os.path.join(ROOT, "../shared/data")))
    ap.add_argument("--work", default="/tmp/check_peft")
    ap.add_argument("--searched-run", help="a finished `s3pet run --space mix-peft` run (else one is made)")
    ap.add_argument("--inputs", type=int, default=64, help="RTE dev pairs to compare on")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    d, f, n_layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(a.data_dir, "glue/RTE/dev.tsv"), encoding="utf-8")]
    pairs = [(r[1], r[2]) for r in rows[1:a.inputs + 1]]
    inputs = os.path.join(a.work, "pairs.tsv")
    with open(inputs, "w", encoding="utf-8") as fh:
        fh.writelines(f"{x}\t{y}\n" for x, y in pairs)
    common = ["--model", a.model, "--data-dir", a.data_dir, "--overwrite", "-q"]
    worst = 0.0

    # export: s3pet run -> PEFT
    write_structure(os.path.join(a.work, "mix.json"), mix_structure(n_layers, d, f), d, f)
    write_structure(os.path.join(a.work, "norms.json"), norms_structure(n_layers), d, f)
    runs = {"lora": ["--method", "lora"], "mix": ["--structure", os.path.join(a.work, "mix.json")],
            "norms": ["--structure", os.path.join(a.work, "norms.json")]}
    for name, how in runs.items():
        run = os.path.join(a.work, f"run_{name}")
        sh([a.s3pet, "train", "--task", "rte", "--out", run, *how, *common, *TRAIN_OPTS])
        worst = max(worst, check_export(a, name, run, pairs, inputs)[1])
    searched = searched_run(a, common)
    exported, diff = check_export(a, "searched", searched, pairs, inputs)
    worst = max(worst, diff, check_reimport(a, searched, exported, pairs, inputs, common))

    # import: PEFT adapter -> s3pet run
    for name, adapter in make_python_adapters(a.model, a.work, 2).items():
        run = os.path.join(a.work, f"run_{name}")
        sh([a.s3pet, "import-peft", adapter, "--task", "rte", "--out", run, *common])
        got = s3pet_logits(a.s3pet, run, inputs)
        want = peft_logits(a.model, adapter, 2, pairs, 128)
        mods = module_set(run)
        bare = classifier_only_logits(a.model, adapter, 2, pairs, 128)
        worst = max(worst, report(f"import_{name}", got, want, bare, a.tol,
                                  {"modules": len(mods), "types": sorted({m[1] for m in mods})}))
    print(json.dumps({"max_abs_diff": worst, "tol": a.tol, "ok": worst <= a.tol}))
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
