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

    python tools/parity_table.py --rows mpnet_quality.jsonl --compare results/runs.jsonl

--rows takes the JSONL of tools/gpu/mpnet_quality.sh (one row per run and side: side, task, method, seed,
metric, test) and prints mean ± sample std per side over seeds, the difference, whether it is within 2
points, and with --compare the same task and method of an `s3pet experiment` runs.jsonl (MiniLM's in
results/) as a last column.
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


def stats(xs):
    """'mean ± std' (sample std; one value: the value) or '—'."""
    if not xs:
        return "—", None
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return f"{m:.2f}", m
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
    return f"{m:.2f} ± {sd:.2f}", m


def rows_table(rows_files, compare):
    """The table of --rows (and --compare)."""
    rows = [json.loads(l) for p in rows_files for l in open(p) if l.strip()]
    done = [r for r in rows if r.get("status") == "done"]
    metric = {r["task"]: r["metric"] for r in done if r.get("metric")}
    other = defaultdict(list)
    for l in (open(compare) if compare else []):
        r = json.loads(l)
        if "test" in r and r["task"] in metric and r["test"].get(metric[r["task"]]) is not None:
            other[(r["task"], r["method"])].append(r["test"][metric[r["task"]]])
    print("| task | method | metric | seeds (s3pet/peer) | s3pet | peer | s3pet − peer | within 2 |"
          + (" compared run |" if compare else ""))
    print("|---|---|---|---|---:|---:|---:|---|" + ("---:|" if compare else ""))
    for task, method in sorted({(r["task"], r["method"]) for r in rows}):
        k = metric.get(task)
        val = {side: [r["test"][k] for r in done if (r["task"], r["method"], r["side"]) == (task, method, side)]
               for side in ("s3pet", "peer")}
        (so, mo), (sp, mp) = stats(val["s3pet"]), stats(val["peer"])
        diff = mo - mp if mo is not None and mp is not None else None
        cells = [task, method, k or "?", f"{len(val['s3pet'])}/{len(val['peer'])}", so, sp,
                 "—" if diff is None else f"{diff:+.2f}", "—" if diff is None else ("yes" if abs(diff) <= 2 else "**no**")]
        if compare:
            cells.append(stats(other.get((task, method), []))[0])
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--s3pet", nargs="+", default=[], help="s3pet report.json files or directories")
    ap.add_argument("--peer", nargs="+", default=[], help="parity.py JSON files or directories")
    ap.add_argument("--data-root", default=None, help="where the exports live, as <root>/<task>/")
    ap.add_argument("--rows", nargs="+", default=[], help="JSONL rows of tools/gpu/mpnet_quality.sh")
    ap.add_argument("--compare", help="with --rows: an `s3pet experiment` runs.jsonl for a last column")
    a = ap.parse_args(argv)
    if a.rows:
        return rows_table(a.rows, a.compare)
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
