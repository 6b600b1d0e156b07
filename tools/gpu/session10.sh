#!/usr/bin/env bash
# Parity, session 4: MRPC full fine-tuning, a learning-rate / schedule sweep on seeds 42-46, both sides
# (s3pet train and tools/parity.py on the same exported examples). The recipe is chosen afterwards by
# s3pet's mean dev F1 (tools/parity_table.py); test F1 is reported for that recipe only.
#   D: 10 epochs, batch 16, lr 5e-5, warm-up 0.1    E: 10 epochs, batch 16, lr 1e-4, warm-up 0.1
#   F: 20 epochs, batch 32, lr 1e-4, warm-up 0.1 (the paper's MRPC schedule length)
set -uo pipefail
PAR=${1:-15}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=gpu/results10
mkdir -p $R
jobs=()
for s in 42 43 44 45 46; do
  [ -d gpu/exports/mrpc-$s ] || $BIN -q data export --task mrpc --seed $s --data-dir gpu/data --out gpu/exports/mrpc-$s > /dev/null
  for r in "D 10 16 5e-5" "E 10 16 1e-4" "F 20 32 1e-4"; do
    set -- $r
    n=mrpc-full$1-$s
    jobs+=("$BIN -q train --task mrpc --method full --epochs $2 --batch-size $3 --warmup-ratio 0.1 --seed $s --lr $4 --device cuda --model gpu/model --data-dir gpu/data --out $R/s3pet-$n > $R/s3pet-$n.log 2>&1")
    jobs+=("python3 tools/parity.py --data gpu/exports/mrpc-$s --model gpu/model --method full --epochs $2 --batch-size $3 --warmup-ratio 0.1 --lr $4 --seed $s --device cuda --out $R/peer-$n.json > $R/peer-$n.log 2>&1")
  done
done
start=$(date +%s)
printf "%s\n" "${jobs[@]}" | timeout ${LIMIT:-500} xargs -P "$PAR" -I{} bash -c '{}'
echo "wall $(( $(date +%s) - start )) s"
tar czf $OUT/results10.tar.gz --exclude='*.safetensors' $R
ls -la $OUT
