#!/usr/bin/env bash
# Peer side of the quality-parity table (issue: foundation): transformers + PEFT on the exports in
# gpu/exports/<task>-<seed>, same recipe as s3pet train. Run on the GPU machine from the repo root:
#   tools/gpu/peer_parity.sh OUTDIR [parallel]
set -uo pipefail
OUT=${1:?outdir}; PAR=${2:-4}
mkdir -p "$OUT"
jobs_list=()
for t in mrpc cola sst2 rte; do
  for m in full lora bitfit; do
    lr=5e-4; [ "$m" = full ] && lr=2e-5
    jobs_list+=("python3 tools/parity.py --data gpu/exports/$t-42 --model gpu/model --method $m --epochs 3 --batch-size 32 --lr $lr --seed 42 --device cuda --out $OUT/peer-$t-$m.json > $OUT/peer-$t-$m.log 2>&1")
  done
done
printf '%s\n' "${jobs_list[@]}" | xargs -P "$PAR" -I{} bash -c '{}'
ls "$OUT"
