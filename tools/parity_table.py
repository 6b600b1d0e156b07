#!/usr/bin/env python3
"""Markdown table task x method of s3pet's test metric against tools/parity.py's.

    python tools/parity_table.py --s3pet runs/parity/*/report.json --peer /tmp/parity/*.json \
        --data-root /tmp/exp

--s3pet takes `s3pet train` report.json files, --peer takes parity.py output files; a directory stands
for every report.json (--s3pet) or *.json (--peer) below it. Runs are matched by (task, method); several
seeds are averaged (the seeds column says how many each side has). The metric is the task's first one,
read from <data-root>/<task>/spec.json (else the one parity.py recorded). The majority column is the
best constant answer on the exported test split: its most frequent label, scored with the same metric
(for regression a constant has no correlation: 0). Needs numpy only.
"""
import argparse
import glob
import json
import os
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity import compute_metrics, load_export, target_of  # noqa: E402


def expand(paths, pattern):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(glob.glob(os.path.join(p, "**", pattern), recursive=True))
        else:
            out.append(p)
    return out


def load(paths):
    runs = defaultdict(list)
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        if not isinstance(r, dict) or "task" not in r or "test" not in r:
            print(f"skipped {p}: not a run report", file=sys.stderr)
            continue
        runs[(r["task"], r["method"])].append(r)
    return runs


def majority(root, task):
    """(metric name, value) of the most frequent test label predicted for every test example."""
    if not root or not os.path.exists(os.path.join(root, task, "spec.json")):
        return None, None
    d = os.path.join(root, task)
    spec, splits = load_export(d)
    test = splits["test"]
    metric = spec["metrics"][0]
    if spec["kind"] == "regression":
        return metric, 0.0
    golds = [target_of(ex) for ex in test]
    label = Counter(golds).most_common(1)[0][0]
    m = compute_metrics([metric], [label] * len(golds), golds, [ex.get("group") for ex in test])
    return metric, m[metric]


def mean(xs):
    return sum(xs) / len(xs) if xs else None


def fmt(x):
    return "—" if x is None else f"{x:.2f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--s3pet", nargs="+", default=[], help="s3pet report.json files or directories")
    ap.add_argument("--peer", nargs="+", default=[], help="parity.py JSON files or directories")
    ap.add_argument("--data-root", default=None, help="where the exports live, as <root>/<task>/")
    a = ap.parse_args(argv)
    ours = load(expand(a.s3pet, "report.json"))
    peers = load(expand(a.peer, "*.json"))

    print("| task | method | metric | seeds (s3pet/peer) | s3pet | peer | s3pet − peer | majority |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for task, method in sorted(set(ours) | set(peers)):
        o, p = ours.get((task, method), []), peers.get((task, method), [])
        metric, base = majority(a.data_root, task)
        if metric is None:
            metric = next((r["metric"] for r in p if "metric" in r), None)
        if metric is None:
            keys = {k for r in o + p for k in r["test"]}
            metric = sorted(keys)[0] if len(keys) == 1 else None
        so = mean([r["test"][metric] for r in o if metric in r["test"]])
        sp = mean([r["test"][metric] for r in p if metric in r["test"]])
        diff = so - sp if so is not None and sp is not None else None
        print(f"| {task} | {method} | {metric or '?'} | {len(o)}/{len(p)} | {fmt(so)} | {fmt(sp)} | "
              f"{'—' if diff is None else f'{diff:+.2f}'} | {fmt(base)} |")


if __name__ == "__main__":
    main()
