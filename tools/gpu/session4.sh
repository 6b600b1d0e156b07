#!/usr/bin/env bash
# Fourth GPU call: the parity table on MRPC and CoLA with a recipe that leaves the underfit regime
# (recipe B of docs/PARITY.md): 5 epochs, lr 5e-5 (full) / 1e-3 (lora, bitfit), seeds 42-44.
set -uo pipefail
PAR=${1:-12}
source scripts/gpu-env.sh
R=/tmp/results4
tools/gpu/parity_jobs.sh dist/s3pet-cuda $R/parity "cola mrpc" "42 43 44" "full lora bitfit" 5 5e-5 1e-3 | xargs -P "$PAR" -I{} bash -c '{}'
tar czf $OUT/results4.tar.gz --exclude='*.safetensors' -C /tmp results4
