#!/usr/bin/env bash
# Issue 21 on the lent GPU: plans/paper-mpnet.toml on the real all-mpnet-base-v2, over as many leases as it
# takes: the runner skips finished cells and resumes cut ones, and the results travel back here after
# each call and out again with the next lease: finished cells without weights, cut cells with their
# checkpoints in archives of their own (tools/gpu/results_io.py: a call carries 64 MiB out and brings
# back 8 files of 16 MiB; an MPNet S3PET-M cell's checkpoint is about 10 MB, and a cell that runs longer
# than a lease finishes only by resuming).
#   here:    tools/gpu/paper_mpnet.sh prepare     # gpu/mpnet-pieces, gpu/mpnet, gpu/data (the plan's 7 tasks),
#                                                 # gpu/results-mpnet (from results/mpnet if absent), and
#                                                 # from it gpu/results-carry (no weights) and
#                                                 # gpu/ckpt-out/out-NN.tgz (the cut cells' checkpoints),
#                                                 # and dist/s3pet-cuda.xz when older than the binary;
#                                                 # prints the calls that carry the model's pieces
#   device:  one call per piece: tools/gpu/mpnet_quality.sh receive
#   device:  one call per checkpoint archive: carry gpu/ckpt-out/out-NN.tgz, run
#            `tools/gpu/paper_mpnet.sh receive-ckpt`
#   device:  the last call carries the last piece, gpu/mpnet, gpu/data, gpu/results-carry and
#            dist/s3pet-cuda.xz (`xz -9 -k dist/s3pet-cuda`: the plain binary does not fit beside the
#            piece in 64 MiB) and runs `MPS=1 PAPER_PARALLEL=3 END=<seconds of device time left, less 190>
#            POLL=300 tools/gpu/mpnet_lease.sh` (unpacks the binary, joins the pieces, starts CUDA MPS, then
#            `start` and `poll` below; GRAPH_CHECK=1 and MPS_CHECK=1 add their checks)   -> $OUT/results-mpnet.tgz and logs.tgz; each later call of the
#            lease, carrying nothing: `POLL=300 tools/gpu/paper_mpnet.sh poll` (short polls: the device
#            may hand a fresh machine to any call, and what had not come back is gone; the last one with a
#            POLL past END: it returns when the plan has stopped, with the cut cells' checkpoints in
#            ckpt-K.tgz; when it says more remain, `tools/gpu/paper_mpnet.sh ship` brings the next ones)
#   here:    tools/gpu/paper_mpnet.sh collect FILES_AT   (after each call)
#            # unpacks into gpu/results-mpnet (for the next lease) and reports into results/mpnet
# The plan runs in a process session of its own, which the device leaves running between the calls of a
# lease, so its cells are cut only at the lease's end (`run` instead runs the plan inside one call).
# PARALLEL cells at once (default: the plan's); no new cell in the last 60 s, none whose kind (or, for a
# kind not yet seen, whose method and order on another task) has taken longer than the time left, and
# 30 s before the end the cells still running are interrupted
# (checkpoint written; resumed next lease from the checkpoint that travels back; one over 15 MiB, full
# fine-tuning's, does not, and that cell starts over).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu/out}
# (RES, PLAN, BIN and MODEL_CHECK=0 let the lease steps be tried on a CPU with another plan)
RES=${RES:-gpu/results-mpnet}
PLAN=${PLAN:-plans/paper-mpnet.toml}
BIN=${BIN:-dist/s3pet-cuda}

prepare() {
  tools/gpu/mpnet_quality.sh prepare || exit 1
  local data=${S3PET_DATA:-../shared/data}
  for f in superglue/CB/train.jsonl superglue/CB/val.jsonl superglue/COPA/train.jsonl superglue/COPA/val.jsonl \
           glue/SST-2/train.tsv glue/SST-2/dev.tsv; do
    mkdir -p "gpu/data/$(dirname "$f")" && cp "$data/$f" "gpu/data/$f" || exit 1
  done
  # the finished cells so far travel out again (the runner skips them): from results/mpnet when this
  # checkout has no gpu/results-mpnet of an earlier lease
  if [ ! -d "$RES" ] && [ -f results/mpnet/runs.jsonl ]; then
    mkdir -p "$RES" && cp -r results/mpnet/runs.jsonl results/mpnet/plan.toml results/mpnet/cells "$RES"/
  fi
  python3 tools/gpu/results_io.py outbound "$RES" gpu/results-carry gpu/ckpt-out || exit 1
  # the binary travels xz-compressed beside the last piece (plain, the two do not fit in 64 MiB)
  if [ -f "$BIN" ] && [ ! "$BIN.xz" -nt "$BIN" ]; then
    xz -9 -c "$BIN" > "$BIN.xz" || exit 1
  fi
  for f in gpu/ckpt-out/*.tgz; do
    [ -f "$f" ] && echo "carry [\"$f\"]: tools/gpu/paper_mpnet.sh receive-ckpt"
  done
  du -sh gpu/data gpu/results-carry "$BIN.xz" 2>/dev/null
}

# device: the checkpoint archive this call carried, kept for the plan's start (`merge` in plan)
receive_ckpt() {
  mkdir -p gpu/ckpt-in && mv gpu/ckpt-out/*.tgz gpu/ckpt-in/ && ls -la gpu/ckpt-in
}

# the plan itself: no new cell after LIMIT s, and none whose kind has taken longer than what is left
# before HARD s (--cells-end-by: shorter kinds fill the end); at HARD s (default LIMIT + 60) the runner
# and its cells get SIGINT: each cell writes its checkpoint and stops, and the cut cells resume on the
# next call (or the next lease, when their checkpoints travel back). Its log goes to $1.
plan() {
  if [ "${MODEL_CHECK:-1}" = 1 ]; then
    source scripts/gpu-env.sh
    tools/gpu/mpnet_quality.sh assemble || return 1
  fi
  # the results as carried (gpu/results-carry) with the cut cells' checkpoints of receive-ckpt
  if [ -d gpu/results-carry ] || [ -d gpu/ckpt-in ]; then
    python3 tools/gpu/results_io.py merge gpu/results-carry "$RES" gpu/ckpt-in || return 1
  fi
  mkdir -p "$RES"
  local limit=${LIMIT:-480} minutes hard end_by
  hard=${HARD:-$((limit + 60))}
  minutes=$(python3 -c "print(${limit} / 60)")
  end_by=$(python3 -c "print(max(${hard} - 10, 1) / 60)")
  timeout -s INT "$hard" "$BIN" experiment --plan "$PLAN" --out "$RES" \
    --max-minutes "$minutes" --cells-end-by "$end_by" ${PARALLEL:+--parallel "$PARALLEL"} > "$1" 2>&1
  echo "experiment exit $?; $(wc -l < "$RES/runs.jsonl" 2>/dev/null || echo 0) cells finished in all" | tee -a "$1"
}

# $OUT/results-mpnet.tgz: what has finished so far; FINAL=1 (the plan has stopped): with the cut cells and
# their checkpoints (ckpt-K.tgz, see results_io.py pack)
pack() {
  mkdir -p "$OUT" $L
  python3 tools/gpu/results_io.py pack "$RES" "$OUT" ${FINAL:+--final} --shipped $L/shipped.txt
  ls -la "$OUT"
}

run() {
  mkdir -p "$OUT"
  plan "$OUT/experiment.log"
  FINAL=1 pack
}

# One plan for the whole lease instead of one per call: `start` runs it in a process session of its own,
# which the device leaves running when the call returns (it kills a call's other processes), until END
# seconds from now (LIMIT and HARD follow from END); each later call runs `poll`: it waits POLL seconds
# (default 540) or until the plan has ended, then packs what has finished, so every call brings back the
# results so far and the cells run on between calls without being cut. `stop` interrupts it now.
L=gpu/lease
start() {
  local end=${END:?END: seconds from now by which the plan must have stopped}
  [ -f $L/pid ] && kill -0 "$(cat $L/pid)" 2>/dev/null && { echo "a plan is already running"; return 1; }
  mkdir -p $L && rm -f $L/done
  # the last new cell 60 s before the end, the interrupt 30 s before it (half of the time on short ends):
  # --cells-end-by keeps every cell of a timed kind from starting when it cannot end in time, so this
  # limit only bounds cells of kinds never timed (with 150 s, a call of the eleventh lease with 370 s of
  # plan started nothing in its last 160 s while COPA's and CB's 10-30 s cells waited for the next call)
  LIMIT=$(( end > 120 ? end - 60 : end / 2 )) HARD=$(( end > 60 ? end - 30 : end )) setsid bash -c \
    "echo \$\$ > $L/pid; '$0' plan-into $L/experiment.log; touch $L/done" > $L/session.log 2>&1 < /dev/null &
  sleep 5
  echo "plan started in its own session until $(date -u -d "@$(( $(date +%s) + end - 5 ))" +%T) UTC"
  cat $L/session.log $L/experiment.log 2>/dev/null | tail -n 5
}

poll() {
  local until=$(( $(date +%s) + ${POLL:-540} )) sampler=
  mkdir -p "$OUT"
  # a machine without the plan (the device gave a fresh one: its plan and results are gone) returns at
  # once instead of waiting POLL s of device time for nothing
  if [ ! -f $L/pid ]; then
    echo "no plan on this machine ($L/pid missing): a fresh machine, not the lease's; nothing to wait for" >&2
    return 3
  fi
  if command -v nvidia-smi > /dev/null; then  # the GPU's use meanwhile, every 5 s
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 5 \
      >> "$OUT/gpu-use-poll.txt" 2>&1 &
    sampler=$!
  fi
  while [ ! -f $L/done ] && [ "$(date +%s)" -lt "$until" ]; do sleep 5; done
  [ -n "$sampler" ] && kill "$sampler"
  local final=
  [ -f $L/done ] && final=1 && echo "the plan has ended"
  mkdir -p "$OUT" && cp $L/experiment.log "$OUT/"
  FINAL=$final pack
  tail -n 12 "$OUT/experiment.log"
  # a call brings back 8 files: results, logs and up to 5 checkpoint archives (results_io.py pack's default), one file to spare
  (cd "$OUT" && logs=$(ls experiment.log gpu-use-poll.txt 2>/dev/null); [ -n "$logs" ] && tar czf logs.tgz $logs && rm -f $logs)
}

# after a final poll that said more checkpoints remain: the next archives of them
ship() {
  mkdir -p "$OUT"
  python3 tools/gpu/results_io.py ship "$RES" "$OUT" --shipped $L/shipped.txt
}

stop() {
  # every process of the plan's session (timeout puts the runner and its cells in a group of their own)
  [ -f $L/pid ] && pkill -INT -s "$(cat $L/pid)"
  POLL=${POLL:-120} poll
}

collect() {
  local from=${1:?usage: collect FILES_AT, the directory of the results-mpnet.tgz and ckpt-K.tgz of a call}
  [ -f "$from" ] && from=$(dirname "$from")
  python3 tools/gpu/results_io.py collect "$RES" "$from" || exit 1
  [ -f "$RES/runs.jsonl" ] || return 0
  mkdir -p results/mpnet/cells
  cp "$RES/runs.jsonl" "$RES/plan.toml" results/mpnet/ || exit 1
  # the finished cells' directories (cut ones stay in gpu/results-mpnet, for the next lease), without
  # weights and without alphas.jsonl (the alpha and p of every candidate at every evaluation: 170 KB a
  # searched cell, while every call carries the whole tree within 64 MiB; candidates.tsv keeps each
  # candidate's best and final alpha and p); gpu/results-mpnet keeps them likewise trimmed
  python3 - "$RES" <<'PY'
import json, os, shutil, sys
res = sys.argv[1]
for cell in {json.loads(l)["id"] for l in open(f"{res}/runs.jsonl") if l.strip()}:
    src = f"{res}/cells/{cell}"
    if os.path.isdir(src):  # a seed-1 cell copied from its sweep cell has none
        shutil.copytree(src, f"results/mpnet/cells/{cell}", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.safetensors", "alphas.jsonl"))
        for f in os.listdir(src):
            if f.endswith(".safetensors") or f == "alphas.jsonl":
                os.remove(f"{src}/{f}")
PY
  target/release/s3pet report results/mpnet
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  start) start ;;
  poll) poll ;;
  ship) ship ;;
  receive-ckpt) receive_ckpt ;;
  stop) stop ;;
  plan-into) plan "$2" ;;
  collect) shift; collect "$@" ;;
  *) echo "usage: $0 prepare | receive-ckpt | run | start | poll | ship | stop | collect FILES_AT"; exit 2 ;;
esac
