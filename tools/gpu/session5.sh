#!/usr/bin/env bash
# Fifth GPU call: five more seeds (45-49) of CoLA full fine-tuning and LoRA, recipe B of docs/PARITY.md,
# both sides, to tell a systematic CoLA gap from seed noise. Results in $OUT/results5.tar.gz.
set -uo pipefail
PAR=${1:-12}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=/tmp/results5; mkdir -p $R/parity
J=()
for s in 45 46 47 48 49; do
  $BIN -q data export --task cola --seed $s --data-dir gpu/data --out gpu/exports/cola-$s > /dev/null
  for m in full lora; do
    lr=1e-3; [ "$m" = full ] && lr=5e-5
    J+=("$BIN -q train --task cola --method $m --epochs 5 --batch-size 32 --seed $s --lr $lr --device cuda --model gpu/model --data-dir gpu/data --out $R/parity/s3pet-cola-$m-$s > $R/parity/s3pet-cola-$m-$s.log 2>&1")
    J+=("python3 tools/parity.py --data gpu/exports/cola-$s --model gpu/model --method $m --epochs 5 --batch-size 32 --lr $lr --seed $s --device cuda --out $R/parity/peer-cola-$m-$s.json > $R/parity/peer-cola-$m-$s.log 2>&1")
  done
done
printf '%s\n' "${J[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
tar czf $OUT/results5.tar.gz --exclude='*.safetensors' -C /tmp results5
echo done
