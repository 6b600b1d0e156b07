#!/usr/bin/env bash
# Prepares gpu/ (git-ignored) for tools/gpu/session13.sh: RTE's files (from ../shared/data or $S3PET_DATA)
# and all-MiniLM-L6-v2's config.json and tokenizer.json (the run makes random weights there: about 1.5 MB
# to carry instead of 90). Then carry gpu, dist/s3pet-cuda and, for the before/after rows,
# dist/s3pet-cuda-base (scripts/build-cuda.sh at commit 35c9ebf, copied to that name).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${S3PET_DATA:-../shared/data}
mkdir -p gpu/data/glue/RTE gpu/model-cfg
cp "$DATA/glue/RTE/train.tsv" "$DATA/glue/RTE/dev.tsv" gpu/data/glue/RTE/
cp models/all-MiniLM-L6-v2/config.json models/all-MiniLM-L6-v2/tokenizer.json gpu/model-cfg/
du -sh gpu/data gpu/model-cfg dist/* 2>/dev/null
