#!/usr/bin/env bash
# Seventh GPU call: seeds 45-49 of RTE full / LoRA / BitFit, recipe B, both sides.
set -uo pipefail
PAR=${1:-14}
source scripts/gpu-env.sh
R=/tmp/results7
tools/gpu/parity_jobs.sh dist/s3pet-cuda $R/parity rte "45 46 47 48 49" "full lora bitfit" 5 5e-5 1e-3 | xargs -P "$PAR" -I{} bash -c '{}'
tar czf $OUT/results7.tar.gz --exclude='*.safetensors' -C /tmp results7
