#!/usr/bin/env python3
"""`s3pet merge` of a decoder run against transformers: the merged LlamaForCausalLM directory, loaded by
transformers, gives the answer-word logits that `s3pet predict` gives for the run (RTE prompts as
crate::prompt writes them; see tools/check_peft_lm.py).

    tools/.venv/bin/python tools/check_merge_lm.py --run RUN --merged MERGED [--inputs 16]
"""
import argparse
import json
import os
import sys

import torch
from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_peft_lm import load, s3pet_logits, word_logits  # noqa: E402
from check_peft import ROOT  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--merged", required=True)
    ap.add_argument("--s3pet", default=os.path.join(ROOT, "target/release/s3pet"))
    ap.add_argument("--data-dir", default=os.environ.get("S3PET_DATA", os.path.join(ROOT, "../shared/data")))
    ap.add_argument("--inputs", type=int, default=16)
    ap.add_argument("--words", default="yes,no")
    a = ap.parse_args()
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(a.data_dir, "glue/RTE/dev.tsv"), encoding="utf-8")]
    pairs = [(r[1], r[2]) for r in rows[1:a.inputs + 1]]
    inputs = "/tmp/check_merge_lm_pairs.tsv"
    with open(inputs, "w", encoding="utf-8") as fh:
        fh.writelines(f"{x}\t{y}\n" for x, y in pairs)
    tok = AutoTokenizer.from_pretrained(a.merged)
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in a.words.split(",")]
    got = word_logits(load(a.merged), tok, pairs, ids)
    want = s3pet_logits(a.s3pet, a.run, inputs)
    diff = (got - want).abs().max().item()
    print(json.dumps({"case": "merge_causal", "inputs": len(pairs), "max_abs_diff": diff}))
    sys.exit(0 if diff <= 1e-4 else 1)


if __name__ == "__main__":
    main()
