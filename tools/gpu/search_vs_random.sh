#!/usr/bin/env bash
# S3PET-M against random-M at the same budget (issue: search), 3 seeds, full training sets.
#   tools/gpu/search_vs_random.sh BIN OUTDIR "mrpc cola" "42 43 44" SEARCH_EPOCHS RETRAIN_EPOCHS ORDER [parallel] [extra args]
set -uo pipefail
BIN=${1:?}; OUT=${2:?}; TASKS=${3:?}; SEEDS=${4:?}; SE=${5:?}; RE=${6:?}; ORDER=${7:?}; PAR=${8:-6}
shift 8 || shift $#
mkdir -p "$OUT"
jobs_list=()
for t in $TASKS; do
  for s in $SEEDS; do
    common="--task $t --space mix --budget 1.39e-4 --seed $s --device cuda --model gpu/model --data-dir gpu/data --batch-size 32 $*"
    jobs_list+=("$BIN -q run $common --strategy s3pet --order $ORDER --search-epochs $SE --retrain-epochs $RE --out $OUT/s3pet-o$ORDER-$t-$s > $OUT/s3pet-o$ORDER-$t-$s.log 2>&1")
    [ "$ORDER" = 2 ] && jobs_list+=("$BIN -q run $common --strategy random --retrain-epochs $RE --out $OUT/random-$t-$s > $OUT/random-$t-$s.log 2>&1")
  done
done
printf '%s\n' "${jobs_list[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
