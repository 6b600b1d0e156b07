#!/usr/bin/env bash
# One call on a warm H200 that has received the MPNet pieces (tools/gpu/mpnet_quality.sh receive, one call
# per piece): issue 21's plan (tools/gpu/paper_mpnet.sh run) in the background, and beside it, when asked,
# issue 15's missing quality jobs (ONLY, see mpnet_quality.sh) and the README-style searched run of MRPC
# on the real model with the full training set (RUN_MRPC=1; resumed when a previous call cut it).
# Carry the last piece, gpu/mpnet, gpu/data, gpu/results-carry (paper_mpnet.sh prepare) and the binary as dist/s3pet-cuda.xz (xz -9: a call carries at
# most 64 MiB); a later call on the same machine needs none of them. Limits in seconds:
#   PAPER_LIMIT (no new cell after it, default 420), PAPER_PARALLEL (default: the plan's), QUALITY_LIMIT
#   (default 400), RUN_LIMIT (the MRPC run is interrupted then, its checkpoint kept; default 520).
# GRAPH_CHECK=1 first runs `s3pet bench --graph-check` on mpnet-base alone ($OUT/graph-check.jsonl);
# PAD_TIMING=1 then times a real search padded and not (tools/gpu/pad_timing.sh, $OUT/pad-timing.jsonl).
# MPS_CHECK=1 then times the plan's shape alone, K at once and K at once under CUDA MPS (tools/gpu/mps_check.sh,
# $OUT/mps-check.jsonl, about 2 minutes; END counts them); with KEEP_MPS=1 the plan runs under MPS when it met
# that script's rule; MPS=1 instead starts the daemon without the timings (`mps_check.sh start`). A later call
# that starts the plan again (a fresh machine) has no MPS unless asked again. PAPER_PARALLEL=auto (with
# MPS_CHECK=1; K2=6 adds a second size) runs as many cells at once as the legs found best.
# END (seconds from now): the plan runs on between calls until then (paper_mpnet.sh start / poll), and
# this call returns after POLL s (default 540) with what has finished; without END, the plan of this
# call only (paper_mpnet.sh run, PAPER_LIMIT).
# $OUT gets results-mpnet.tgz, mpnet_quality.jsonl / mpnet_quality_runs.tgz, run-mrpc.tgz and logs.tgz (the
# logs: a call brings back at most 8 files of at most 16 MiB each).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu/out}
mkdir -p "$OUT"
called=$(date +%s)
source scripts/gpu-env.sh
unpack_binary || exit 1
tools/gpu/mpnet_quality.sh assemble || exit 1
echo "plan's CUDA graphs: ${S3PET_CUDA_GRAPHS:-on (default: search and training steps)}" > "$OUT/plan-graphs.txt"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
if [ "${GRAPH_CHECK:-}" = 1 ]; then
  # first, alone: CUDA-graph search steps of two shapes sharing one memory pool against eager steps
  dist/s3pet-cuda bench -q --shape mpnet-base --device cuda --batch-size 32 --seq-len 128 \
    --workload search1,search2 --graph-check > "$OUT/graph-check.jsonl" 2> "$OUT/graph-check.log"
  echo "graph check: exit $?" >> "$OUT/graph-check.log"
fi
if [ "${PAD_TIMING:-}" = 1 ]; then
  OUT=$OUT tools/gpu/pad_timing.sh > /dev/null 2>&1
fi
if [ "${MPS:-}" = 1 ] && [ "${MPS_CHECK:-}" != 1 ]; then
  # the plan under CUDA MPS without timing it again (the twelfth lease measured 1.09x / 1.21x three
  # processes at once under MPS against 0.94x / 0.96x without, docs/PERFORMANCE.md); if the daemon or its
  # client fails, the plan runs without it and $OUT/mps-check.jsonl says why
  mps_dir=${MPS_DIR:-/tmp/s3pet-mps}
  MPS_DIR=$mps_dir OUT=$OUT tools/gpu/mps_check.sh start > /dev/null 2>&1
  # shellcheck source=/dev/null
  [ -f "$mps_dir/kept" ] && source "$mps_dir/kept"
fi
if [ "${MPS_CHECK:-}" = 1 ]; then
  # CUDA MPS against time slicing for the plan's cells ($OUT/mps-check.jsonl); with KEEP_MPS=1 the plan
  # below runs under MPS when it met mps_check.sh's rule
  mps_dir=${MPS_DIR:-/tmp/s3pet-mps}
  MPS_DIR=$mps_dir OUT=$OUT tools/gpu/mps_check.sh > /dev/null 2>&1
  # shellcheck source=/dev/null
  [ -f "$mps_dir/kept" ] && source "$mps_dir/kept"
fi
if [ "${PAPER_PARALLEL:-}" = auto ]; then
  # the number of cells at once from this call's legs (MPS_CHECK=1, with K2 for a second size): of the
  # legs run the way the plan now runs (under MPS when it was kept, else without), the process count
  # whose lowest gain over the workloads is highest; K (default 3) when the legs gave none
  kept=no
  [ -f "${mps_dir:-/tmp/s3pet-mps}/kept" ] && kept=yes
  PAPER_PARALLEL=$(python3 - "$OUT/mps-check.jsonl" "${K:-3}" "$kept" <<'PY'
import json, os, sys
path, default, kept = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "yes"
rows = [json.loads(l) for l in open(path) if l.startswith("{")] if os.path.exists(path) else []
lowest = {}
for r in rows:
    if r.get("mps") is kept and r.get("processes", 1) > 1 and r.get("gain"):
        n = r["processes"]
        lowest[n] = min(lowest.get(n, r["gain"]), r["gain"])
print(max(sorted(lowest), key=lowest.get) if lowest else default)
PY
)
  echo "{\"paper_parallel\": $PAPER_PARALLEL, \"chosen_from\": \"mps-check legs (mps kept: $kept)\"}" >> "$OUT/mps-check.jsonl"
fi
# END counts from this call's start, and the call returns within CALL_LIMIT s (default 570) of it
spent=$(( $(date +%s) - called ))
[ -n "${END:-}" ] && END=$(( END - spent ))
POLL=$(( ${POLL:-540} < ${CALL_LIMIT:-570} - spent - 30 ? ${POLL:-540} : ${CALL_LIMIT:-570} - spent - 30 ))
export POLL
sampler=
if [ -n "${END:-}" ]; then
  # one plan for the rest of the lease, in its own session (paper_mpnet.sh start); this call waits POLL s
  # of it, and later calls run `POLL=... tools/gpu/paper_mpnet.sh poll`
  END=$END PARALLEL=${PAPER_PARALLEL:-} tools/gpu/paper_mpnet.sh start > "$OUT/paper.log" 2>&1
  tools/gpu/paper_mpnet.sh poll >> "$OUT/paper.log" 2>&1 &
else
  # the GPU's use while the jobs share it, every 5 s (is it busy, or held back by memory?); poll does
  # its own in the branch above
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 5 > "$OUT/gpu-use.txt" 2>&1 &
  sampler=$!
  LIMIT=${PAPER_LIMIT:-420} PARALLEL=${PAPER_PARALLEL:-} tools/gpu/paper_mpnet.sh run > "$OUT/paper.log" 2>&1 &
fi
jobs_started=($!)
if [ "${RUN_MRPC:-}" = 1 ]; then
  dir=gpu/run-mrpc
  again=--overwrite
  [ -f $dir/config.json ] && again=--resume
  (timeout -s INT "${RUN_LIMIT:-520}" dist/s3pet-cuda run --task mrpc --space mix --budget 1.39e-4 --model gpu/mpnet \
    --data-dir gpu/data --device cuda --precision bf16 --out $dir $again > "$OUT/run-mrpc.log" 2>&1
   echo "run exit $?" >> "$OUT/run-mrpc.log"
   tar czf "$OUT/run-mrpc.tgz" --exclude='*.safetensors' $dir) &
  jobs_started+=($!)
fi
if [ -n "${ONLY:-}" ]; then
  LIMIT=${QUALITY_LIMIT:-400} tools/gpu/mpnet_quality.sh run > "$OUT/quality.log" 2>&1
fi
wait "${jobs_started[@]}"
[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv >> "$OUT/gpu.txt" 2>&1
tail -n 3 "$OUT/graph-check.jsonl" "$OUT/paper.log" "$OUT/quality.log" "$OUT/run-mrpc.log" 2>/dev/null
# one archive of the logs (a call brings back 8 files: the results and checkpoint archives come first),
# with the poll's own (its experiment.log and GPU samples, which this one used to overwrite); the [l]
# globs drop a file this call did not write, which a plain name would hand tar as missing
(cd "$OUT" && shopt -s nullglob && { [ ! -f logs.tgz ] || { tar xzf logs.tgz && rm logs.tgz; }; } &&
  logs=(*.log *.txt graph-check.json[l] pad-timing.json[l] mps-check.json[l]) &&
  [ ${#logs[@]} -gt 0 ] && tar czf logs.tgz "${logs[@]}" && rm -f "${logs[@]}")
ls -la "$OUT"
