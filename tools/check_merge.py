#!/usr/bin/env python3
"""Checks `s3pet merge` with real transformers: loads the merged directory as
BertForSequenceClassification and compares its logits with `s3pet predict` on the same inputs.

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
from transformers import BertForSequenceClassification, PreTrainedTokenizerFast


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merged", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    model = BertForSequenceClassification.from_pretrained(a.merged, dtype=torch.float32).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{a.merged}/tokenizer.json")
    rows = [l.rstrip("\n").split("\t") for l in open(a.input, encoding="utf-8") if l.strip()]
    preds = [json.loads(l) for l in open(a.predictions, encoding="utf-8") if l.strip()]
    assert len(rows) == len(preds), "one prediction per input line"
    worst = 0.0
    for cols, p in zip(rows, preds):
        enc = tok(cols[0], cols[1] if len(cols) > 1 else None, truncation="longest_first",
                  max_length=a.max_length, return_token_type_ids=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0]
        want = torch.tensor(p["logits"] if "logits" in p else [p["score"]])
        worst = max(worst, (logits - want).abs().max().item())
    print(json.dumps({"inputs": len(rows), "max_abs_diff": worst, "labels": model.config.id2label}))
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
