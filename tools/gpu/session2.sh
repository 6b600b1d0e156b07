#!/usr/bin/env bash
# Second GPU call: benchmarks in isolation (s3pet bench vs tools/bench_peer.py), then S3PET-M vs
# random-M (MRPC, CoLA, 3 seeds, order 2) and first-order searches, results streamed to $OUT.
#   tools/gpu/session2.sh SEARCH_EPOCHS RETRAIN_EPOCHS LR PARALLEL
set -uo pipefail
SE=${1:-10}; RE=${2:-10}; LR=${3:-1e-3}; PAR=${4:-8}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=/tmp/results2; mkdir -p $R
( while true; do tar czf $OUT/results2.tar.gz --exclude='*.safetensors' -C /tmp results2 2>/dev/null; sleep 20; done ) &
TAR=$!
for shape in minilm bert-base bert-large; do
  steps=20; [ $shape = bert-large ] && steps=10
  $BIN bench --device cuda --shape $shape --workload all --batch-size 32 --seq-len 128 --warmup 3 --steps $steps >> $R/bench-s3pet.jsonl 2>> $R/bench.err
  for dt in fp32 bf16; do
    python3 tools/bench_peer.py --device cuda --shape $shape --workload full,lora --dtype $dt --batch-size 32 --seq-len 128 --warmup 3 --steps $steps >> $R/bench-peer.jsonl 2>> $R/bench.err
  done
done
tools/gpu/search_vs_random.sh $BIN $R/search "mrpc cola" "42 43 44" $SE $RE 2 $PAR --lr $LR &
P3=$!
tools/gpu/search_vs_random.sh $BIN $R/search "mrpc cola" "42" $SE $RE 1 2 --lr $LR &
P4=$!
wait $P3 $P4
kill $TAR
tar czf $OUT/results2.tar.gz --exclude='*.safetensors' -C /tmp results2
echo done
