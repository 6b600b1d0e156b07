#!/usr/bin/env python3
"""How a plan's results travel between this machine and the lent GPU (tools/gpu/paper_mpnet.sh).

A call carries at most 64 MiB out and brings back at most 8 files of at most 16 MiB each, and a cell cut
at a lease's end resumes only from its checkpoint (an MPNet S3PET-M cell's is about 10 MB): so the
results travel without weights, and the cut cells' checkpoints in archives of their own, several per
call, over as many calls as they need.

  outbound RES CARRY OUTDIR [--mb M]   here, before a lease: CARRY = RES without *.safetensors (the
                                       call that starts the plan carries it), OUTDIR/out-NN.tgz the cut
                                       cells' checkpoints, at most M MB each (one call each)
  merge CARRY RES INDIR                device: RES = CARRY plus every INDIR/*.tgz (then removed)
  pack RES OUT [--final] [--shipped F] [--files N] [--mb M]
                                       device: OUT/results-mpnet.tgz (finished cells without weights,
                                       runs.jsonl, plan.toml; with --final the cut cells' small files
                                       too) and, with --final, up to N archives OUT/ckpt-K.tgz of at most
                                       M MiB of cut cells' checkpoints not yet shipped (F lists those
                                       shipped); a later call packs the rest (`ship`). Weights of
                                       finished cells are deleted.
  ship RES OUT [--shipped F] [--files N] [--mb M]
                                       device: the next N archives of checkpoints (after a final pack)
  collect RES DIR                      here, after a call: DIR's results-mpnet.tgz and ckpt-*.tgz into
                                       RES. Finished cells come in whole; a final pack's cut cells
                                       replace their local directories (their checkpoints come with this
                                       or a later call, or the cell starts over next lease); cells still
                                       running on the device are left as they went out. runs.jsonl
                                       gains the incoming rows of cells it lacks (a fresh machine's
                                       results lack what an earlier call brought back).
"""
import argparse
import io
import json
import os
import shutil
import sys
import tarfile

MANIFEST = "manifest.json"
# tar's safe extraction (no absolute paths, no links out of the tree) where this Python has it
SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def finished_ids(res):
    path = os.path.join(res, "runs.jsonl")
    if not os.path.exists(path):
        return set()
    return {json.loads(line)["id"] for line in open(path) if line.strip()}


def cell_dirs(res):
    cells = os.path.join(res, "cells")
    return sorted(os.listdir(cells)) if os.path.isdir(cells) else []


def weights(res, cell):
    d = os.path.join(res, "cells", cell)
    return sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))


def cut_checkpoints(res):
    """(size, cell, weight files) of every unfinished cell with weights on disk, smallest first
    (size: the weights')."""
    done = finished_ids(res)
    out = []
    for cell in cell_dirs(res):
        files = weights(res, cell)
        if cell not in done and files:
            size = sum(os.path.getsize(os.path.join(res, "cells", cell, f)) for f in files)
            out.append((size, cell, files))
    return sorted(out)


def group(items, limit):
    """Items (size, cell, files) into groups of at most `limit` bytes each; those over it alone: dropped."""
    groups, current, total, dropped = [], [], 0, []
    for size, cell, files in items:
        if size > limit:
            dropped.append((size, cell))
            continue
        if current and total + size > limit:
            groups.append(current)
            current, total = [], 0
        current.append((cell, files))
        total += size
    if current:
        groups.append(current)
    return groups, dropped


def write_archive(path, res, members):
    """A tar.gz of each member cell's whole directory (its checkpoint and the small files its resume
    reads: config.json, the logs), under `res/cells/cell/`, as RES is named here: each archive alone
    restores its cells, whichever other files of the call come back."""
    with tarfile.open(path, "w:gz") as tar:
        for cell, _ in members:
            tar.add(os.path.join(res, "cells", cell))


def outbound(args):
    res, carry, outdir = args.res, args.carry, args.outdir
    for d in (carry, outdir):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(res, carry, ignore=shutil.ignore_patterns("*.safetensors"))
    os.makedirs(outdir)
    groups, dropped = group(cut_checkpoints(res), int(args.mb * 1e6))
    for size, cell in dropped:
        print(f"{cell}: its checkpoint ({size >> 20} MB) is over {args.mb} MB; it starts over")
    for k, members in enumerate(groups):
        path = os.path.join(outdir, f"out-{k:02d}.tgz")
        write_archive(path, res, members)
        print(f"{path}: {len(members)} cut cells' checkpoints ({os.path.getsize(path) >> 20} MB)")


def merge(args):
    carry, res, indir = args.carry, args.res, args.indir
    if os.path.isdir(carry):
        shutil.rmtree(res, ignore_errors=True)
        shutil.move(carry, res)
    n = 0
    for name in sorted(os.listdir(indir)) if os.path.isdir(indir) else []:
        if name.endswith(".tgz"):
            path = os.path.join(indir, name)
            with tarfile.open(path) as tar:
                tar.extractall(".", **SAFE)
                n += len(tar.getnames())
            os.remove(path)
    print(f"{res}: {n} checkpoint files of cut cells merged in")


def shipped_list(path):
    return set(open(path).read().split()) if path and os.path.exists(path) else set()


def pack(args):
    res, out = args.res, args.out
    os.makedirs(out, exist_ok=True)
    done = finished_ids(res)
    for cell in cell_dirs(res):
        if cell in done:
            for f in weights(res, cell):
                os.remove(os.path.join(res, "cells", cell, f))
    cut = [c for c in cell_dirs(res) if c not in done]
    manifest = {"final": args.final, "cut": cut}
    with tarfile.open(os.path.join(out, "results-mpnet.tgz"), "w:gz") as tar:
        for name in ("runs.jsonl", "plan.toml"):
            if os.path.exists(os.path.join(res, name)):
                tar.add(os.path.join(res, name))
        for cell in cell_dirs(res):
            if cell in done or args.final:
                tar.add(os.path.join(res, "cells", cell),
                        filter=lambda t: None if t.name.endswith(".safetensors") else t)
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo(os.path.join(res, MANIFEST))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    if args.final:
        ship(args)


def ship(args):
    """Up to N archives of the cut cells' checkpoints not yet shipped, into OUT."""
    res, out = args.res, args.out
    os.makedirs(out, exist_ok=True)
    shipped = shipped_list(args.shipped)
    todo = [c for c in cut_checkpoints(res) if c[1] not in shipped]
    groups, dropped = group(todo, int(args.mb * (1 << 20)))
    for size, cell in dropped:
        print(f"{cell}: cut, its checkpoint ({size >> 20} MB) is over {args.mb} MiB and does not "
              "travel back; it starts over next lease")
    for k, members in enumerate(groups[: args.files]):
        write_archive(os.path.join(out, f"ckpt-{k}.tgz"), res, members)
        shipped.update(cell for cell, _ in members)
    if args.shipped:
        with open(args.shipped, "w") as f:
            f.writelines(c + "\n" for c in sorted(shipped))
    rest = len(groups) - min(len(groups), args.files)
    sent = sum(len(g) for g in groups[: args.files])
    print(f"checkpoints of {sent} cut cells packed" + (
        f"; {rest} more archives remain: run `tools/gpu/paper_mpnet.sh ship` on this machine" if rest else ""))


def collect(args):
    res, src = args.res, args.dir
    results = os.path.join(src, "results-mpnet.tgz")
    if os.path.exists(results):
        collect_results(res, results)
    for name in sorted(os.listdir(src)):
        if name.startswith("ckpt-") and name.endswith(".tgz"):
            with tarfile.open(os.path.join(src, name)) as tar:
                for m in tar.getmembers():
                    if not m.name.startswith(res.rstrip("/") + "/"):
                        sys.exit(f"{name}: {m.name} is not under {res}")
                tar.extractall(".", **SAFE)
                print(f"{name}: {len(tar.getnames())} checkpoint files into {res}")


def merge_runs(local, incoming):
    """local runs.jsonl = its rows plus incoming's rows of cells it lacks: a lease may hand out a fresh
    machine between calls, whose runs.jsonl lacks cells an earlier call of the lease brought back."""
    if not os.path.exists(incoming):
        return
    rows = [line for line in open(local) if line.strip()] if os.path.exists(local) else []
    have = {json.loads(line)["id"] for line in rows}
    for line in open(incoming):
        cell = json.loads(line)["id"] if line.strip() else None
        if cell is not None and cell not in have:
            rows.append(line if line.endswith("\n") else line + "\n")
            have.add(cell)
    with open(local, "w") as f:
        f.writelines(rows)


def collect_results(res, results):
    tmp = res.rstrip("/") + ".incoming"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(results) as tar:
        tar.extractall(tmp, **SAFE)
    inc = os.path.join(tmp, res)
    manifest = json.load(open(os.path.join(inc, MANIFEST)))
    os.makedirs(os.path.join(res, "cells"), exist_ok=True)
    if os.path.exists(os.path.join(inc, "plan.toml")):
        shutil.copy(os.path.join(inc, "plan.toml"), os.path.join(res, "plan.toml"))
    merge_runs(os.path.join(res, "runs.jsonl"), os.path.join(inc, "runs.jsonl"))
    done = finished_ids(inc)
    for cell in cell_dirs(inc):
        if cell in done or (manifest["final"] and cell in manifest["cut"]):
            dst = os.path.join(res, "cells", cell)
            shutil.rmtree(dst, ignore_errors=True)  # a cut cell's stale checkpoint goes too
            shutil.copytree(os.path.join(inc, "cells", cell), dst)
    shutil.rmtree(tmp)
    state = "final: cut cells replaced" if manifest["final"] else "the plan still running: cut cells kept"
    print(f"{results}: {len(done)} finished cells, {len(manifest['cut'])} unfinished ({state})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("outbound")
    o.add_argument("res"), o.add_argument("carry"), o.add_argument("outdir")
    o.add_argument("--mb", type=float, default=48.0)
    m = sub.add_parser("merge")
    m.add_argument("carry"), m.add_argument("res"), m.add_argument("indir")
    k = sub.add_parser("pack")
    k.add_argument("res"), k.add_argument("out")
    k.add_argument("--final", action="store_true")
    k.add_argument("--shipped")
    # 5: a call brings back 8 files, and results-mpnet.tgz and the logs must come with them
    k.add_argument("--files", type=int, default=5)
    k.add_argument("--mb", type=float, default=15.0)
    h = sub.add_parser("ship")
    h.add_argument("res"), h.add_argument("out")
    h.add_argument("--shipped")
    h.add_argument("--files", type=int, default=5)
    h.add_argument("--mb", type=float, default=15.0)
    c = sub.add_parser("collect")
    c.add_argument("res"), c.add_argument("dir")
    args = p.parse_args()
    {"outbound": outbound, "merge": merge, "pack": pack, "ship": ship, "collect": collect}[args.cmd](args)


if __name__ == "__main__":
    main()
