#!/usr/bin/env python3
"""Reference run of `s3pet train` with transformers + PEFT, on the examples `s3pet data export` wrote.

    target/release/s3pet data export --task rte --seed 42 --out /tmp/exp/rte
    python tools/parity.py --data /tmp/exp/rte --model models/all-MiniLM-L6-v2 --method lora \
        --seed 42 --out /tmp/parity/rte-lora-42.json

The recipe is s3pet's `train` with its defaults: AdamW (0.9, 0.999, eps 1e-8, weight decay 0), the
learning rate decaying linearly from --lr to 0 over all steps (no warm-up), the global gradient norm
of the trainable parameters clipped to 1.0, the config's dropout while training, the training set
reshuffled every epoch (numpy's generator: not s3pet's order), dev evaluated at each epoch's end, the
best dev weights kept (ties: the later epoch wins) and tested. Tokens: the model dir's tokenizer.json
through `tokenizers` (the library s3pet uses), pairs truncated longest-first, padded per batch.
Any encoder family s3pet supports (BERT, RoBERTa, XLM-RoBERTa, MPNet, DeBERTa-v2, DistilBERT: by
config.json's model_type, loaded with AutoModelForSequenceClassification, see tools/families.py); token
types are fed to BERT only, and inputs are cut to the position table as s3pet cuts them. The head is
always fresh: every Linear of the family's head (BERT's classifier; RoBERTa / MPNet classifier.dense and
classifier.out_proj; DeBERTa pooler.dense and classifier; DistilBERT pre_classifier and classifier) gets
N(0, initializer_range) weights and zero biases. Methods:
  full    every parameter trainable (pooler included);
  lora    PEFT LoRA r 8, alpha 16, no LoRA dropout, on the query and value projections (query / value,
          q / v, query_proj / value_proj, q_lin / v_lin); the head's modules in modules_to_save;
          everything else (pooler included) frozen;
  bitfit  PEFT has no BitFit tuner, so it is done by hand: only the biases of every encoder Linear
          (query, key, value, attention output, intermediate, output), every LayerNorm bias
          (embeddings and the encoder's) and the head train; the pooler stays frozen.
Losses: cross-entropy (classification), MSE on the single logit (regression), cross-entropy over
the choices' single logits (multiple choice). Metrics are x100, computed with numpy only.

Imports torch / transformers lazily so that tools/parity_table.py can reuse `compute_metrics`;
PEFT is imported only for --method lora.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import families  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Metrics (x100; degenerate cases give 0.0, never NaN), as src/metrics.rs defines them.


def _ratio(num, den):
    return num / den if den > 0 else 0.0


def _f1_of(p, g, c):
    tp = int(np.sum((p == c) & (g == c)))
    fp = int(np.sum((p == c) & (g != c)))
    fn = int(np.sum((p != c) & (g == c)))
    return _ratio(2.0 * tp, 2 * tp + fp + fn)


def _matthews(p, g):
    # multiclass form (Gorodkin's R_K); the usual MCC for two classes
    k = int(max(p.max(), g.max())) + 1
    pred_n = np.bincount(p, minlength=k).astype(np.float64)
    true_n = np.bincount(g, minlength=k).astype(np.float64)
    correct = float(np.sum(p == g))
    s = float(len(g))
    num = correct * s - float(pred_n @ true_n)
    den = np.sqrt((s * s - float(pred_n @ pred_n)) * (s * s - float(true_n @ true_n)))
    return _ratio(num, den)


def _pearson(x, y):
    dx, dy = x - x.mean(), y - y.mean()
    return _ratio(float(dx @ dy), float(np.sqrt((dx @ dx) * (dy @ dy))))


def _ranks(x):
    """1-based ranks; ties get the average of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    r = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return r


def _exact_match(p, g, groups):
    if groups is None or any(x is None for x in groups):
        raise ValueError("multirc_em needs a group for every example")
    right = {}
    for a, b, grp in zip(p, g, groups):
        right[grp] = right.get(grp, True) and a == b
    return _ratio(sum(right.values()), len(right))


def compute_metrics(names, preds, golds, groups=None):
    """`names` over predictions and golds (class indices, or scores for pearson / spearman)."""
    if len(preds) != len(golds) or len(golds) == 0:
        raise ValueError(f"metrics: {len(preds)} predictions for {len(golds)} golds")
    out = {}
    for name in names:
        if name in ("pearson", "spearman"):
            p, g = np.asarray(preds, np.float64), np.asarray(golds, np.float64)
            v = _pearson(p, g) if name == "pearson" else _pearson(_ranks(p), _ranks(g))
        else:
            p, g = np.asarray(preds, np.int64), np.asarray(golds, np.int64)
            if name == "accuracy":
                v = _ratio(float(np.sum(p == g)), len(g))
            elif name in ("f1", "multirc_f1a"):
                v = _f1_of(p, g, 1)
            elif name == "matthews":
                v = _matthews(p, g)
            elif name == "macro_f1":
                present = np.unique(np.concatenate([p, g]))
                v = _ratio(sum(_f1_of(p, g, c) for c in present), len(present))
            elif name == "multirc_em":
                v = _exact_match(p.tolist(), g.tolist(), groups)
            else:
                raise ValueError(f"unknown metric {name!r}")
        out[name] = float(100.0 * v) if np.isfinite(v) else 0.0
    return out


# ------------------------------------------------------------------------------------------------
# Data


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_export(data_dir):
    """spec.json and the three splits written by `s3pet data export`."""
    with open(os.path.join(data_dir, "spec.json")) as f:
        spec = json.load(f)
    splits = {s: read_jsonl(os.path.join(data_dir, f"{s}.jsonl")) for s in ("train", "dev", "test")}
    return spec, splits


def target_of(ex):
    return ex["score"] if "score" in ex else ex["label"]


# ------------------------------------------------------------------------------------------------
# Training


def installed_version(dist):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def default_lr(method):
    # s3pet train's defaults
    return 2e-5 if method == "full" else 5e-4


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a directory written by `s3pet data export`")
    ap.add_argument("--model", required=True,
                    help="an encoder's HF dir (BERT, RoBERTa, MPNet, DeBERTa-v2, DistilBERT): config.json, "
                         "model.safetensors, tokenizer.json")
    ap.add_argument("--method", required=True, choices=["full", "lora", "bitfit"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="default: 2e-5 for full, 5e-4 otherwise (as s3pet train)")
    ap.add_argument("--clip-norm", type=float, default=1.0)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--warmup-ratio", type=float, default=0.0, help="as s3pet: round(ratio * steps) warm-up steps")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", default=None, help="write the result JSON here (it is printed as well)")
    a = ap.parse_args(argv)
    lr = a.lr if a.lr is not None else default_lr(a.method)

    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    spec, splits = load_export(a.data)
    kind = spec["kind"]
    metric_names = spec["metrics"]
    mt = families.model_type(a.model)
    max_length = families.max_tokens(a.model, a.max_length)

    # The fast tokenizer of the model dir (tokenizer.json, as s3pet reads it): no padding,
    # pairs truncated longest-first to --max-length.
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length, strategy="longest_first")

    def encode(examples):
        out = []
        for ex in examples:
            rows = []
            for text_a, text_b in ex["texts"]:
                e = tok.encode(text_a, text_b) if text_b is not None else tok.encode(text_a)
                rows.append((e.ids, e.type_ids))
            out.append({"rows": rows, "target": target_of(ex), "group": ex.get("group")})
        return out

    data = {s: encode(v) for s, v in splits.items()}
    if not data["train"] or not data["dev"] or not data["test"]:
        sys.exit("parity.py: an empty split")

    def make_batch(items):
        """Dynamic padding: every row of the batch padded (id 0, type 0, mask 0) to the longest."""
        rows = [r for it in items for r in it["rows"]]
        t = max(len(ids) for ids, _ in rows)
        ids = torch.zeros((len(rows), t), dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for i, (r_ids, r_types) in enumerate(rows):
            ids[i, : len(r_ids)] = torch.tensor(r_ids)
            types[i, : len(r_types)] = torch.tensor(r_types)
            mask[i, : len(r_ids)] = 1
        if kind == "regression":
            labels = torch.tensor([float(it["target"]) for it in items], dtype=torch.float32)
        else:
            labels = torch.tensor([int(it["target"]) for it in items], dtype=torch.long)
        return ids.to(device), mask.to(device), types.to(device), labels.to(device), len(items[0]["rows"])

    # Model: the checkpoint's embeddings, encoder and pooler, a fresh head (N(0, initializer_range),
    # bias 0).
    # The seed covers the head's and LoRA's initialisation and dropout.
    torch.manual_seed(a.seed)
    num_labels = spec["num_labels"] if kind == "classification" else 1
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=num_labels, dtype=torch.float32,
                                                               ignore_mismatched_sizes=True)
    head = families.heads(mt)
    with torch.no_grad():  # s3pet always starts from a fresh head, even where the checkpoint has one
        for name, m in model.named_modules():
            if name.split(".")[0] in head and isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, model.config.initializer_range)
                m.bias.zero_()
    if a.method == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=families.query_value(mt),
                         modules_to_save=head)
        model = get_peft_model(model, cfg)
    elif a.method == "bitfit":
        # No PEFT tuner implements BitFit: freeze everything but the biases of the encoder's Linears
        # and of every LayerNorm (all under <prefix>embeddings.LayerNorm / <prefix>encoder or
        # transformer; the pooler stays frozen) and the head. Training a bias directly equals training
        # s3pet's zero-initialised bias delta on top of the frozen one (AdamW without weight decay sees
        # the same gradients).
        pre = families.PREFIX[mt]
        for name, p in model.named_parameters():
            p.requires_grad = name.split(".")[0] in head or (name.endswith(".bias") and name.startswith(
                (f"{pre}embeddings.LayerNorm.", f"{pre}encoder.", f"{pre}transformer.")))
    else:
        for p in model.parameters():
            p.requires_grad = True
    model.to(device)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in trainable]
    n_trainable = sum(p.numel() for p in params)
    print(f"[parity] {spec['task']} {a.method}: {n_trainable} trainable parameters in {len(params)} tensors, "
          f"train {len(data['train'])} dev {len(data['dev'])} test {len(data['test'])}", file=sys.stderr)

    def logits_of(batch):
        ids, mask, types, _, choices = batch
        extra = {"token_type_ids": types} if families.uses_token_types(mt) else {}
        logits = model(input_ids=ids, attention_mask=mask, **extra).logits
        if kind == "multiple_choice":
            return logits.view(-1, choices)  # (examples, choices)
        return logits

    def loss_of(batch):
        logits = logits_of(batch)
        labels = batch[3]
        if kind == "regression":
            return torch.nn.functional.mse_loss(logits.squeeze(-1), labels)
        return torch.nn.functional.cross_entropy(logits, labels)

    def evaluate(examples):
        model.eval()
        preds = []
        with torch.no_grad():
            for i in range(0, len(examples), a.eval_batch_size):
                logits = logits_of(make_batch(examples[i: i + a.eval_batch_size])).float().cpu()
                if kind == "regression":
                    preds.extend(logits.squeeze(-1).tolist())
                else:
                    preds.extend(logits.argmax(-1).tolist())
        model.train()
        golds = [ex["target"] for ex in examples]
        return compute_metrics(metric_names, preds, golds, [ex["group"] for ex in examples])

    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=a.weight_decay)
    n = len(data["train"])
    per_epoch = -(-n // a.batch_size)
    total = per_epoch * a.epochs
    warmup = int(a.warmup_ratio * total + 0.5)  # Rust rounds halves up, Python to even

    def lr_at(t):  # s3pet's linear_lr: linear warm-up over `warmup` steps, then linear decay to 0 at `total`
        if warmup > 0 and t < warmup:
            return lr * t / warmup
        return lr * max(total - t, 0) / max(total - warmup, 1)

    step, best, best_epoch, best_step, best_dev, best_state = 0, -float("inf"), 0, 0, {}, None
    history = []
    model.train()
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        order = np.random.default_rng([a.seed, epoch]).permutation(n)
        loss_sum = 0.0
        for i in range(0, n, a.batch_size):
            batch = make_batch([data["train"][j] for j in order[i: i + a.batch_size]])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss = loss_of(batch)
            if not torch.isfinite(loss):
                sys.exit(f"parity.py: non-finite loss at step {step}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, a.clip_norm)
            opt.step()
            step += 1
            loss_sum += loss.item()
        dev = evaluate(data["dev"])
        score = dev[metric_names[0]]
        history.append({"epoch": epoch + 1, "step": step, "train_loss": loss_sum / per_epoch, "dev": dev})
        print(f"[parity] epoch {epoch + 1}: loss {loss_sum / per_epoch:.4f} dev {dev}", file=sys.stderr)
        if score >= best:
            best, best_epoch, best_step, best_dev = score, epoch + 1, step, dev
            best_state = {n_: p.detach().clone() for n_, p in trainable}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - t0
    with torch.no_grad():
        for n_, p in trainable:
            p.copy_(best_state[n_])
    test = evaluate(data["test"])

    result = {
        "task": spec["task"],
        "method": a.method,
        "model_type": mt,
        "seed": a.seed,
        "epochs": a.epochs,
        "lr": lr,
        "batch_size": a.batch_size,
        "eval_batch_size": a.eval_batch_size,
        "max_length": max_length,
        "clip_norm": a.clip_norm,
        "weight_decay": a.weight_decay,
        "warmup_ratio": a.warmup_ratio,
        "metric": metric_names[0],
        "trainable_params": n_trainable,
        "train_examples": n,
        "steps": step,
        "best_epoch": best_epoch,
        "best_step": best_step,
        "dev": best_dev,
        "test": test,
        "history": history,
        "train_seconds": train_seconds,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": installed_version("peft"),
        "data": os.path.abspath(a.data),
        "model": os.path.abspath(a.model),
    }
    text = json.dumps(result)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
