#!/usr/bin/env bash
# Third GPU call: CoLA S3PET-M order-2 searches (3 seeds), the parity runs for seeds 43 and 44 (both
# sides, recipe A of docs/PARITY.md, via tools/gpu/parity_jobs.sh), and full fine-tuning with 5 epochs at lr 5e-5 on MRPC
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
{ tools/gpu/parity_jobs.sh $BIN $R/parity "mrpc cola sst2 rte" "43 44" "full lora bitfit" 3 2e-5 5e-4
  tools/gpu/parity_jobs.sh $BIN $R/parity mrpc "42 43 44" full 5 5e-5 5e-5 5; } | xargs -P "$PAR" -I{} bash -c '{}'
wait
kill $TAR
tar czf $OUT/results3.tar.gz --exclude='*.safetensors' -C /tmp results3
echo done
