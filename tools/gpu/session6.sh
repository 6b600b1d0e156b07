#!/usr/bin/env bash
# Sixth GPU call: recipe B of docs/PARITY.md on RTE and SST-2 (first 4,000), seeds 42-44, both sides;
# and MRPC full fine-tuning for 10 epochs at lr 5e-5 (seeds 42-44, both sides). $OUT/results6.tar.gz.
set -uo pipefail
PAR=${1:-12}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=/tmp/results6; mkdir -p $R/parity
J=()
for s in 42 43 44; do
  for t in rte sst2; do
    extra=""; [ "$t" = sst2 ] && extra="--max-train-examples 4000"
    $BIN -q data export --task $t --seed $s --data-dir gpu/data $extra --out gpu/exports/$t-$s > /dev/null
    for m in full lora bitfit; do
      lr=1e-3; [ "$m" = full ] && lr=5e-5
      J+=("$BIN -q train --task $t --method $m --epochs 5 --batch-size 32 --seed $s --lr $lr --device cuda --model gpu/model --data-dir gpu/data $extra --out $R/parity/s3pet-$t-$m-$s > $R/parity/s3pet-$t-$m-$s.log 2>&1")
      J+=("python3 tools/parity.py --data gpu/exports/$t-$s --model gpu/model --method $m --epochs 5 --batch-size 32 --lr $lr --seed $s --device cuda --out $R/parity/peer-$t-$m-$s.json > $R/parity/peer-$t-$m-$s.log 2>&1")
    done
  done
  $BIN -q data export --task mrpc --seed $s --data-dir gpu/data --out gpu/exports/mrpc-$s > /dev/null
  J+=("$BIN -q train --task mrpc --method full --epochs 10 --lr 5e-5 --batch-size 32 --seed $s --device cuda --model gpu/model --data-dir gpu/data --out $R/parity/s3pet-mrpc-full10-$s > $R/parity/s3pet-mrpc-full10-$s.log 2>&1")
  J+=("python3 tools/parity.py --data gpu/exports/mrpc-$s --model gpu/model --method full --epochs 10 --batch-size 32 --lr 5e-5 --seed $s --device cuda --out $R/parity/peer-mrpc-full10-$s.json > $R/parity/peer-mrpc-full10-$s.log 2>&1")
done
printf '%s\n' "${J[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
tar czf $OUT/results6.tar.gz --exclude='*.safetensors' -C /tmp results6
echo done
