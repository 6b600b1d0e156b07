#!/usr/bin/env python3
"""Runs `s3pet bench` and tools/bench_peer.py row by row and prints a markdown table of the two.

    python tools/compare_bench.py --s3pet target/release/s3pet --shape minilm,bert-base \
        --workload full,lora,retrain,search1,search2 --batch-size 16 --seq-len 128 --warmup 2 --steps 5 \
        --device cpu --threads 4 --hardware cpu --json docs/performance.json [-- EXTRA ARGS FOR BOTH]

For every shape and workload, one `s3pet bench` process (with --baseline, first one of the older binary
too), then one bench_peer.py process with the same shape, batch, sequence length, warm-up, steps, device
and thread count, so that they see the same machine state. ratio = pytorch_ms / s3pet_ms (above 1: s3pet
is faster); speedup = baseline_ms / s3pet_ms. The LoRA and full rows' peer is a plain transformers + PEFT
loop; the retrain and search rows' peer rebuilds s3pet's modules and algorithm in PyTorch. For retrain,
search1 and search2 the peer needs s3pet's modules: once per shape, `s3pet bench --workload lora --steps 1
--warmup 0 --emit-structures TMPDIR` (with the --s3pet-arg and `--` arguments, e.g. --budget) writes the
retrain structure and the search candidates with the budget, passed to bench_peer.py as --structure and
--candidates. A search row also gives its time and peak memory over the same shape's retrain row, for each
program; a LoRA row its model FLOP rate (4 x backbone parameters x tokens a step: forward, and the backward
to the activations; frozen weights get no gradient) and, with --peak-tflops, its share of that peak.
--whole-run TASK times one `s3pet run` (the S3PET-M search then retrain at the task's schedule) against one
`s3pet train --method lora` of the same schedule on --model and --data-dir, as one more row.
With --json each row is appended to that JSON list (created if missing) as soon as it is measured. Arguments after `--` go to
both programs; --s3pet-arg / --peer-arg / --baseline-arg (repeatable) to one of them.
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_WORKLOADS = ("full", "lora", "retrain", "search1", "search2")
STRUCTURE_WORKLOADS = ("retrain", "search1", "search2")  # the peer needs s3pet's emitted modules


def slug(shape):
    """The file-name form of a shape in s3pet's --emit-structures output (src/bench/mod.rs)."""
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


def parse(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--s3pet", default="target/release/s3pet", help="the s3pet binary")
    ap.add_argument("--baseline", default=None, help="an older s3pet binary, run for the same rows (speedup)")
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
                    help="bench_peer.py's --dtype (autocast); s3pet bench gets --precision bf16 (bf16 activations "
                         "and frozen matmuls), or --backbone-dtype bf16 with --s3pet-bf16 backbone-dtype; a "
                         "--baseline binary gets --backbone-dtype (older builds have no --precision)")
    ap.add_argument("--s3pet-bf16", default="precision", choices=["precision", "backbone-dtype"])
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's peak rate for the MFU of LoRA rows (e.g. 790: bf16 matmuls measured on an H200)")
    ap.add_argument("--hardware", default=None, help='label stored in the JSON rows, e.g. "cpu" or "h200" '
                    '(default: "cpu" on --device cpu, else "gpu")')
    ap.add_argument("--json", default=None, help="append the rows to this JSON list file")
    ap.add_argument("--s3pet-arg", action="append", default=[], help="an extra argument for s3pet bench only")
    ap.add_argument("--baseline-arg", action="append", default=[], help="an extra argument for the baseline only")
    ap.add_argument("--peer-arg", action="append", default=[], help="an extra argument for bench_peer.py only")
    ap.add_argument("--whole-run", default=None, metavar="TASK",
                    help="also time `s3pet run` against `s3pet train --method lora` on TASK (--model, --data-dir)")
    ap.add_argument("--model", default=None, help="--whole-run: the model directory")
    ap.add_argument("--data-dir", default=None, help="--whole-run: the data directory")
    ap.add_argument("--whole-run-arg", action="append", default=[], help="--whole-run: an extra argument for both runs")
    a = ap.parse_args(argv)
    a.extra = extra
    a.hardware = a.hardware or ("cpu" if a.device == "cpu" else "gpu")
    return a


def emit_structures(a, shape, emit_dir):
    """s3pet's retrain structure and search candidates of `shape`, as bench_peer.py options."""
    where = ["--device", a.device] + (["--threads", str(a.threads)] if a.threads else [])
    run([a.s3pet, "bench", "-q", "--shape", shape, "--workload", "lora", "--steps", "1", "--warmup", "0",
         "--emit-structures", emit_dir] + where + a.s3pet_arg + a.extra)
    files = {}
    for kind, flag in (("retrain", "--structure"), ("candidates", "--candidates")):
        path = os.path.join(emit_dir, f"{slug(shape)}.{kind}.json")
        if os.path.isfile(path):
            files[flag] = path
    return files


def measure(a, shape, workload, files):
    """(s3pet row, baseline row, peer row) of one shape and workload."""
    common = ["--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len), "--warmup", str(a.warmup),
              "--steps", str(a.steps), "--device", a.device] + (["--threads", str(a.threads)] if a.threads else [])
    bench = ["bench", "-q", "--shape", shape, "--workload", workload] + common
    bf16 = a.dtype != "fp32"
    base = None
    if a.baseline:
        base = run([a.baseline] + bench + (["--backbone-dtype", a.dtype] if bf16 else []) + a.baseline_arg + a.extra)
    s3_dtype = ([f"--{a.s3pet_bf16}", a.dtype] if bf16 else [])
    s3 = run([a.s3pet] + bench + s3_dtype + a.s3pet_arg + a.extra)
    peer, need = None, None
    if workload in STRUCTURE_WORKLOADS:
        need = "--structure" if workload == "retrain" else "--candidates"
    if workload in PEER_WORKLOADS and (need is None or need in files):
        peer = run([a.python, os.path.join(HERE, "bench_peer.py"), "--shape", shape, "--workload", workload,
                    "--dtype", a.dtype] + ([need, files[need]] if need else []) + common + a.peer_arg + a.extra)
    elif need:
        print(f"  no {need} file from s3pet bench --emit-structures: no peer for {shape} {workload}",
              file=sys.stderr, flush=True)
    return s3, base, peer


def peak_mem(row):
    """The peak memory of a row: GPU bytes allocated to tensors when there are any, else RSS."""
    if not row:
        return None
    return row.get("peak_gpu_bytes") or row.get("peak_mem_bytes") or row.get("peak_rss_bytes")


def row_of(a, shape, workload, s3, base, peer, retrain):
    """The JSON row of one measurement; `retrain`: (s3pet row, peer row) of the shape's retrain."""
    s3_ms = s3["ms_per_step"] if s3 else None
    py_ms = peer["ms_per_step"] if peer else None
    r = {
        "hardware": a.hardware, "shape": shape, "workload": workload, "s3pet_ms": s3_ms, "pytorch_ms": py_ms,
        "ratio": py_ms / s3_ms if s3_ms and py_ms else None, "batch": a.batch_size, "seq_len": a.seq_len,
        "threads": (s3 or peer or {}).get("threads", a.threads), "dtype": a.dtype, "device": a.device,
        "warmup": a.warmup, "steps": a.steps,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
        "s3pet_trainable_params": s3.get("trainable_params") if s3 else None,
        "pytorch_trainable_params": peer.get("trainable_params") if peer else None,
        "s3pet_peak_bytes": s3.get("peak_rss_bytes") if s3 else None,
        "pytorch_peak_bytes": peer.get("peak_mem_bytes") if peer else None,
    }
    if s3 and peer and s3.get("cpu_ms_per_step") and peer.get("cpu_ms_per_step"):
        # CPU time per step, all threads: on a machine shared with other work, less noisy than wall time
        r.update(s3pet_cpu_ms=s3["cpu_ms_per_step"], pytorch_cpu_ms=peer["cpu_ms_per_step"],
                 cpu_ratio=peer["cpu_ms_per_step"] / s3["cpu_ms_per_step"])
    if base and base.get("cpu_ms_per_step") and s3 and s3.get("cpu_ms_per_step"):
        r["cpu_speedup"] = base["cpu_ms_per_step"] / s3["cpu_ms_per_step"]
    if s3:
        for k in ("peak_gpu_bytes", "precision", "cuda_graphs", "hvp_replicas"):
            if s3.get(k) is not None:
                r[("s3pet_" if k == "peak_gpu_bytes" else "") + k] = s3[k]
    if base:
        r["baseline_ms"] = base["ms_per_step"]
        r["speedup"] = base["ms_per_step"] / s3_ms if s3_ms else None
        r["baseline_peak_gpu_bytes"] = base.get("peak_gpu_bytes")
    if peer:
        r.update(pytorch_threads=peer.get("threads"), torch=peer.get("torch"), transformers=peer.get("transformers"),
                 pytorch_loop=peer.get("loop", "s3pet's step"))
    if workload.startswith("search"):
        (s3r, pyr) = retrain
        for who, row, rr in (("", s3, s3r), ("pytorch_", peer, pyr)):
            if row and rr:
                r[f"{who}over_retrain"] = row["ms_per_step"] / rr["ms_per_step"]
                if row.get("cpu_ms_per_step") and rr.get("cpu_ms_per_step"):
                    r[f"{who}cpu_over_retrain"] = row["cpu_ms_per_step"] / rr["cpu_ms_per_step"]
                if peak_mem(row) and peak_mem(rr):
                    r[f"{who}mem_over_retrain"] = peak_mem(row) / peak_mem(rr)
    if workload == "lora" and s3 and s3.get("backbone_params"):
        flops = 4.0 * s3["backbone_params"] * a.batch_size * a.seq_len
        r["model_tflop_per_step"] = flops / 1e12
        for who, ms in (("s3pet", s3_ms), ("pytorch", py_ms)):
            if ms:
                r[f"{who}_tflops"] = flops / (ms * 1e-3) / 1e12
                if a.peak_tflops:
                    r[f"{who}_mfu"] = r[f"{who}_tflops"] / a.peak_tflops
    if a.extra or a.s3pet_arg or a.peer_arg:
        r["extra_args"] = {"both": a.extra, "s3pet": a.s3pet_arg, "peer": a.peer_arg}
    return r


def whole_run(a, tmp):
    """One `s3pet run` (search then retrain) against one `s3pet train --method lora`, the task's schedule."""
    if not (a.model and a.data_dir):
        sys.exit("compare_bench.py: --whole-run needs --model and --data-dir")
    where = ["--model", a.model, "--data-dir", a.data_dir, "--device", a.device] + \
        (["--threads", str(a.threads)] if a.threads else []) + a.whole_run_arg
    secs = {}
    for name, cmd in (("lora", ["train", "--method", "lora"]), ("run", ["run", "--space", "mix", "--budget", "1.39e-4"])):
        out = os.path.join(tmp, f"whole-{name}")
        full = [a.s3pet, "-q"] + cmd + ["--task", a.whole_run, "--out", out, "--overwrite"] + where
        print("+ " + shlex.join(full), file=sys.stderr, flush=True)
        t = time.perf_counter()
        p = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        secs[name] = time.perf_counter() - t if p.returncode == 0 else None
        if p.returncode != 0:
            print("  failed:\n" + "\n".join(p.stderr.strip().splitlines()[-10:]), file=sys.stderr, flush=True)
    return {
        "hardware": a.hardware, "shape": a.model, "workload": f"whole-run-{a.whole_run}", "device": a.device,
        "s3pet_run_s": secs["run"], "s3pet_lora_s": secs["lora"],
        "run_over_lora": secs["run"] / secs["lora"] if secs["run"] and secs["lora"] else None,
        "args": a.whole_run_arg, "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def table(a, results):
    print(f"\n{a.hardware}, device {a.device}, {a.dtype}, batch {a.batch_size} x {a.seq_len}, threads "
          f"{results[0].get('threads') if results else a.threads}, {a.steps} timed steps after {a.warmup}\n")
    print("| shape | workload | s3pet ms | pytorch ms | ratio (pytorch / s3pet) | baseline ms (speedup) | note |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in results:
        if r["workload"].startswith("whole-run"):
            print(f"| {r['shape']} | {r['workload']} | run {fmt(r['s3pet_run_s'])} s | lora {fmt(r['s3pet_lora_s'])} s "
                  f"| run / lora {fmt(r['run_over_lora'], 2)} | | |")
            continue
        notes = []
        for who, k in (("s3pet", "over_retrain"), ("pytorch", "pytorch_over_retrain")):
            if k in r:
                mem = r.get(("" if who == "s3pet" else "pytorch_") + "mem_over_retrain")
                notes.append(f"{who} {r[k]:.2f}x retrain" + (f" (memory {mem:.2f}x)" if mem else ""))
        if "cpu_ratio" in r:
            notes.append(f"CPU-time ratio {r['cpu_ratio']:.2f}")
        if "s3pet_tflops" in r:
            mfu = f", MFU {r['s3pet_mfu']:.1%} / {r.get('pytorch_mfu', 0):.1%}" if "s3pet_mfu" in r else ""
            notes.append(f"{r['s3pet_tflops']:.1f} / {r.get('pytorch_tflops', 0):.1f} TFLOP/s{mfu}")
        n_s3, n_py = r["s3pet_trainable_params"], r["pytorch_trainable_params"]
        if n_s3 is not None and n_py is not None and n_s3 != n_py:
            notes.append(f"trainable params differ: s3pet {n_s3}, pytorch {n_py}")
        base = f"{fmt(r.get('baseline_ms'))} ({fmt(r.get('speedup'), 2)}x)" if "baseline_ms" in r else ""
        print(f"| {r['shape']} | {r['workload']} | {fmt(r['s3pet_ms'])} | {fmt(r['pytorch_ms'])} | "
              f"{fmt(r['ratio'], 2)} | {base} | {'; '.join(notes)} |")


def append_json(path, row):
    """Appends one row to the JSON list at `path` (created if missing): a run cut short keeps its rows."""
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            rows = json.load(f)
        if not isinstance(rows, list):
            sys.exit(f"{path}: not a JSON list")
    rows.append(row)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")


def main(argv=None):
    a = parse(argv)
    results = []
    workloads = a.workload.split(",") if a.workload else []
    tmp = tempfile.TemporaryDirectory(prefix="compare_bench.")
    for si, shape in enumerate(a.shape.split(",") if workloads else []):
        files = {}
        if any(w in STRUCTURE_WORKLOADS for w in workloads):
            files = emit_structures(a, shape, os.path.join(tmp.name, str(si)))
        retrain = (None, None)
        for workload in workloads:
            s3, base, peer = measure(a, shape, workload, files)
            if workload == "retrain":
                retrain = (s3, peer)
            results.append(row_of(a, shape, workload, s3, base, peer, retrain))
            r = results[-1]
            if a.json:
                append_json(a.json, r)
            print(f"  {shape} {workload}: s3pet {fmt(r['s3pet_ms'])} ms, pytorch {fmt(r['pytorch_ms'])} ms"
                  + (f", baseline {fmt(r.get('baseline_ms'))} ms" if a.baseline else ""), file=sys.stderr, flush=True)
    if a.whole_run:
        results.append(whole_run(a, tmp.name))
        if a.json:
            append_json(a.json, results[-1])
    tmp.cleanup()
    table(a, results)
    if a.json:
        print(f"\nappended {len(results)} rows to {a.json} (each as it finished)", file=sys.stderr)
    ok = all(r.get("s3pet_ms") is not None or r.get("run_over_lora") is not None for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
