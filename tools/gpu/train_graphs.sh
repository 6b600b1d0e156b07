#!/usr/bin/env bash
# The training step as CUDA graphs (S3PET_CUDA_GRAPHS=all; off by default until checked here) on a warm
# H200 that holds the real MPNet (gpu/mpnet, joined by mpnet_quality.sh assemble) and gpu/data:
#   1. `s3pet bench --graph-check` for retrain and lora on mpnet-base, fp32 and bf16 (graph steps of two
#      shapes against eager steps from the same start)           -> $OUT/train-graph-check.jsonl
#   2. bench rows retrain, lora: eager against graphs, side by side -> $OUT/train-graph-bench.jsonl
#   3. a real retraining on MRPC (random-M at 1.39e-4, bf16, lr 3e-3, STEPS steps, default 400), alone,
#      eager then with graphs, then PAR (default 8) of each at once (seeds 1..PAR): is the GPU's
#      throughput with many cells at once (the paper plan's case) better with graphs? -> $OUT/train-graph-runs.jsonl
#      (per run: variant, parallel, seed, seconds, steps, cuda_graphs; per batch of runs: its wall seconds)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu/out}
BIN=${BIN:-dist/s3pet-cuda}
mkdir -p "$OUT"
source scripts/gpu-env.sh
for p in fp32 bf16; do
  S3PET_CUDA_GRAPHS=all "$BIN" bench -q --shape mpnet-base --device cuda --batch-size 32 --seq-len 128 \
    --workload retrain,lora --graph-check --precision "$p" >> "$OUT/train-graph-check.jsonl" 2>> "$OUT/train-graphs.log"
  echo "graph check $p: exit $?" >> "$OUT/train-graphs.log"
done
for p in bf16 fp32; do
  for graphs in on all on all; do
    S3PET_CUDA_GRAPHS=$graphs "$BIN" bench -q --shape mpnet-base --device cuda --batch-size 32 --seq-len 128 \
      --workload retrain,lora --warmup 5 --steps 20 --precision "$p" >> "$OUT/train-graph-bench.jsonl" 2>> "$OUT/train-graphs.log"
  done
done
# one retraining: variant (eager / graphs), seed, parallel
retrain() {
  local dir=gpu/train-graphs/$1.p$3.s$2 env=on
  [ "$1" = graphs ] && env=all
  rm -rf "$dir"
  S3PET_CUDA_GRAPHS=$env "$BIN" run -q --task mrpc --strategy random --space mix --budget 1.39e-4 --seed "$2" \
    --model gpu/mpnet --data-dir gpu/data --device cuda --precision bf16 --lr 3e-3 --max-steps "${STEPS:-400}" \
    --threads 1 --out "$dir" > "$dir.log" 2>&1
  python3 - "$dir/report.json" "$1" "$2" "$3" >> "$OUT/train-graph-runs.jsonl" <<'EOF'
import json, sys
path, variant, seed, par = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
try:
    r = json.load(open(path))["retrain"]
    row = {k: r.get(k) for k in ("steps", "train_seconds", "cuda_graphs", "peak_gpu_bytes", "dev")}
except (OSError, KeyError, ValueError) as e:
    row = {"error": str(e)}
print(json.dumps(dict(variant=variant, seed=seed, parallel=par, **row)))
EOF
}
mkdir -p gpu/train-graphs
for variant in eager graphs; do
  retrain $variant 1 1
done
for variant in eager graphs; do
  start=$(date +%s.%N)
  for s in $(seq 1 "${PAR:-8}"); do retrain $variant "$s" "${PAR:-8}" & done
  wait
  python3 -c "import json; print(json.dumps({'batch': '$variant', 'parallel': ${PAR:-8}, 'wall_seconds': $(date +%s.%N) - $start}))" \
    >> "$OUT/train-graph-runs.jsonl"
done
cat "$OUT/train-graph-check.jsonl" "$OUT/train-graph-runs.jsonl"
