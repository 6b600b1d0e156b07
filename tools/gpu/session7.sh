#!/usr/bin/env bash
# Seventh GPU call: five more seeds (45-49) of RTE full / LoRA / BitFit, recipe B of docs/PARITY.md,
# both sides (RTE is near chance for this model: single seeds are noise). $OUT/results7.tar.gz.
set -uo pipefail
PAR=${1:-14}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=/tmp/results7; mkdir -p $R/parity
J=()
for s in 45 46 47 48 49; do
  $BIN -q data export --task rte --seed $s --data-dir gpu/data --out gpu/exports/rte-$s > /dev/null
  for m in full lora bitfit; do
    lr=1e-3; [ "$m" = full ] && lr=5e-5
    J+=("$BIN -q train --task rte --method $m --epochs 5 --batch-size 32 --seed $s --lr $lr --device cuda --model gpu/model --data-dir gpu/data --out $R/parity/s3pet-rte-$m-$s > $R/parity/s3pet-rte-$m-$s.log 2>&1")
    J+=("python3 tools/parity.py --data gpu/exports/rte-$s --model gpu/model --method $m --epochs 5 --batch-size 32 --lr $lr --seed $s --device cuda --out $R/parity/peer-rte-$m-$s.json > $R/parity/peer-rte-$m-$s.log 2>&1")
  done
done
printf '%s\n' "${J[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
tar czf $OUT/results7.tar.gz --exclude='*.safetensors' -C /tmp results7
echo done
