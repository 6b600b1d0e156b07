#!/usr/bin/env bash
# Issue 21 (and 14) on a warm H200, no model needed (random mpnet-base weights, the plan's shape: bf16,
# 32 x 128): do the plan's cells share the GPU better under CUDA MPS than by time slicing? Without MPS
# one GPU runs the kernels of several processes by turns (8 retrainings at once gave 1.14x one alone,
# results/mpnet/discussion.md); MPS lets kernels of different processes run side by side. For each of
# WORKLOADS (default retrain,search2) `s3pet bench`: one process alone, K at once (default 3) without
# MPS, then, where nvidia-cuda-mps-control starts a daemon and one client runs under it, K at once under
# MPS (and K2 at once, when K2 is given). MPS changes no setting of the card (clocks, compute mode, MIG and
# persistence stay as found); its daemon is a process of this machine, quit at the end unless KEEP_MPS=1
# and MPS passed the rule below.
# Writes $OUT/mps-check.jsonl: per leg the workload, processes, mps, wall seconds, each process's ms per
# step (bench), and the aggregate steps per second over one process alone ("gain"). Rule (KEEP_MPS=1):
# MPS stays on for the plan when, for every workload, K at once under MPS has at least MIN_GAIN (default
# 1.1) times the aggregate steps per second of K at once without it; then $MPS_DIR/kept holds the
# exports of CUDA_MPS_PIPE_DIRECTORY and CUDA_MPS_LOG_DIRECTORY that the plan's processes need
# (mpnet_lease.sh sources it).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu/out}
BIN=${BIN:-dist/s3pet-cuda}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu tries the legs without a GPU (no MPS there)
K=${K:-3}
BATCH=${BATCH:-32} SEQ=${SEQ:-128}  # smaller only to try the script on a CPU
MPS_DIR=${MPS_DIR:-/tmp/s3pet-mps}  # short: the daemon's socket path must stay under 108 characters
mkdir -p "$OUT"
rm -f "$MPS_DIR/kept"

steps_of() {  # timed steps per workload: a few seconds alone, so that K at once overlap mostly
  case "$1" in retrain|lora) echo "${RETRAIN_STEPS:-250}" ;; *) echo "${SEARCH_STEPS:-40}" ;; esac
}

# one bench process of the plan's shape on one CPU thread, as the plan's cells: WORKLOAD BATCH SEQ WARMUP STEPS
bench() {
  "$BIN" bench -q --shape mpnet-base --device "$DEVICE" --precision bf16 --threads 1 --workload "$1" \
    --batch-size "$2" --seq-len "$3" --warmup "$4" --steps "$5"
}

# one leg: N bench processes of one workload at once; prints its JSON row
leg() {
  local workload=$1 n=$2 mps=$3 dir i start
  dir=$(mktemp -d)
  start=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    bench "$workload" "$BATCH" "$SEQ" 5 "$(steps_of "$workload")" > "$dir/$i.json" 2> "$dir/$i.log" &
  done
  wait
  python3 - "$dir" "$workload" "$n" "$mps" "$start" "$(date +%s.%N)" <<'EOF'
import glob, json, sys
d, workload, n, mps, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", *map(float, sys.argv[5:7])
ms = []
for f in sorted(glob.glob(f"{d}/*.json")):
    rows = [json.loads(l) for l in open(f) if l.startswith("{")]
    ms += [r["ms_per_step"] for r in rows]
row = {"workload": workload, "processes": n, "mps": mps, "wall_s": round(end - start, 1), "ms_per_step": ms}
if len(ms) != n:
    row["error"] = f"{n - len(ms)} of {n} processes gave no result (see their logs)"
print(json.dumps(row))
EOF
  cat "$dir"/*.log >&2
  rm -rf "$dir"
}

# aggregate steps per second of a leg's row over one process alone
gain() {
  python3 -c "import json,sys; a,r=json.loads(sys.argv[1]),json.loads(sys.argv[2]); \
r['gain']=round(sum(1000/m for m in r['ms_per_step'])/(1000/a['ms_per_step'][0]),2) if a['ms_per_step'] and len(r['ms_per_step'])==r['processes'] else None; print(json.dumps(r))" "$1" "$2"
}

mps_start() {
  command -v nvidia-cuda-mps-control > /dev/null || { echo "no nvidia-cuda-mps-control here" >&2; return 1; }
  mkdir -p "$MPS_DIR/pipe" "$MPS_DIR/log"
  export CUDA_MPS_PIPE_DIRECTORY=$MPS_DIR/pipe CUDA_MPS_LOG_DIRECTORY=$MPS_DIR/log
  setsid nvidia-cuda-mps-control -d < /dev/null > "$MPS_DIR/control.out" 2>&1 || return 1
  # one client, bounded: a daemon that cannot serve must not hang the plan
  (export -f bench; export BIN DEVICE; timeout 120 bash -c 'bench retrain 8 32 1 2') > /dev/null \
    2> "$MPS_DIR/client-check.log"
}

mps_quit() {
  echo quit | nvidia-cuda-mps-control > /dev/null 2>&1
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}

# `mps_check.sh start`: the daemon and its client check only, no legs (once a lease has measured the gain):
# on success $MPS_DIR/kept as above, and one JSON line in $OUT/mps-check.jsonl either way
if [ "${1:-}" = start ]; then
  if [ "$DEVICE" != cuda ]; then
    echo '{"mps": "not started: DEVICE is not cuda"}' | tee -a "$OUT/mps-check.jsonl"
    exit 1
  fi
  if mps_start; then
    echo "export CUDA_MPS_PIPE_DIRECTORY=$CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY=$CUDA_MPS_LOG_DIRECTORY" \
      > "$MPS_DIR/kept"
    echo "{\"mps\": \"started without the legs: $(cat "$MPS_DIR/kept")\"}" | tee -a "$OUT/mps-check.jsonl"
    exit 0
  fi
  tail -c 300 "$MPS_DIR/client-check.log" "$MPS_DIR/control.out" 2>/dev/null | python3 -c \
    'import json,sys; print(json.dumps({"mps": "did not start or its client failed: " + sys.stdin.read()}))' \
    | tee -a "$OUT/mps-check.jsonl"
  mps_quit
  exit 1
fi

: > "$OUT/mps-check.jsonl"
declare -A alone plain shared
workloads=${WORKLOADS:-retrain,search2}
for w in ${workloads//,/ }; do
  alone[$w]=$(leg "$w" 1 0 2>> "$OUT/mps-check.log")
  plain[$w]=$(gain "${alone[$w]}" "$(leg "$w" "$K" 0 2>> "$OUT/mps-check.log")")
  printf '%s\n%s\n' "${alone[$w]}" "${plain[$w]}" >> "$OUT/mps-check.jsonl"
done
if [ "$DEVICE" != cuda ]; then
  echo '{"mps": "not tried: DEVICE is not cuda"}' >> "$OUT/mps-check.jsonl"
elif ! mps_start; then
  tail -c 300 "$MPS_DIR/client-check.log" "$MPS_DIR/control.out" 2>/dev/null | python3 -c \
    'import json,sys; print(json.dumps({"mps": "did not start or its client failed: " + sys.stdin.read()}))' \
    >> "$OUT/mps-check.jsonl"
  mps_quit
else
  keep=1
  for w in "${!alone[@]}"; do
    shared[$w]=$(gain "${alone[$w]}" "$(leg "$w" "$K" 1 2>> "$OUT/mps-check.log")")
    echo "${shared[$w]}" >> "$OUT/mps-check.jsonl"
    [ -n "${K2:-}" ] && gain "${alone[$w]}" "$(leg "$w" "$K2" 1 2>> "$OUT/mps-check.log")" >> "$OUT/mps-check.jsonl"
    python3 -c "import json,sys; p,s=json.loads(sys.argv[1]),json.loads(sys.argv[2]); \
sys.exit(0 if p['gain'] and s['gain'] and s['gain'] >= float(sys.argv[3]) * p['gain'] else 1)" \
      "${plain[$w]}" "${shared[$w]}" "${MIN_GAIN:-1.1}" || keep=0
  done
  if [ "${KEEP_MPS:-}" = 1 ] && [ "$keep" = 1 ]; then
    echo "export CUDA_MPS_PIPE_DIRECTORY=$CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY=$CUDA_MPS_LOG_DIRECTORY" \
      > "$MPS_DIR/kept"
    echo "{\"mps\": \"kept for the plan: $(cat "$MPS_DIR/kept")\"}" >> "$OUT/mps-check.jsonl"
  else
    mps_quit
    echo "{\"mps\": \"quit (KEEP_MPS=${KEEP_MPS:-0}, rule met: $keep)\"}" >> "$OUT/mps-check.jsonl"
  fi
fi
cat "$OUT/mps-check.jsonl"
