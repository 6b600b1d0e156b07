#!/usr/bin/env bash
# GPU call(s) of session 3. Part "a": the bf16 check (MRPC LoRA, 3 seeds, fp32 vs --backbone-dtype bf16),
# bf16 bench rows side by side with the peer under autocast, then the paper plan for $2 minutes.
# Part "b": the paper plan continued for $2 minutes. Results: gpu/results (kept on the warm machine),
# returned as $OUT/session8-<part>.tar.gz without weights.
set -uo pipefail
PART=${1:-a}
MINUTES=${2:-5}
PAR=${3:-12}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=gpu/results
mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "$PART" = a ]; then
  mkdir -p $R/bf16
  for s in 1 2 3; do
    for dt in fp32 bf16; do
      $BIN -q train --task mrpc --method lora --model gpu/model --data-dir gpu/data --device cuda --seed $s \
        --epochs 3 --lr 1e-3 --batch-size 32 --eval-batch-size 128 --threads 1 --backbone-dtype $dt \
        --overwrite --out $R/bf16/mrpc-lora-$dt-s$s > $R/bf16/mrpc-lora-$dt-s$s.log 2>&1 &
    done
  done
  wait
  python3 tools/compare_bench.py --s3pet $BIN --shape minilm,bert-base,bert-large --workload lora,retrain \
    --batch-size 32 --seq-len 128 --device cuda --dtype bf16 --hardware h100 --json $R/bench_bf16.json \
    > $R/bench_bf16.txt 2>&1
fi
# a watchdog: SIGINT (cells save a checkpoint and stop; the next call resumes them) before the 600 s limit
LEFT=$(( 540 - SECONDS ))
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 10 > $R/gpu-util-$PART.log 2>&1 &
timeout -s INT $LEFT $BIN experiment --plan plans/paper.toml --out $R/paper --max-minutes "$MINUTES" --parallel "$PAR" \
  > $R/experiment-$PART.log 2>&1
tail -3 $R/experiment-$PART.log
kill %1 2>/dev/null; tail -5 $R/gpu-util-$PART.log
wc -l $R/paper/runs.jsonl
tar czf $OUT/session8-$PART.tar.gz --exclude='*.safetensors' $R
ls -la $OUT
