#!/usr/bin/env bash
# Regenerate the golden fixtures under tests/fixtures/ and check them (see tools/README.md).
# Usage: tools/make_fixtures.sh [--check-only]
# Creates tools/.venv (CPU-only use of the torch 2.11.0 wheel, no CUDA libraries) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/venv.sh
if [ "${1:-}" != "--check-only" ]; then
  "$TOOLS_PY" tools/make_fixtures.py
  "$TOOLS_PY" tools/make_search_fixture.py
  "$TOOLS_PY" tools/make_t5_fixtures.py
  "$TOOLS_PY" tools/make_encoder_fixtures.py
  "$TOOLS_PY" tools/make_llm_fixtures.py
fi
# Independent from-scratch re-computation of the tiny_bert fixtures (no transformers / PEFT).
"$TOOLS_PY" tools/check_fixtures.py > "$VENV/check.log" || { cat "$VENV/check.log"; exit 1; }
tail -1 "$VENV/check.log"
