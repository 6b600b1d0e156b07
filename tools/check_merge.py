#!/usr/bin/env python3
"""Checks `s3pet merge` with real transformers: loads the merged directory with
AutoModelForSequenceClassification (the family's class: BertForSequenceClassification,
RobertaForSequenceClassification, MPNetFor..., DebertaV2For..., DistilBertFor...) and compares its logits
with `s3pet predict` on the same inputs.

    s3pet merge --run RUN --out MERGED
    s3pet predict --run RUN --input INPUT.tsv > PRED.jsonl
    python tools/check_merge.py --merged MERGED --input INPUT.tsv --predictions PRED.jsonl

INPUT.tsv: one or two tab-separated text columns a line, no header (as `s3pet predict` reads it).
Prints the max abs difference; exits 1 above --tol (default 1e-4).
"""
import argparse
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast


def merged_logits(merged, pairs, max_length):
    """The merged model's logits on (text_a, text_b or None) pairs; token types only for BERT."""
    model = AutoModelForSequenceClassification.from_pretrained(merged, dtype=torch.float32).eval()
    types = model.config.model_type == "bert"
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{merged}/tokenizer.json")
    out = []
    for a, b in pairs:
        enc = tok(a, b, truncation="longest_first", max_length=max_length, return_token_type_ids=types,
                  return_tensors="pt")
        with torch.no_grad():
            out.append(model(**enc).logits[0])
    return torch.stack(out), model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merged", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    rows = [l.rstrip("\n").split("\t") for l in open(a.input, encoding="utf-8") if l.strip()]
    preds = [json.loads(l) for l in open(a.predictions, encoding="utf-8") if l.strip()]
    assert len(rows) == len(preds), "one prediction per input line"
    got, model = merged_logits(a.merged, [(c[0], c[1] if len(c) > 1 else None) for c in rows], a.max_length)
    want = torch.tensor([p["logits"] if "logits" in p else [p["score"]] for p in preds])
    worst = (got - want).abs().max().item()
    print(json.dumps({"inputs": len(rows), "class": type(model).__name__, "max_abs_diff": worst,
                      "labels": model.config.id2label}))
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
