#!/usr/bin/env bash
# Sixth GPU call: recipe B on RTE and SST-2 (first 4,000), seeds 42-44; MRPC full fine-tuning for 10
# epochs at lr 5e-5, seeds 42-44; both sides.
set -uo pipefail
PAR=${1:-12}
source scripts/gpu-env.sh
R=/tmp/results6
{ tools/gpu/parity_jobs.sh dist/s3pet-cuda $R/parity "rte sst2" "42 43 44" "full lora bitfit" 5 5e-5 1e-3
  tools/gpu/parity_jobs.sh dist/s3pet-cuda $R/parity mrpc "42 43 44" full 10 5e-5 5e-5 10; } | xargs -P "$PAR" -I{} bash -c '{}'
tar czf $OUT/results6.tar.gz --exclude='*.safetensors' -C /tmp results6
