#!/usr/bin/env bash
# Performance, session 4: every bench row (full, lora, retrain, search1, search2) on MiniLM, BERT-base and
# BERT-large shapes, s3pet (dist/s3pet-cuda, with peak GPU memory) against tools/bench_peer.py (PyTorch +
# transformers + PEFT, the retrain and search steps rebuilt from s3pet's emitted modules), batch 32 x 128,
# side by side in one call.   tools/gpu/session11.sh fp32|bf16 [WORKLOADS] [SHAPES]
set -uo pipefail
DTYPE=${1:-fp32}
WL=${2:-full,lora,retrain,search1,search2}
SHAPES=${3:-minilm,bert-base,bert-large}
source scripts/gpu-env.sh
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv
end=$(( $(date +%s) + ${LIMIT:-560} ))
for shape in ${SHAPES//,/ }; do  # one compare_bench per shape: each writes its rows when it ends
  left=$(( end - $(date +%s) )); [ $left -gt 10 ] || break
  PYTHONUNBUFFERED=1 timeout $left python3 tools/compare_bench.py --s3pet dist/s3pet-cuda --python python3 \
    --shape "$shape" --workload "$WL" --batch-size 32 --seq-len 128 --warmup 2 --steps 5 --device cuda \
    --dtype "$DTYPE" --hardware h100 --json "$OUT/perf-$DTYPE.json" 2>&1 | tee -a "$OUT/perf-$DTYPE.log"
done
