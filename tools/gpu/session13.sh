#!/usr/bin/env bash
# Performance, issue #14 (a fast supernet), on one H200: every GPU row of the target table in one
# call, side by side, rows written under $OUT as they finish (at most 6 files):
#   graph_check.jsonl  the CUDA-graph search step against the eager one (s3pet bench --graph-check)
#   perf.json          compare_bench.py rows (fp32 MiniLM / BERT-base 32 x 128, with the pre-change
#                      binary when carried; bf16 BERT-large LoRA with MFU; RTE run vs LoRA run)
#   session13.log      everything printed
# Carry: dist/s3pet-cuda (scripts/build-cuda.sh), optionally dist/s3pet-cuda-base (the same script at
# commit 35c9ebf), and gpu/ from tools/gpu/prep13.sh (RTE data, MiniLM config and tokenizer: the RTE runs
# use random weights made here, timing does not depend on their values). Needs PyTorch 2.11 + CUDA 13,
# transformers and PEFT (the machine's python3). About 7.5 minutes; LIMIT (seconds, default 460) bounds it;
# each phase stops in time for the later ones (RESERVE), and compare_bench.py writes each row as it ends.
#   tools/gpu/session13.sh
set -uo pipefail
source scripts/gpu-env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/session13}
mkdir -p "$OUT"
LOG=$OUT/session13.log
end=$(( $(date +%s) + ${LIMIT:-460} ))
left() { echo $(( end - $(date +%s) )); }
S3=dist/s3pet-cuda
BASE=()
[ -x dist/s3pet-cuda-base ] && BASE=(--baseline dist/s3pet-cuda-base)
compare() {  # one compare_bench call, cut off at the time left
  local budget=$(( $(left) - ${RESERVE:-0} ))
  [ "$budget" -gt 20 ] || { echo "skipped (no time left): $*" | tee -a "$LOG"; return; }
  timeout "$budget" python3 tools/compare_bench.py --s3pet $S3 --python python3 --device cuda --hardware h200 \
    --batch-size 32 --seq-len 128 --json "$OUT/perf.json" "$@" 2>&1 | tee -a "$LOG"
}
{
  nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv
  # 1. the CUDA-graph step against the eager one (dropout off, same start, 5 steps; fails beyond 1e-4)
  timeout 90 $S3 bench -q --shape minilm --workload search1,search2 --device cuda --batch-size 32 --seq-len 128 \
    --steps 5 --graph-check | tee "$OUT/graph_check.jsonl"
  echo "graph check exit ${PIPESTATUS[0]}"
  # the same search rows without graphs (eager), for the graphs' share of the speed-up; and second order
  # with the w+ / w- passes apart (--hvp-replicas off: less memory, more kernels)
  timeout 60 $S3 bench -q --shape minilm --workload search1,search2 --device cuda --batch-size 32 --seq-len 128 \
    --warmup 3 --steps 10 --cuda-graphs off | tee "$OUT/nographs.jsonl"
  timeout 40 $S3 bench -q --shape minilm --workload search2 --device cuda --batch-size 32 --seq-len 128 \
    --warmup 3 --steps 10 --hvp-replicas off | tee -a "$OUT/nographs.jsonl"
} 2>&1 | tee -a "$LOG"
# 2. MiniLM fp32: every workload, the pre-change binary beside it (search step speed-up, memory)
RESERVE=220 compare --shape minilm --workload full,lora,retrain,search1,search2 --warmup 3 --steps 10 "${BASE[@]}"
# 3. BERT-base fp32: LoRA against the plain PEFT loop, search over retrain
RESERVE=120 compare --shape bert-base --workload lora,retrain,search1,search2 --warmup 3 --steps 8
# 4. BERT-large bf16 LoRA (--precision bf16 against autocast): model FLOP utilisation of 790 TFLOP/s
RESERVE=80 compare --shape bert-large --workload lora --dtype bf16 --warmup 3 --steps 8 --peak-tflops 790
# 5. a whole `s3pet run` (S3PET-M search + retrain) against one LoRA run, RTE's schedule cut to 4 epochs
#    each (search, retrain and LoRA alike, so the ratio is the paper schedule's), MiniLM shape
if [ -d gpu/data ] && [ -f gpu/model-cfg/config.json ]; then
  M=/tmp/s13-model
  python3 tools/gpu/random_minilm.py $M 2>&1 | tee -a "$LOG"
  compare --workload "" --whole-run rte --model $M --data-dir gpu/data --whole-run-arg=--epochs --whole-run-arg=4
else
  echo "no gpu/ bundle (tools/gpu/prep13.sh): whole-run row skipped" | tee -a "$LOG"
fi
echo "session13 done, $(left) s left" | tee -a "$LOG"
