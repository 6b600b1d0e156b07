#!/usr/bin/env bash
# One real RTE training epoch on this CPU, LoRA r8 (q, v), batch 16, lr 5e-4, seed 42, 2 threads, dynamic
# padding on both sides (s3pet train vs tools/parity.py on the same exported examples), run one after the
# other ROUNDS times in alternating order; prints each side's train_seconds (the epoch plus its dev
# evaluation) and the ratio peer / s3pet.   [S3PET_ARGS="--length-buckets 50"] tools/rte_epoch.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-1}
T=$(mktemp -d)
BIN=target/release/s3pet
PY="env LD_LIBRARY_PATH=tools/.venv/cuda-stubs CUDA_VISIBLE_DEVICES= tools/.venv/bin/python"
$BIN -q data export --task rte --seed 42 --out "$T/exp" > /dev/null
s3() { $BIN -q train --task rte --method lora --epochs 1 --batch-size 16 --lr 5e-4 --seed 42 --threads 2 \
         --out "$T/s3-$1" ${S3PET_ARGS:-} > /dev/null 2>&1
       python3 -c "import json,sys;r=json.load(open('$T/s3-$1/report.json'));print(r['train_seconds'])
print(f\"s3pet tokens {r['train_tokens']}, padded to {r['train_padded_tokens']}\", file=sys.stderr)"; }
peer() { $PY tools/parity.py --data "$T/exp" --model models/all-MiniLM-L6-v2 --method lora --epochs 1 \
           --batch-size 16 --lr 5e-4 --seed 42 --threads 2 --device cpu --out "$T/peer-$1.json" > /dev/null 2>&1
         python3 -c "import json;print(json.load(open('$T/peer-$1.json'))['train_seconds'])"; }
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then a=$(s3 $r); b=$(peer $r); else b=$(peer $r); a=$(s3 $r); fi
  python3 -c "print(f'round $r: s3pet {$a:.1f} s, peer {$b:.1f} s, ratio peer/s3pet {$b/$a:.3f}')"
done
rm -rf "$T"
