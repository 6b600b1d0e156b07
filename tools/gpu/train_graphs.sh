#!/usr/bin/env bash
# The training step as CUDA graphs (the default on CUDA since this script's run of 2026-12-01;
# S3PET_CUDA_GRAPHS=search keeps them to the search's steps), and the
# whole-run row of issue 14 again now that real searches replay as graphs, on a warm H200 that holds the
# real MPNet (gpu/mpnet, joined by mpnet_quality.sh assemble), gpu/data and gpu/model-cfg (prep13.sh):
#   1. `s3pet bench --graph-check` for retrain and lora on mpnet-base, fp32 and bf16 (graph steps of two
#      shapes against eager steps from the same start)           -> $OUT/train-graph-check.jsonl
#   2. a whole `s3pet run` (S3PET-M search + retrain) against one LoRA run at RTE's full schedule
#      (compare_bench.py --whole-run; random-weight MiniLM: timing does not depend on the values),
#      graphs for the search's steps only (S3PET_CUDA_GRAPHS=search) -> $OUT/whole-run-search-graphs.json
#   3. a real retraining on MRPC (random-M at 1.39e-4, bf16, lr 3e-3, STEPS steps, default 300), alone,
#      eager then with graphs, then PAR (default 8) of each at once (seeds 1..PAR): is the GPU's
#      throughput with many cells at once (the paper plan's case) better with graphs? -> $OUT/train-graph-runs.jsonl
#      (per run: variant, parallel, seed, seconds, steps, cuda_graphs; per batch of runs: its wall seconds)
#   4. bench rows retrain, lora: eager against graphs, side by side -> $OUT/train-graph-bench.jsonl
#   5. the whole-run row of 2 as by default (training steps as graphs too) -> $OUT/whole-run-all-graphs.json
# Each step is skipped when fewer seconds than it needs are left of LIMIT (default 540).
# It ends with a verdict line: `graphs` when every check passed, no run failed and the PAR graph runs
# finished sooner than the PAR eager ones, else `eager`.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu/out}
BIN=${BIN:-dist/s3pet-cuda}
mkdir -p "$OUT" gpu/train-graphs
source scripts/gpu-env.sh
unpack_binary || exit 1
end=$(( $(date +%s) + ${LIMIT:-540} ))
left() { echo $(( end - $(date +%s) )); }
# true when NEED seconds are left; else notes the skipped step
room() { [ "$(left)" -ge "$1" ] || { echo "skipped, $(left) s left: $2" >> "$OUT/train-graphs.log"; return 1; }; }
log=$OUT/train-graphs.log
checks_ok=1
for p in fp32 bf16; do
  room 60 "graph check $p" || { checks_ok=0; continue; }
  S3PET_CUDA_GRAPHS=on timeout 90 "$BIN" bench -q --shape mpnet-base --device cuda --batch-size 32 --seq-len 128 \
    --workload retrain,lora --graph-check --precision "$p" >> "$OUT/train-graph-check.jsonl" 2>> "$log"
  rc=$?
  echo "graph check $p: exit $rc" >> "$log"
  [ $rc = 0 ] || checks_ok=0
done
whole_run() {  # label, graphs setting
  room 200 "whole run ($1)" || return
  local m=/tmp/tg-minilm
  [ -f $m/model.safetensors ] || python3 tools/gpu/random_minilm.py $m >> "$log" 2>&1
  S3PET_CUDA_GRAPHS=$2 timeout $(( $(left) - 10 )) python3 tools/compare_bench.py --s3pet "$BIN" --python python3 \
    --device cuda --hardware h200 --workload "" --whole-run rte --model $m --data-dir gpu/data \
    --json "$OUT/whole-run-$1.json" >> "$log" 2>&1
  echo "whole run $1: exit $?" >> "$log"
}
whole_run search-graphs search
# one retraining: variant (eager / graphs), seed, parallel
retrain() {
  local dir=gpu/train-graphs/$1.p$3.s$2 env=search
  [ "$1" = graphs ] && env=on
  rm -rf "$dir"
  S3PET_CUDA_GRAPHS=$env timeout 150 "$BIN" run -q --task mrpc --strategy random --space mix --budget 1.39e-4 \
    --seed "$2" --model gpu/mpnet --data-dir gpu/data --device cuda --precision bf16 --lr 3e-3 \
    --max-steps "${STEPS:-300}" --threads 1 --out "$dir" > "$dir.log" 2>&1
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
declare -A wall
if room 200 "real retrainings"; then
  for variant in eager graphs; do retrain $variant 1 1; done
  for variant in eager graphs; do
    start=$(date +%s.%N)
    for s in $(seq 1 "${PAR:-8}"); do retrain $variant "$s" "${PAR:-8}" & done
    wait
    wall[$variant]=$(python3 -c "print($(date +%s.%N) - $start)")
    echo "{\"batch\": \"$variant\", \"parallel\": ${PAR:-8}, \"wall_seconds\": ${wall[$variant]}}" >> "$OUT/train-graph-runs.jsonl"
  done
fi
for p in bf16 fp32; do
  for graphs in search on search on; do
    room 40 "bench $p $graphs" || break
    S3PET_CUDA_GRAPHS=$graphs timeout 60 "$BIN" bench -q --shape mpnet-base --device cuda --batch-size 32 \
      --seq-len 128 --workload retrain,lora --warmup 5 --steps 20 --precision "$p" \
      >> "$OUT/train-graph-bench.jsonl" 2>> "$log"
  done
done
whole_run all-graphs on
verdict=eager
if [ $checks_ok = 1 ] && [ -n "${wall[graphs]:-}" ] && ! grep -q '"error"' "$OUT/train-graph-runs.jsonl" &&
   python3 -c "import sys; sys.exit(0 if ${wall[graphs]} < ${wall[eager]} else 1)"; then
  verdict=graphs
fi
echo "verdict: $verdict ($(left) s left)" | tee -a "$log"
cat "$OUT/train-graph-check.jsonl" "$OUT/train-graph-runs.jsonl" "$OUT"/whole-run-*.json 2>/dev/null
