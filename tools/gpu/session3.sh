#!/usr/bin/env bash
# Third GPU call: CoLA S3PET-M order-2 searches (3 seeds), the parity runs for seeds 43 and 44 (both
# sides, same recipe as tools/gpu/*_parity.sh), and full fine-tuning with 5 epochs at lr 5e-5 on MRPC
# (3 seeds, both sides). Results stream into $OUT/results3.tar.gz.
#   tools/gpu/session3.sh SEARCH_EPOCHS RETRAIN_EPOCHS LR PARALLEL
set -uo pipefail
SE=${1:-10}; RE=${2:-10}; LR=${3:-1e-3}; PAR=${4:-8}
source scripts/gpu-env.sh
BIN=dist/s3pet-cuda
R=/tmp/results3; mkdir -p $R/search $R/parity
( while true; do tar czf $OUT/results3.tar.gz --exclude='*.safetensors' -C /tmp results3 2>/dev/null; sleep 20; done ) &
TAR=$!
for s in 42 43 44; do
  $BIN -q run --task cola --space mix --budget 1.39e-4 --seed $s --device cuda --model gpu/model --data-dir gpu/data --batch-size 32 --lr $LR --strategy s3pet --order 2 --search-epochs $SE --retrain-epochs $RE --out $R/search/s3pet-o2-cola-$s > $R/search/s3pet-o2-cola-$s.log 2>&1 &
done
J=()
for s in 43 44; do
  for t in mrpc cola sst2 rte; do
    extra=""; [ "$t" = sst2 ] && extra="--max-train-examples 4000"
    [ -d gpu/exports/$t-$s ] || $BIN -q data export --task $t --seed $s --data-dir gpu/data $extra --out gpu/exports/$t-$s > /dev/null
    for m in full lora bitfit; do
      lr=5e-4; [ "$m" = full ] && lr=2e-5
      J+=("$BIN -q train --task $t --method $m --epochs 3 --batch-size 32 --seed $s --lr $lr --device cuda --model gpu/model --data-dir gpu/data $extra --out $R/parity/s3pet-$t-$m-$s > $R/parity/s3pet-$t-$m-$s.log 2>&1")
      J+=("python3 tools/parity.py --data gpu/exports/$t-$s --model gpu/model --method $m --epochs 3 --batch-size 32 --lr $lr --seed $s --device cuda --out $R/parity/peer-$t-$m-$s.json > $R/parity/peer-$t-$m-$s.log 2>&1")
    done
  done
done
for s in 42 43 44; do
  [ -d gpu/exports/mrpc-$s ] || $BIN -q data export --task mrpc --seed $s --data-dir gpu/data --out gpu/exports/mrpc-$s > /dev/null
  J+=("$BIN -q train --task mrpc --method full --epochs 5 --lr 5e-5 --batch-size 32 --seed $s --device cuda --model gpu/model --data-dir gpu/data --out $R/parity/s3pet-mrpc-full5-$s > $R/parity/s3pet-mrpc-full5-$s.log 2>&1")
  J+=("python3 tools/parity.py --data gpu/exports/mrpc-$s --model gpu/model --method full --epochs 5 --batch-size 32 --lr 5e-5 --seed $s --device cuda --out $R/parity/peer-mrpc-full5-$s.json > $R/parity/peer-mrpc-full5-$s.log 2>&1")
done
printf '%s\n' "${J[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
wait
kill $TAR
tar czf $OUT/results3.tar.gz --exclude='*.safetensors' -C /tmp results3
echo done
