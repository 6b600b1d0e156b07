#!/usr/bin/env bash
# Performance, session 4, second call: the session-3 binary (dist/s3pet-cuda-base, commit e1c310a) against
# this one on MiniLM fp32 (three interleaved rounds: machine or code?), then the rows that this session's
# changes touch (gates folded into the deltas' factors, chunked/fused AdamW, bf16 weights without their fp32
# originals), each against the peer, side by side.
set -uo pipefail
source scripts/gpu-env.sh
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv
for i in 1 2 3; do
  for b in dist/s3pet-cuda-base dist/s3pet-cuda; do
    $b bench -q --shape minilm --workload full,lora,retrain,search1 --device cuda --batch-size 32 --seq-len 128 \
      --warmup 3 --steps 10 | python3 -c "import sys,json
print('AB $i $b', ' '.join('%s %.1f' % (r['workload'], r['ms_per_step']) for r in map(json.loads, sys.stdin)))"
  done
done 2>&1 | tee $OUT/ab.log
LIMIT=130 tools/gpu/session11.sh fp32 full,lora,retrain,search1,search2 minilm
LIMIT=70 tools/gpu/session11.sh fp32 full,search1 bert-large
LIMIT=100 tools/gpu/session11.sh bf16 lora,retrain bert-base,bert-large
