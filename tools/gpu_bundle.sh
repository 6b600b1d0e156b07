#!/usr/bin/env bash
# Prepares gpu/ (git-ignored) for runs on the lent GPU machine, whose calls carry at most 64 MiB:
#   gpu/model  all-MiniLM-L6-v2 with fp16 weights (45 MB; both s3pet and the peer load them as fp32)
#   gpu/data   the GLUE files of the tasks named (read from ../shared/data)
#   gpu/exports/<task>-<seed>  `s3pet data export` of each task for tools/parity.py
# Usage: tools/gpu_bundle.sh "mrpc cola sst2 rte" "42"  [extra s3pet data-export args]
#        (seeds "none": data files only, no exports; the paper plan: "rte mrpc cola stsb cb copa sst2" none)
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-"mrpc cola sst2 rte"}
SEEDS=${2:-"42"}
shift $(( $# > 2 ? 2 : $# ))
DATA=${S3PET_DATA:-../shared/data}
mkdir -p gpu/model gpu/data gpu/exports
cp models/all-MiniLM-L6-v2/{config.json,tokenizer.json} gpu/model/
tools/.venv/bin/python - <<'PY'
import numpy as np
from safetensors.numpy import load_file, save_file
t = load_file("models/all-MiniLM-L6-v2/model.safetensors")
save_file({k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in t.items()}, "gpu/model/model.safetensors")
PY
declare -A DIRS=([mrpc]=glue/MRPC [cola]=glue/CoLA [sst2]=glue/SST-2 [rte]=glue/RTE [stsb]=glue/STS-B
                 [wnli]=glue/WNLI [cb]=superglue/CB [copa]=superglue/COPA)
for t in $TASKS; do
  d=${DIRS[$t]}
  mkdir -p "gpu/data/$d"
  case $d in
    glue/*) cp "$DATA/$d/train.tsv" "$DATA/$d/dev.tsv" "gpu/data/$d/" ;;
    *) cp "$DATA/$d/train.jsonl" "$DATA/$d/val.jsonl" "gpu/data/$d/" ;;
  esac
  [ "$SEEDS" = "none" ] && continue
  for s in $SEEDS; do
    target/release/s3pet -q data export --task "$t" --seed "$s" --data-dir "$DATA" --out "gpu/exports/$t-$s" "$@" >/dev/null
  done
done
du -sh gpu/*
