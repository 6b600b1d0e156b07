#!/usr/bin/env bash
# Issue 15's bench shapes on one H200: mpnet-base, roberta-base and deberta-v3-base (random weights of the
# real configs) against transformers + PEFT (tools/bench_peer.py: plain loops for full and LoRA, the same
# algorithm for retrain and search), fp32, batch 32 x 128; then s3pet's MPNet retrain and second-order
# search steps in fp32 against `--precision bf16` (the MPNet paper plan's choice, plans/paper-mpnet.toml),
# side by side. Carry dist/s3pet-cuda. Writes $OUT/perf.json (compare_bench rows), $OUT/precision.jsonl
# and $OUT/shapes15.log. LIMIT (seconds, default 300) bounds it. SHAPES (default all three) picks the shapes;
# GRAPH_CHECK=1 first runs `s3pet bench --graph-check` (search1, search2: CUDA-graph steps against eager
# steps from the same start) on each of them ($OUT/graph-check.jsonl); PRECISION=0 leaves out the MPNet
# fp32 / bf16 rows.
set -uo pipefail
source scripts/gpu-env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/shapes15}
mkdir -p "$OUT"
end=$(( $(date +%s) + ${LIMIT:-300} ))
left() { echo $(( end - $(date +%s) )); }
S3=dist/s3pet-cuda
{
  for shape in ${SHAPES:-mpnet-base roberta-base deberta-v3-base}; do
    [ "${GRAPH_CHECK:-}" = 1 ] || break
    timeout "$(( $(left) / 2 ))" $S3 bench -q --shape $shape --device cuda --batch-size 32 --seq-len 128 \
      --workload search1,search2 --steps 4 --graph-check | tee -a "$OUT/graph-check.jsonl"
    echo "graph check $shape: exit ${PIPESTATUS[0]}"
  done
  for shape in ${SHAPES:-mpnet-base roberta-base deberta-v3-base}; do
    budget=$(( $(left) - ${RESERVE:-40} ))
    [ "$budget" -gt 20 ] || { echo "skipped (no time left): $shape"; continue; }
    timeout "$budget" python3 tools/compare_bench.py --s3pet $S3 --python python3 --device cuda --hardware h200 \
      --batch-size 32 --seq-len 128 --json "$OUT/perf.json" --shape $shape \
      --workload full,lora,retrain,search1,search2 --warmup 3 --steps 8
  done
  for p in fp32 bf16 fp32 bf16; do
    [ "$(left)" -gt 10 ] && [ "${PRECISION:-1}" = 1 ] || break
    timeout "$(left)" $S3 bench -q --shape mpnet-base --device cuda --batch-size 16 --seq-len 128 \
      --workload retrain,search2 --warmup 3 --steps 8 --precision $p | tee -a "$OUT/precision.jsonl"
  done
  echo "shapes15 done, $(left) s left"
} 2>&1 | tee "$OUT/shapes15.log"
