#!/usr/bin/env python3
"""Build stub shared libraries for the CUDA libraries that the PyPI torch wheel links against but
that we deliberately do not install (cuDNN, cuBLAS, cuSPARSE, NCCL, ...).

The Linux torch==2.11.0 wheel on PyPI is the CUDA build: `libtorch_python.so` needs
`libtorch_cuda.so`, which needs ~10 NVIDIA libraries (several GB). We install torch with
`--no-deps` plus only the small CUDA runtime/CUPTI wheels, so `import torch` would fail with
"libcudnn.so.9: cannot open shared object file". For CPU-only work nothing in those libraries is
ever called, so a stub with the right SONAME, the right symbol-version nodes and one aborting
definition per referenced symbol satisfies the dynamic loader. Any stub that does get called prints
its name and aborts, so it can never silently change a result.

Usage: cuda_stubs.py TORCH_LIB_DIR OUT_DIR      (then put OUT_DIR on LD_LIBRARY_PATH)

Needs `readelf` (binutils) and a C compiler (`cc`). Reads only ELF metadata; does not import torch.
"""
import os
import re
import subprocess
import sys
from pathlib import Path


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def needed_and_rpath(lib):
    out = readelf("-d", str(lib))
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)
    rp = re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library (?:rpath|runpath): \[(.+?)\]", out)
    dirs = []
    for r in rp:
        for d in r.split(":"):
            dirs.append(Path(d.replace("$ORIGIN", str(lib.parent))))
    return needed, dirs


def dyn_syms(lib):
    """Yield (name, version_or_None, type, bind, defined) for the dynamic symbol table."""
    for line in readelf("--dyn-syms", str(lib)).splitlines():
        parts = line.split()
        if len(parts) < 8 or not parts[0].rstrip(":").isdigit():
            continue
        typ, bind, ndx, name = parts[3], parts[4], parts[6], parts[7]
        ver = None
        if "@" in name:
            name, _, ver = name.partition("@")
            ver = ver.lstrip("@")
            ver = re.sub(r"\s*\(\d+\)$", "", ver)
        yield name, ver, typ, bind, ndx != "UND"


_LDCONFIG = None


def system_lib(soname):
    global _LDCONFIG
    if _LDCONFIG is None:
        _LDCONFIG = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in _LDCONFIG.splitlines():
        line = line.strip()
        if line.startswith(soname + " (") and "=>" in line:
            p = Path(line.split("=>")[-1].strip())
            if p.exists():
                return p
    return None


def main():
    torch_lib, out_dir = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    libs = sorted(p for p in torch_lib.glob("*.so*") if p.is_file())

    # Resolve every NEEDED entry; whatever cannot be found gets a stub.
    found, missing = {}, set()
    todo = list(libs)
    seen = set()
    while todo:
        lib = todo.pop()
        if lib in seen:
            continue
        seen.add(lib)
        needed, dirs = needed_and_rpath(lib)
        for so in needed:
            if so in found or so in missing:
                continue
            cand = [d / so for d in dirs + [torch_lib]] + [system_lib(so)]
            hit = next((c for c in cand if c is not None and c.exists()), None)
            if hit is None:
                missing.add(so)
            else:
                found[so] = hit.resolve()
                todo.append(hit.resolve())
    if not missing:
        print("cuda_stubs: nothing missing")
        return

    defined = set()
    for lib in set(libs) | set(found.values()):
        for name, _ver, _t, _b, d in dyn_syms(lib):
            if d:
                defined.add(name)

    # Which file each symbol-version name belongs to (from the version-needs tables).
    ver_file = {}
    for lib in libs:
        cur = None
        for line in readelf("-V", str(lib)).splitlines():
            m = re.search(r"File: (\S+)", line)
            if m:
                cur = m.group(1)
            m = re.search(r"Name: (\S+)", line)
            if m and cur:
                ver_file[m.group(1)] = cur

    catch_all = "libnccl.so.2" if "libnccl.so.2" in missing else sorted(missing)[0]
    per_lib = {so: {} for so in missing}  # so -> {(name, version_node_or_None): type}
    for lib in libs:
        for name, ver, typ, bind, d in dyn_syms(lib):
            if d or not name or bind == "WEAK":
                continue
            if ver is not None and ver_file.get(ver) in missing:
                per_lib[ver_file[ver]][(name, ver)] = typ
            elif ver is None and name not in defined:
                per_lib[catch_all][(name, None)] = typ

    for so, syms in sorted(per_lib.items()):
        c = ['#include <stdio.h>', '#include <stdlib.h>',
             'static void die(const char *n) { fprintf(stderr, "CUDA stub %s called: this venv is '
             'CPU-only (tools/cuda_stubs.py)\\n", n); abort(); }']
        nodes = {}
        for i, ((name, ver), typ) in enumerate(sorted(syms.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))):
            esc = name.replace("\\", "\\\\").replace('"', '\\"')
            nodes.setdefault(ver or so, []).append(esc)
            if typ in ("OBJECT", "TLS"):
                c.append(f'__attribute__((aligned(64))) char s{i}[256] __asm__("{esc}");')
            else:
                c.append(f'void f{i}(void) __asm__("{esc}");')
                c.append(f'void f{i}(void) {{ die("{esc}"); }}')
        src = out_dir / f"{so}.c"
        src.write_text("\n".join(c) + "\n")
        cmd = ["cc", "-shared", "-fPIC", "-O0", "-o", str(out_dir / so), str(src), f"-Wl,-soname,{so}"]
        if nodes:
            # One version node per version name the callers ask for (NVIDIA versions by SONAME,
            # NVSHMEM by "NVSHMEM"); unversioned references bind to these definitions as well.
            vs = out_dir / f"{so}.map"
            vs.write_text("".join(
                f"{node} {{\n  global:\n" + "".join(f'    "{n}";\n' for n in names) + "};\n"
                for node, names in sorted(nodes.items())) + f"{so}_LOCAL {{ local: *; }};\n")
            cmd.append(f"-Wl,--version-script,{vs}")
        subprocess.run(cmd, check=True)
        print(f"cuda_stubs: {so}: {len(syms)} symbols")


if __name__ == "__main__":
    main()
