#!/usr/bin/env bash
# Regenerate the golden fixtures under tests/fixtures/ and check them (see tools/README.md).
# Usage: tools/make_fixtures.sh [--check-only]
# Creates tools/.venv (CPU-only use of the torch 2.11.0 wheel, no CUDA libraries) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=tools/.venv
STUBS=$VENV/cuda-stubs

if [ ! -x "$VENV/bin/python" ]; then
  echo "[fixtures] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if ! cmp -s tools/requirements.txt "$VENV/.requirements.installed"; then
  echo "[fixtures] installing tools/requirements.txt (--no-deps)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q --no-deps -r tools/requirements.txt
  cp tools/requirements.txt "$VENV/.requirements.installed"
  rm -rf "$STUBS"
fi
TORCH_LIB=$(ls -d "$VENV"/lib/python3*/site-packages/torch/lib | head -1)
if [ ! -e "$STUBS/.done" ]; then
  echo "[fixtures] building CUDA stub libraries in $STUBS"
  "$VENV/bin/python" tools/cuda_stubs.py "$TORCH_LIB" "$STUBS"
  touch "$STUBS/.done"
fi
export LD_LIBRARY_PATH="$(cd "$STUBS" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUDA_VISIBLE_DEVICES=""
if [ "${1:-}" != "--check-only" ]; then
  "$VENV/bin/python" tools/make_fixtures.py
  "$VENV/bin/python" tools/make_search_fixture.py
  "$VENV/bin/python" tools/make_t5_fixtures.py
fi
# Independent from-scratch re-computation of the tiny_bert fixtures (no transformers / PEFT).
"$VENV/bin/python" tools/check_fixtures.py > "$VENV/check.log" || { cat "$VENV/check.log"; exit 1; }
tail -1 "$VENV/check.log"
