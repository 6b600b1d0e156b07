#!/usr/bin/env bash
# Fifth GPU call: seeds 45-49 of CoLA full fine-tuning and LoRA, recipe B, both sides.
set -uo pipefail
PAR=${1:-12}
source scripts/gpu-env.sh
R=/tmp/results5
tools/gpu/parity_jobs.sh dist/s3pet-cuda $R/parity cola "45 46 47 48 49" "full lora" 5 5e-5 1e-3 | xargs -P "$PAR" -I{} bash -c '{}'
tar czf $OUT/results5.tar.gz --exclude='*.safetensors' -C /tmp results5
