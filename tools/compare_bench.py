#!/usr/bin/env python3
"""Runs `s3pet bench` and tools/bench_peer.py row by row and prints a markdown table of the two.

    python tools/compare_bench.py --s3pet target/release/s3pet --shape minilm,bert-base \
        --workload full,lora,retrain,search1,search2 --batch-size 16 --seq-len 128 --warmup 2 --steps 5 \
        --device cpu --threads 4 --hardware cpu --json docs/performance.json [-- EXTRA ARGS FOR BOTH]

For every shape and workload, one `s3pet bench` process, then one bench_peer.py process with the same
shape, batch, sequence length, warm-up, steps, device and thread count, so that the two see the same
machine state. ratio = pytorch_ms / s3pet_ms (above 1: s3pet is faster). For retrain, search1 and search2
the peer needs s3pet's modules: once per shape, `s3pet bench --workload lora --steps 0 --warmup 0
--emit-structures TMPDIR` (with the --s3pet-arg and `--` arguments, e.g. --budget) writes the retrain
structure and the search candidates with the budget, passed to bench_peer.py as --structure and
--candidates. A search row also gives its time over the same shape's retrain row, for each program.
With --json the rows are appended to that JSON list (created if missing). Arguments after `--` go to
both programs; --s3pet-arg / --peer-arg (repeatable) to one of them.
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_WORKLOADS = ("full", "lora", "retrain", "search1", "search2")
STRUCTURE_WORKLOADS = ("retrain", "search1", "search2")  # the peer needs s3pet's emitted modules


def slug(shape):
    """The file-name form of a shape in s3pet's --emit-structures output (src/bench.rs)."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "-") else "_" for c in shape)


def json_lines(text):
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def run(cmd):
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = json_lines(p.stdout)
    if p.returncode != 0 or not rows:
        tail = "\n".join((p.stderr or "").strip().splitlines()[-15:])
        print(f"  failed (exit {p.returncode}):\n{tail}", file=sys.stderr, flush=True)
        return None
    return rows[-1]


def fmt(x, digits=1):
    return "—" if x is None else f"{x:.{digits}f}"


def git_commit():
    try:
        return subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--s3pet", default="target/release/s3pet", help="the s3pet binary")
    ap.add_argument("--python", default=sys.executable, help="the interpreter for bench_peer.py")
    ap.add_argument("--shape", default="minilm,bert-base")
    ap.add_argument("--workload", default="full,lora,retrain,search1,search2")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                    help="bench_peer.py's --dtype (autocast); s3pet bench gets --backbone-dtype (frozen matrices in bf16)")
    ap.add_argument("--hardware", default=None, help='label stored in the JSON rows, e.g. "cpu" or "h100" '
                    '(default: "cpu" on --device cpu, else "gpu")')
    ap.add_argument("--json", default=None, help="append the rows to this JSON list file")
    ap.add_argument("--s3pet-arg", action="append", default=[], help="an extra argument for s3pet bench only")
    ap.add_argument("--peer-arg", action="append", default=[], help="an extra argument for bench_peer.py only")
    a = ap.parse_args(argv)
    hardware = a.hardware or ("cpu" if a.device == "cpu" else "gpu")

    common = ["--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len), "--warmup", str(a.warmup),
              "--steps", str(a.steps), "--device", a.device]
    if a.threads:
        common += ["--threads", str(a.threads)]
    s3_dtype = ["--backbone-dtype", a.dtype] if a.dtype != "fp32" else []

    results = []
    workloads = a.workload.split(",")
    tmp = tempfile.TemporaryDirectory(prefix="compare_bench.")
    for si, shape in enumerate(a.shape.split(",")):
        retrain_ms = retrain_py_ms = None
        files = {}
        if any(w in STRUCTURE_WORKLOADS for w in workloads):
            emit_dir = os.path.join(tmp.name, str(si))
            where = ["--device", a.device] + (["--threads", str(a.threads)] if a.threads else [])
            run([a.s3pet, "bench", "-q", "--shape", shape, "--workload", "lora", "--steps", "0", "--warmup", "0",
                 "--emit-structures", emit_dir] + where + a.s3pet_arg + extra)
            for kind, flag in (("retrain", "--structure"), ("candidates", "--candidates")):
                path = os.path.join(emit_dir, f"{slug(shape)}.{kind}.json")
                if os.path.isfile(path):
                    files[flag] = path
        for workload in workloads:
            s3 = run([a.s3pet, "bench", "-q", "--shape", shape, "--workload", workload] + common + s3_dtype
                     + a.s3pet_arg + extra)
            peer, need = None, None
            if workload in STRUCTURE_WORKLOADS:
                need = "--structure" if workload == "retrain" else "--candidates"
            if workload in PEER_WORKLOADS and (need is None or need in files):
                peer = run([a.python, os.path.join(HERE, "bench_peer.py"), "--shape", shape, "--workload",
                            workload, "--dtype", a.dtype] + ([need, files[need]] if need else []) + common
                           + a.peer_arg + extra)
            elif need:
                print(f"  no {need} file from s3pet bench --emit-structures: no peer for {shape} {workload}",
                      file=sys.stderr, flush=True)
            s3_ms = s3["ms_per_step"] if s3 else None
            py_ms = peer["ms_per_step"] if peer else None
            if workload == "retrain":
                retrain_ms, retrain_py_ms = s3_ms, py_ms
            r = {
                "hardware": hardware,
                "shape": shape,
                "workload": workload,
                "s3pet_ms": s3_ms,
                "pytorch_ms": py_ms,
                "ratio": py_ms / s3_ms if s3_ms and py_ms else None,
                "batch": a.batch_size,
                "seq_len": a.seq_len,
                "threads": (s3 or peer or {}).get("threads", a.threads),
                "dtype": a.dtype,
                "device": a.device,
                "warmup": a.warmup,
                "steps": a.steps,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "commit": git_commit(),
                "s3pet_trainable_params": s3.get("trainable_params") if s3 else None,
                "pytorch_trainable_params": peer.get("trainable_params") if peer else None,
                "s3pet_peak_bytes": s3.get("peak_rss_bytes") if s3 else None,
                "pytorch_peak_bytes": peer.get("peak_mem_bytes") if peer else None,
            }
            if s3 and s3.get("peak_gpu_bytes") is not None:  # CUDA builds: comparable to the peer's CUDA peak
                r["s3pet_peak_gpu_bytes"] = s3["peak_gpu_bytes"]
            if peer:
                r["pytorch_threads"] = peer.get("threads")
                r["torch"] = peer.get("torch")
                r["transformers"] = peer.get("transformers")
            if workload.startswith("search") and s3_ms and retrain_ms:
                r["over_retrain"] = s3_ms / retrain_ms
            if workload.startswith("search") and py_ms and retrain_py_ms:
                r["pytorch_over_retrain"] = py_ms / retrain_py_ms
            if extra or a.s3pet_arg or a.peer_arg:
                r["extra_args"] = {"both": extra, "s3pet": a.s3pet_arg, "peer": a.peer_arg}
            results.append(r)
            print(f"  {shape} {workload}: s3pet {fmt(s3_ms)} ms, pytorch {fmt(py_ms)} ms", file=sys.stderr,
                  flush=True)
    tmp.cleanup()

    print(f"\n{hardware}, device {a.device}, {a.dtype}, batch {a.batch_size} x {a.seq_len}, threads "
          f"{results[0]['threads'] if results else a.threads}, {a.steps} timed steps after {a.warmup}\n")
    print("| shape | workload | s3pet ms | pytorch ms | ratio (pytorch / s3pet) | note |")
    print("|---|---|---:|---:|---:|---|")
    for r in results:
        notes = []
        if r["s3pet_ms"] is None:
            notes.append("s3pet failed")
        if r["workload"] in PEER_WORKLOADS and r["pytorch_ms"] is None:
            notes.append("pytorch failed")
        over = [f"{who} {r[k]:.2f}x" for who, k in (("s3pet", "over_retrain"), ("pytorch", "pytorch_over_retrain"))
                if k in r]
        if over:
            notes.append(" / ".join(over) + " the retrain step")
        n_s3, n_py = r["s3pet_trainable_params"], r["pytorch_trainable_params"]
        if n_s3 is not None and n_py is not None and n_s3 != n_py:
            notes.append(f"trainable params differ: s3pet {n_s3}, pytorch {n_py}")
        note = "; ".join(notes)
        print(f"| {r['shape']} | {r['workload']} | {fmt(r['s3pet_ms'])} | {fmt(r['pytorch_ms'])} | "
              f"{fmt(r['ratio'], 2)} | {note} |")

    if a.json:
        rows = []
        if os.path.exists(a.json):
            with open(a.json) as f:
                rows = json.load(f)
            if not isinstance(rows, list):
                sys.exit(f"{a.json}: not a JSON list")
        rows.extend(results)
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
            f.write("\n")
        print(f"\nappended {len(results)} rows to {a.json}", file=sys.stderr)
    return 0 if all(r["s3pet_ms"] is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
