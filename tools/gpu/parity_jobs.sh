#!/usr/bin/env bash
# Prints the job lines of a parity grid, both sides (s3pet train and tools/parity.py on the same exported
# examples), one per line, for `xargs -P N -I{} bash -c '{}'`; exports the data it needs first.
#   tools/gpu/parity_jobs.sh BIN OUTDIR "TASKS" "SEEDS" "METHODS" EPOCHS LR_FULL LR_PET [LABEL]
# Run names: s3pet-<task>-<method><label>-<seed>, peer-<task>-<method><label>-<seed>.json.
set -euo pipefail
BIN=$1; R=$2; TASKS=$3; SEEDS=$4; METHODS=$5; EP=$6; LR_FULL=$7; LR_PET=$8; LABEL=${9:-}
mkdir -p "$R"
for s in $SEEDS; do
  for t in $TASKS; do
    extra=""; [ "$t" = sst2 ] && extra="--max-train-examples 4000"
    [ -d gpu/exports/$t-$s ] || $BIN -q data export --task $t --seed $s --data-dir gpu/data $extra --out gpu/exports/$t-$s > /dev/null
    for m in $METHODS; do
      lr=$LR_PET; [ "$m" = full ] && lr=$LR_FULL
      n=$t-$m$LABEL-$s
      echo "$BIN -q train --task $t --method $m --epochs $EP --batch-size 32 --seed $s --lr $lr --device cuda --model gpu/model --data-dir gpu/data $extra --out $R/s3pet-$n > $R/s3pet-$n.log 2>&1"
      echo "python3 tools/parity.py --data gpu/exports/$t-$s --model gpu/model --method $m --epochs $EP --batch-size 32 --lr $lr --seed $s --device cuda --out $R/peer-$n.json > $R/peer-$n.log 2>&1"
    done
  done
done
