#!/usr/bin/env bash
# Issue 14 on one H200, the rows the earlier calls lacked: this binary against the pre-change one
# (commit 35c9ebf, dist/s3pet-cuda-base) in the same call, interleaved (new, base, new, base), MiniLM fp32
# 32 x 128, retrain / search1 / search2; and a kernel profile of one step (Nsight Compute, clocks left
# alone): the kernels a step launches and their summed GPU time, from runs of 1 and 3 timed steps
# (differenced, so that model building and warm-up cancel), for the eager search step and the retrain
# step of this binary and the search step of the old one. Against the step's wall time (bench rows) the
# rest is launch and host time.
# Carry dist/s3pet-cuda (or it is already there) and dist/s3pet-cuda-base. Writes $OUT/ab.jsonl,
# $OUT/ncu-*.csv and $OUT/profile.txt. LIMIT (seconds, default 280) bounds it.
set -uo pipefail
source scripts/gpu-env.sh
OUT=${OUT:-/tmp/session14}
mkdir -p "$OUT"
end=$(( $(date +%s) + ${LIMIT:-280} ))
left() { echo $(( end - $(date +%s) )); }
NEW=dist/s3pet-cuda
BASE=dist/s3pet-cuda-base
common=(bench -q --shape minilm --device cuda --batch-size 32 --seq-len 128)
for round in 1 2; do
  for b in $NEW $BASE; do
    [ "$(left)" -gt 30 ] || break
    timeout 60 $b "${common[@]}" --workload retrain,search1,search2 --warmup 3 --steps 10 |
      python3 -c "import json, sys
for l in sys.stdin:
    r = json.loads(l); r['binary'] = '$b'; r['round'] = $round; print(json.dumps(r))" | tee -a "$OUT/ab.jsonl"
  done
done
# one step's kernels: ncu lists every kernel it profiled (one row per kernel and metric)
profile() {  # name binary workload extra-args...
  local name=$1 bin=$2 w=$3; shift 3
  for n in 1 3; do
    [ "$(left)" -gt 20 ] || { echo "$name: no time left" >> "$OUT/profile.txt"; return; }
    timeout $(( $(left) < 60 ? $(left) : 60 )) ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      --log-file "$OUT/ncu-$name-$n.csv" $bin "${common[@]}" --workload "$w" --warmup 1 --steps $n "$@" > /dev/null 2>&1
    echo "$name steps $n: exit $?" >> "$OUT/profile.txt"
  done
  python3 - "$OUT/ncu-$name-1.csv" "$OUT/ncu-$name-3.csv" "$name" >> "$OUT/profile.txt" <<'PY'
import csv, sys
def read(p):
    rows = [r for r in csv.reader(l for l in open(p) if l.startswith('"'))]
    head, body = rows[0], rows[1:]
    i, v, u = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
    scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}
    return len(body), sum(float(r[v].replace(",", "")) * scale.get(r[u], 1e-6) for r in body)
try:
    (k1, t1), (k3, t3) = read(sys.argv[1]), read(sys.argv[2])
    print(f"{sys.argv[3]}: {(k3 - k1) / 2:.0f} kernels per step, {(t3 - t1) / 2:.2f} ms of kernel time per step")
except Exception as e:
    print(f"{sys.argv[3]}: no profile ({e!r})")
PY
}
profile search1-eager $NEW search1 --cuda-graphs off
profile retrain $NEW retrain
profile search1-base $BASE search1
cat "$OUT/profile.txt"
