#!/usr/bin/env bash
# One GPU call (run from the repo root on the lent machine; carry gpu/model, gpu/data and dist/):
#   1. benchmarks side by side (s3pet bench vs tools/bench_peer.py), before anything else loads the GPU;
#   2. the foundation parity runs (s3pet train vs tools/parity.py, 4 tasks x full/lora/bitfit);
#   3. S3PET-M vs random-M (MRPC, CoLA, 3 seeds) and first-order searches for cost.
# Results stream into $OUT/results.tar.gz every 20 s, so a call cut short still returns what finished.
#   tools/gpu/session.sh SEARCH_EPOCHS RETRAIN_EPOCHS LR
set -uo pipefail
SE=${1:-10}; RE=${2:-10}; LR=${3:-1e-3}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=/tmp/results; mkdir -p $R
( while true; do tar czf $OUT/results.tar.gz --exclude='*.safetensors' -C /tmp results 2>/dev/null; sleep 20; done ) &
TAR=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $R/gpu.txt
$BIN bench --device cuda --shape minilm --workload all --batch-size 32 --seq-len 128 --warmup 3 --steps 20 > $R/bench-s3pet-minilm.jsonl 2> $R/bench-s3pet.err
python3 tools/bench_peer.py --device cuda --shape minilm --workload full,lora --batch-size 32 --seq-len 128 --warmup 3 --steps 20 > $R/bench-peer-minilm.jsonl 2> $R/bench-peer.err
$BIN bench --device cuda --shape bert-base,bert-large --workload full,lora,retrain,search1,search2 --batch-size 32 --seq-len 128 --warmup 3 --steps 10 >> $R/bench-s3pet-big.jsonl 2>> $R/bench-s3pet.err
python3 tools/bench_peer.py --device cuda --shape bert-base,bert-large --workload full,lora --batch-size 32 --seq-len 128 --warmup 3 --steps 10 >> $R/bench-peer-big.jsonl 2>> $R/bench-peer.err
tools/gpu/parity_jobs.sh $BIN $R/parity "mrpc cola sst2 rte" 42 "full lora bitfit" 3 2e-5 5e-4 | xargs -P 8 -I{} bash -c '{}' &
P1=$!
tools/gpu/search_vs_random.sh $BIN $R/search "mrpc cola" "42 43 44" $SE $RE 2 6 --lr $LR &
P3=$!
tools/gpu/search_vs_random.sh $BIN $R/search "mrpc cola" "42" $SE $RE 1 2 --lr $LR &
P4=$!
wait $P1 $P3 $P4
kill $TAR
find $R -name weights.safetensors -delete; find $R -name checkpoint.safetensors -delete
tar czf $OUT/results.tar.gz --exclude='*.safetensors' -C /tmp results
echo done
