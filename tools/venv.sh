# Sourced by tools/make_fixtures.sh and scripts/setup.sh: makes tools/.venv (the pinned Python
# reference stack of tools/requirements.txt, CPU-only use of the torch wheel, no CUDA libraries) and
# exports TOOLS_PY plus the environment that torch needs to import (see tools/README.md).
# Run from the repository root.
PY=${PYTHON:-python3}
VENV=tools/.venv
STUBS=$VENV/cuda-stubs

if [ ! -x "$VENV/bin/python" ]; then
  echo "[tools] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if ! cmp -s tools/requirements.txt "$VENV/.requirements.installed"; then
  echo "[tools] installing tools/requirements.txt (--no-deps)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q --no-deps -r tools/requirements.txt
  cp tools/requirements.txt "$VENV/.requirements.installed"
  rm -rf "$STUBS"
fi
TORCH_LIB=$(ls -d "$VENV"/lib/python3*/site-packages/torch/lib | head -1)
if [ ! -e "$STUBS/.done" ]; then
  echo "[tools] building CUDA stub libraries in $STUBS"
  "$VENV/bin/python" tools/cuda_stubs.py "$TORCH_LIB" "$STUBS"
  touch "$STUBS/.done"
fi
export LD_LIBRARY_PATH="$(cd "$STUBS" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUDA_VISIBLE_DEVICES=""
TOOLS_PY=$VENV/bin/python
