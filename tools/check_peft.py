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

`--families` runs the same checks on every encoder family instead (the tiny fixtures of MPNet, RoBERTa,
XLM-RoBERTa, DeBERTa-v2 and DistilBERT, and the real all-mpnet-base-v2 when models/ has it; `--family-dirs`
overrides the list), loaded by AutoModelForSequenceClassification with each family's PEFT key prefix
(`base_model.model.mpnet.`, `roberta.`, `deberta.`, `distilbert.`) and head modules: export of plain LoRA
(r8 on the query and value projections), of a mixed structure (LoRA of four ranks and alphas, BitFit on LoRA
Linears and on Linears without LoRA, LNFit and BitFit on norms) and of norm deltas only; `s3pet merge` of the
mixed run loaded as the family's XForSequenceClassification; import of PEFT-made LoRA (rank / alpha
patterns, rsLoRA, lora_bias), LoRA with bias="lora_only", and LN_TUNING adapters. About 30 minutes on 2
shared cores, most of it the real MPNet.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from peft import LNTuningConfig, LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import families  # noqa: E402

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
    return family_logits(model, model_dir, pairs, max_length)


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
    return save_random_adapters(
        cases, lambda: BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels,
                                                                     dtype=torch.float32), work)


def save_random_adapters(cases, base, work):
    """Each PEFT config on a fresh `base()`, its biases and LN copies moved off their no-op init, saved
    under work/<name>; {name: directory}."""
    made = {}
    for name, cfg in cases.items():
        model = get_peft_model(base(), cfg)
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


# ------------------------------------------------------------------------------------------------
# --families: every encoder family, on its tiny fixture (and the real all-mpnet-base-v2)

FAMILY_DIRS = ["tests/fixtures/tiny_mpnet", "tests/fixtures/tiny_roberta", "tests/fixtures/tiny_xlm_roberta",
               "tests/fixtures/tiny_deberta_v2", "tests/fixtures/tiny_distilbert", "models/all-mpnet-base-v2"]
FAMILY_TRAIN = ["--max-train-examples", "64", "--epochs", "2", "--batch-size", "16", "--max-eval-examples", "32",
                "--lr", "1e-2", "--threads", "2"]

def auto_model(model_dir, num_labels):
    return AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=num_labels, dtype=torch.float32, ignore_mismatched_sizes=True)


def family_logits(model, model_dir, pairs, requested=128):
    """Logits on the pairs, token types only for BERT (the other families do not use them)."""
    max_length = families.max_tokens(model_dir, requested)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    types = families.uses_token_types(families.model_type(model_dir))
    out = []
    with torch.no_grad():
        for a, b in pairs:
            enc = tok(a, b, truncation="longest_first", max_length=max_length, return_token_type_ids=types,
                      return_tensors="pt")
            out.append(model(**enc).logits[0])
    return torch.stack(out)


def family_peft_logits(model_dir, adapter_dir, num_labels, pairs):
    torch.manual_seed(0)
    model = auto_model(model_dir, num_labels)
    lora_first = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))["peft_type"] == "LORA"
    ln_sub = os.path.join(adapter_dir, "ln_tuning")
    if lora_first and os.path.isdir(ln_sub):
        model = PeftModel.from_pretrained(model, ln_sub).merge_and_unload()
    return family_logits(PeftModel.from_pretrained(model, adapter_dir).eval(), model_dir, pairs)


def family_head_only_logits(model_dir, adapter_dir, num_labels, pairs):
    """The bare backbone with the adapter's head (every modules_to_save tensor): what the deltas add."""
    from safetensors.torch import load_file
    model = auto_model(model_dir, num_labels).eval()
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    heads = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))["modules_to_save"]
    params = dict(model.named_parameters())
    for k, v in saved.items():
        name = k.removeprefix("base_model.model.").replace("modules_to_save.", "")
        if name.split(".")[0] in heads:
            params[name].data.copy_(v)
    return family_logits(model, model_dir, pairs)


def inspect_modules(a, model_dir, *args):
    out = sh([a.s3pet, "inspect", "--model", model_dir, "--json", *args]).splitlines()[-1]
    d = json.loads(out)
    return d["modules"] if "modules" in d and isinstance(d["modules"], list) else d["structure"]["modules"]


def family_structures(a, model_dir, work):
    """The mixed and the norms-only structure of a family, from its own sites (`s3pet inspect`)."""
    lin = {m["site"]: m["params"] for m in inspect_modules(a, model_dir, "--space", "lora")}  # d_in + d_out
    sites = list(lin)
    norms = [m["site"] for m in inspect_modules(a, model_dir, "--method", "lnfit")]
    d_out = {m["site"]: m["params"] for m in inspect_modules(a, model_dir, "--method", "bitfit")}

    def lora(i, r, alpha):
        return {"site": sites[i], "type": "lora", "rank": r, "alpha": alpha, "params": r * lin[sites[i]]}

    def one(site, kind):
        return {"site": site, "type": kind, "params": d_out[site]}

    mix = [lora(0, 8, 16.0), one(sites[0], "bitfit"), lora(2, 4, 16.0), lora(3, 16, 8.0), lora(-2, 2, 3.0),
           one(sites[-2], "bitfit"), one(sites[1], "bitfit"), one(sites[-1], "bitfit"), one(norms[0], "lnfit"),
           one(norms[0], "bitfit"), one(norms[1], "bitfit"), one(norms[-1], "lnfit")]
    only_norms = [one(norms[0], "lnfit")] + [one(n, k) for n in norms[1::2] for k in ("lnfit", "bitfit")]
    paths = {}
    for name, mods in [("mix", mix), ("norms", only_norms)]:
        total = sum(m["params"] for m in mods)
        paths[name] = os.path.join(work, f"{name}.json")
        json.dump({"budget_params": total, "total_params": total, "source": "check_peft", "modules": mods},
                  open(paths[name], "w"), indent=1)
    return paths


def family_python_adapters(model_dir, work):
    """PEFT-made adapters on the family's own module names, random non-zero weights everywhere."""
    mt = families.model_type(model_dir)
    q, k, v, o, ffn = families.NAMES[mt]
    heads = families.heads(mt)
    cases = {
        "py_lora": LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                              target_modules=[q, v, ffn], rank_pattern={ffn: 4}, alpha_pattern={v: 4},
                              use_rslora=True, lora_bias=True, init_lora_weights=False, modules_to_save=heads),
        "py_lora_bias": LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, bias="lora_only",
                                   target_modules=[k, o], init_lora_weights=False, modules_to_save=heads),
        "py_ln": LNTuningConfig(task_type=TaskType.SEQ_CLS, target_modules=families.norms(mt),
                                modules_to_save=heads),
    }
    torch.manual_seed(1)
    return save_random_adapters(cases, lambda: auto_model(model_dir, 2), work)


def check_family(a, model_dir, pairs, inputs):
    """Every export, merge and import case on one family; the worst max abs diff."""
    name = os.path.basename(model_dir.rstrip("/"))
    work = os.path.join(a.work, name)
    os.makedirs(work, exist_ok=True)
    common = ["--model", model_dir, "--data-dir", a.data_dir, "--overwrite", "-q"]
    structures = family_structures(a, model_dir, work)
    worst = 0.0
    runs = {"lora": ["--method", "lora"], "mix": ["--structure", structures["mix"]],
            "norms": ["--structure", structures["norms"]]}
    for case, how in runs.items():
        run = os.path.join(work, f"run_{case}")
        sh([a.s3pet, "train", "--task", "rte", "--out", run, *how, *common, *FAMILY_TRAIN])
        out = os.path.join(work, f"peft_{case}")
        sh([a.s3pet, "export", "--run", run, "--format", "peft", "--out", out, "--overwrite"])
        want = s3pet_logits(a.s3pet, run, inputs)
        got = family_peft_logits(model_dir, out, 2, pairs)
        bare = family_head_only_logits(model_dir, out, 2, pairs)
        worst = max(worst, report(f"{name}/export_{case}", got, want, bare, a.tol, {"modules": len(module_set(run))}))
        if case == "mix":
            merged = os.path.join(work, "merged_mix")
            sh([a.s3pet, "merge", "--run", run, "--out", merged, "--overwrite"])
            got = family_logits(AutoModelForSequenceClassification.from_pretrained(
                merged, dtype=torch.float32).eval(), merged, pairs)
            cls = json.load(open(os.path.join(merged, "config.json")))["architectures"][0]
            worst = max(worst, report(f"{name}/merge_mix", got, want, bare, a.tol, {"class": cls}))
    for case, adapter in family_python_adapters(model_dir, work).items():
        run = os.path.join(work, f"run_{case}")
        sh([a.s3pet, "import-peft", adapter, "--task", "rte", "--out", run, *common])
        got = s3pet_logits(a.s3pet, run, inputs)
        want = family_peft_logits(model_dir, adapter, 2, pairs)
        bare = family_head_only_logits(model_dir, adapter, 2, pairs)
        worst = max(worst, report(f"{name}/import_{case}", got, want, bare, a.tol,
                                  {"modules": len(module_set(run))}))
    return worst


def families_main(a, pairs, inputs):
    dirs = a.family_dirs or [os.path.join(ROOT, d) for d in FAMILY_DIRS]
    worst = {}
    for d in dirs:
        if not os.path.isfile(os.path.join(d, "model.safetensors")):
            print(json.dumps({"family_dir": d, "skipped": "no model.safetensors"}), flush=True)
            continue
        worst[os.path.basename(d.rstrip("/"))] = check_family(a, d, pairs, inputs)
    overall = max(worst.values(), default=float("inf"))
    print(json.dumps({"max_abs_diff_per_family": worst, "tol": a.tol, "ok": overall <= a.tol}))
    sys.exit(0 if overall <= a.tol else 1)


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
    ap.add_argument("--families", action="store_true", help="check every encoder family instead of MiniLM")
    ap.add_argument("--family-dirs", nargs="*", help="with --families: these model directories")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(a.data_dir, "glue/RTE/dev.tsv"), encoding="utf-8")]
    pairs = [(r[1], r[2]) for r in rows[1:a.inputs + 1]]
    inputs = os.path.join(a.work, "pairs.tsv")
    with open(inputs, "w", encoding="utf-8") as fh:
        fh.writelines(f"{x}\t{y}\n" for x, y in pairs)
    if a.families:
        families_main(a, pairs, inputs)
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    d, f, n_layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
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
