#!/usr/bin/env bash
# Parity, session 3: MRPC full fine-tuning with recipe C (10 epochs, batch 16, lr 3e-5, warm-up 0.1) on
# seeds 42-46, and RTE BitFit with recipe B (5 epochs, batch 32, lr 1e-3) on 8 more seeds (50-57),
# both sides (s3pet train and tools/parity.py on the same exported examples).
set -uo pipefail
PAR=${1:-14}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=gpu/results9
mkdir -p $R
jobs=()
for s in 42 43 44 45 46; do
  [ -d gpu/exports/mrpc-$s ] || $BIN -q data export --task mrpc --seed $s --data-dir gpu/data --out gpu/exports/mrpc-$s > /dev/null
  n=mrpc-fullC-$s
  jobs+=("$BIN -q train --task mrpc --method full --epochs 10 --batch-size 16 --warmup-ratio 0.1 --seed $s --lr 3e-5 --device cuda --model gpu/model --data-dir gpu/data --out $R/s3pet-$n > $R/s3pet-$n.log 2>&1")
  jobs+=("python3 tools/parity.py --data gpu/exports/mrpc-$s --model gpu/model --method full --epochs 10 --batch-size 16 --warmup-ratio 0.1 --lr 3e-5 --seed $s --device cuda --out $R/peer-$n.json > $R/peer-$n.log 2>&1")
done
for s in 50 51 52 53 54 55 56 57; do
  [ -d gpu/exports/rte-$s ] || $BIN -q data export --task rte --seed $s --data-dir gpu/data --out gpu/exports/rte-$s > /dev/null
  n=rte-bitfit-$s
  jobs+=("$BIN -q train --task rte --method bitfit --epochs 5 --batch-size 32 --seed $s --lr 1e-3 --device cuda --model gpu/model --data-dir gpu/data --out $R/s3pet-$n > $R/s3pet-$n.log 2>&1")
  jobs+=("python3 tools/parity.py --data gpu/exports/rte-$s --model gpu/model --method bitfit --epochs 5 --batch-size 32 --lr 1e-3 --seed $s --device cuda --out $R/peer-$n.json > $R/peer-$n.log 2>&1")
done
printf '%s\n' "${jobs[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
tar czf $OUT/results9.tar.gz --exclude='*.safetensors' $R
ls -la $OUT
