#!/usr/bin/env python3
"""Writes a BERT with random weights (seed 0) and MiniLM's shape into DIR, from gpu/model-cfg (config.json
and tokenizer.json of tools/gpu/prep13.sh): timing rows do not depend on the weights' values.

    python3 tools/gpu/random_minilm.py DIR [--no-dropout]
"""
import argparse
import os
import shutil

import torch
from transformers import BertConfig, BertModel

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--no-dropout", action="store_true", help="every dropout 0 (runs that must match value by value)")
a = ap.parse_args()
os.makedirs(a.dir, exist_ok=True)
for f in ("config.json", "tokenizer.json"):
    shutil.copy(os.path.join("gpu/model-cfg", f), os.path.join(a.dir, f))
torch.manual_seed(0)
cfg = BertConfig.from_json_file(os.path.join(a.dir, "config.json"))
if a.no_dropout:
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
BertModel(cfg).save_pretrained(a.dir)
print(f"random-weight MiniLM written to {a.dir}" + (" (dropout off)" if a.no_dropout else ""))
