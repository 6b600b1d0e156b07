#!/usr/bin/env bash
# Fourth GPU call: the parity table on MRPC and CoLA with a recipe that leaves the underfit regime:
# 5 epochs, lr 5e-5 (full) / 1e-3 (lora, bitfit), 3 seeds, both sides. Results in $OUT/results4.tar.gz.
set -uo pipefail
PAR=${1:-12}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=/tmp/results4; mkdir -p $R/parity
( while true; do tar czf $OUT/results4.tar.gz --exclude='*.safetensors' -C /tmp results4 2>/dev/null; sleep 20; done ) &
TAR=$!
J=()
for s in 42 43 44; do
  for t in cola mrpc; do
    [ -d gpu/exports/$t-$s ] || $BIN -q data export --task $t --seed $s --data-dir gpu/data --out gpu/exports/$t-$s > /dev/null
    for m in full lora bitfit; do
      lr=1e-3; [ "$m" = full ] && lr=5e-5
      J+=("$BIN -q train --task $t --method $m --epochs 5 --batch-size 32 --seed $s --lr $lr --device cuda --model gpu/model --data-dir gpu/data --out $R/parity/s3pet-$t-$m-$s > $R/parity/s3pet-$t-$m-$s.log 2>&1")
      J+=("python3 tools/parity.py --data gpu/exports/$t-$s --model gpu/model --method $m --epochs 5 --batch-size 32 --lr $lr --seed $s --device cuda --out $R/parity/peer-$t-$m-$s.json > $R/parity/peer-$t-$m-$s.log 2>&1")
    done
  done
done
printf '%s\n' "${J[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
kill $TAR
tar czf $OUT/results4.tar.gz --exclude='*.safetensors' -C /tmp results4
echo done
