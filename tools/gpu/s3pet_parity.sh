#!/usr/bin/env bash
# s3pet side of the quality-parity table: the same 12 runs as tools/gpu/peer_parity.sh.
#   tools/gpu/s3pet_parity.sh BIN OUTDIR [parallel]
set -uo pipefail
BIN=${1:?binary}; OUT=${2:?outdir}; PAR=${3:-4}
mkdir -p "$OUT"
jobs_list=()
for t in mrpc cola sst2 rte; do
  extra=""; [ "$t" = sst2 ] && extra="--max-train-examples 4000"
  for m in full lora bitfit; do
    jobs_list+=("$BIN -q train --task $t --method $m --epochs 3 --batch-size 32 --seed 42 --device cuda --model gpu/model --data-dir gpu/data $extra --out $OUT/s3pet-$t-$m > $OUT/s3pet-$t-$m.log 2>&1")
  done
done
printf '%s\n' "${jobs_list[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
