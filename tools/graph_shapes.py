#!/usr/bin/env python3
"""How many search steps can replay as CUDA graphs, by padding multiple: a simulation of the batch shapes.

A search step is captured per pair of shapes (its D_w batch, its D_alpha batch) after WARMUP eager steps of
that pair, for at most GRAPHS pairs (src/search/graphs.rs); the other steps run eagerly. This tool tokenizes
a task's training file with the model's tokenizer (pairs as the model reads them, at most --max-length
tokens), splits the examples into two random halves, shuffles each half every epoch, cuts batches of the
task's batch size for the task's search epochs, pads each batch to its longest example rounded up to the
multiple, and counts the shape pairs and the share of steps a graph would replay. It approximates s3pet's
loader (its own seeded split and orders), so the counts are a model of the shapes, not a trace of a run.

  tools/.venv/bin/python tools/graph_shapes.py --tokenizer models/all-mpnet-base-v2/tokenizer.json
"""
import argparse
import collections
import csv
import random
from pathlib import Path

from tokenizers import Tokenizer

# task: (file under the GLUE root, text_a column, text_b column or None, header rows, batch, search epochs)
# (batch size and search epochs: src/data/tasks/*.toml)
TASKS = {
    "mrpc": ("MRPC/train.tsv", 3, 4, 1, 32, 20),
    "rte": ("RTE/train.tsv", 1, 2, 1, 16, 20),
    "stsb": ("STS-B/train.tsv", 7, 8, 1, 32, 15),
    "cola": ("CoLA/train.tsv", 3, None, 0, 32, 15),
}


def lengths(tok, path, a, b, header, max_length):
    rows = list(csv.reader(open(path, encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))[header:]
    out = []
    for r in rows:
        if len(r) <= max(a, b or 0):
            continue
        enc = tok.encode(r[a], r[b]) if b is not None else tok.encode(r[a])
        out.append(min(len(enc.ids), max_length))
    return out


def simulate(lens, bs, epochs, multiple, max_length, graphs, warmup, seed):
    rng = random.Random(seed)
    idx = list(range(len(lens)))
    rng.shuffle(idx)
    d_w, d_a = idx[: len(idx) // 2], idx[len(idx) // 2:]
    pad = lambda t: min(-(-t // multiple) * multiple, max(max_length, t))
    seen, captured = collections.Counter(), set()
    steps = replayed = padded = real = 0
    for _ in range(epochs):
        rng.shuffle(d_w)
        rng.shuffle(d_a)
        for i in range(0, min(len(d_w), len(d_a)), bs):
            bw, ba = d_w[i:i + bs], d_a[i:i + bs]
            key = (pad(max(lens[j] for j in bw)), pad(max(lens[j] for j in ba)))
            seen[key] += 1
            steps += 1
            padded += key[0] * len(bw) + key[1] * len(ba)
            real += sum(lens[j] for j in bw + ba)
            if key in captured:
                replayed += 1
            elif seen[key] > warmup and len(captured) < graphs:
                captured.add(key)
                replayed += 1
    return len(seen), replayed / steps, steps, padded / real


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--glue", default="../shared/data/glue")
    p.add_argument("--tasks", default="mrpc,rte,stsb,cola")
    p.add_argument("--multiples", default="1,8,16")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--graphs", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    tok = Tokenizer.from_file(a.tokenizer)
    tok.no_padding()
    tok.no_truncation()
    print(f"| task | multiple | (D_w, D_alpha) shape pairs | steps replayed ({a.graphs} graphs) | steps | padded / real tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in a.tasks.split(","):
        f, ca, cb, header, bs, epochs = TASKS[name]
        lens = lengths(tok, Path(a.glue) / f, ca, cb, header, a.max_length)
        for m in map(int, a.multiples.split(",")):
            pairs, share, steps, pad = simulate(lens, bs, epochs, m, a.max_length, a.graphs, a.warmup, a.seed)
            print(f"| {name} | {m} | {pairs} | {share:.0%} | {steps} | {pad:.2f} |")


if __name__ == "__main__":
    main()
