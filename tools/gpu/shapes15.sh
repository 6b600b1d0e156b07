#!/usr/bin/env bash
# Issue 15's bench shapes on one H200: mpnet-base, roberta-base and deberta-v3-base (random weights of the
# real configs) against transformers + PEFT (tools/bench_peer.py: plain loops for full and LoRA, the same
# algorithm for retrain and search), fp32, batch 32 x 128; then s3pet's MPNet retrain and second-order
# search steps in fp32 against `--precision bf16` (the MPNet paper plan's choice, plans/paper-mpnet.toml),
# side by side. Carry dist/s3pet-cuda. Writes $OUT/perf.json (compare_bench rows), $OUT/precision.jsonl
# and $OUT/shapes15.log. LIMIT (seconds, default 300) bounds it.
set -uo pipefail
source scripts/gpu-env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/shapes15}
mkdir -p "$OUT"
end=$(( $(date +%s) + ${LIMIT:-300} ))
left() { echo $(( end - $(date +%s) )); }
S3=dist/s3pet-cuda
{
  for shape in mpnet-base roberta-base deberta-v3-base; do
    budget=$(( $(left) - ${RESERVE:-40} ))
    [ "$budget" -gt 20 ] || { echo "skipped (no time left): $shape"; continue; }
    timeout "$budget" python3 tools/compare_bench.py --s3pet $S3 --python python3 --device cuda --hardware h200 \
      --batch-size 32 --seq-len 128 --json "$OUT/perf.json" --shape $shape \
      --workload full,lora,retrain,search1,search2 --warmup 3 --steps 8
  done
  for p in fp32 bf16 fp32 bf16; do
    [ "$(left)" -gt 10 ] || break
    timeout "$(left)" $S3 bench -q --shape mpnet-base --device cuda --batch-size 16 --seq-len 128 \
      --workload retrain,search2 --warmup 3 --steps 8 --precision $p | tee -a "$OUT/precision.jsonl"
  done
  echo "shapes15 done, $(left) s left"
} 2>&1 | tee "$OUT/shapes15.log"
