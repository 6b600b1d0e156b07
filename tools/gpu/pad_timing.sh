#!/usr/bin/env bash
# Issue 14 on a warm H200 that holds the real MPNet (gpu/mpnet, joined by mpnet_quality.sh assemble) and
# gpu/data: a real second-order search (MRPC, S3PET-M at 1.39e-4, bf16, the plan's lr 3e-3) with its
# batches padded only to their longest example (--pad-to-multiple 1) against padded to multiples of 16
# (the default where the search runs CUDA graphs), one after the other, alone on the GPU, STEPS steps
# each (default 348: six epochs of the task's schedule), in the order 1, 16, 1, 16 when ROUNDS=2.
# Writes $OUT/pad-timing.jsonl: per run the multiple, the search's steps and seconds, and how its steps
# ran (report.json's cuda_graphs: shapes captured, steps replayed, steps eager).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu/out}
BIN=${BIN:-dist/s3pet-cuda}
mkdir -p "$OUT"
source scripts/gpu-env.sh
rounds=${ROUNDS:-1}
for round in $(seq 1 "$rounds"); do
  for multiple in 1 16; do
    dir=gpu/pad-timing/m$multiple.r$round
    rm -rf "$dir"
    "$BIN" search -q --task "${TASK:-mrpc}" --space mix --budget 1.39e-4 --model gpu/mpnet --data-dir gpu/data \
      --device cuda --precision bf16 --lr 3e-3 --max-steps "${STEPS:-348}" --pad-to-multiple "$multiple" \
      --out "$dir" > "$OUT/pad-timing.m$multiple.r$round.log" 2>&1
    echo "pad timing: multiple $multiple round $round: exit $?" >> "$OUT/pad-timing.log"
    python3 - "$dir/report.json" "$multiple" "$round" >> "$OUT/pad-timing.jsonl" <<'EOF'
import json, sys
path, multiple, round_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    s = json.load(open(path))["search"]
except (OSError, KeyError, ValueError) as e:
    print(json.dumps({"multiple": multiple, "round": round_, "error": str(e)}))
    sys.exit(0)
row = {k: s.get(k) for k in ("order", "steps", "seconds", "peak_gpu_bytes", "cuda_graphs")}
row.update(multiple=multiple, round=round_, seconds_per_step=s["seconds"] / max(s["steps"], 1), dev=s.get("dev"))
print(json.dumps(row))
EOF
  done
done
cat "$OUT/pad-timing.jsonl"
