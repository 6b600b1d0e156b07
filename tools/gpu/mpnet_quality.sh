#!/usr/bin/env bash
# Issue 15's quality check: the real all-mpnet-base-v2, s3pet `train` against transformers + PEFT
# (tools/parity.py) on the same exported examples and recipe, LoRA r8 (q, v) and full fine-tuning on MRPC,
# RTE, CoLA and STS-B with their full training sets, seeds 1 2 3. The recipe is results/RESULTS.md's (the
# MiniLM numbers to compare with): 3 epochs, batch 32 (RTE 16), max length 128, eval batch 128; LoRA lr
# 1e-3 and clip 2.0, full fine-tuning lr 5e-5 and clip 1.0; AdamW, wd 0, linear decay, no warm-up. Both
# sides load the same weights (carried in fp16, read as fp32: the model is 438 MB and a call carries at
# most 64 MiB, so it travels in pieces over several calls; ignored files stay on a warm machine).
#
#   here (CPU):  tools/gpu/mpnet_quality.sh prepare    # gpu/mpnet-pieces/, gpu/mpnet/, gpu/data/; prints
#                                                       # the calls, each with what it carries
#   device:      tools/gpu/mpnet_quality.sh receive    # the calls that only bring pieces (lists them)
#   device:      tools/gpu/mpnet_quality.sh run        # the last call: assemble, check, train, collect
#
# `run` needs dist/s3pet-cuda (scripts/build-cuda.sh) and PyTorch 2.11 + transformers + PEFT on the
# device (peft 0.21.2 from .whl/ when that is carried too). It runs PAR jobs at once (default 16: one per
# CPU core, about 4 GB of the GPU each), longest first, and starts none after LIMIT seconds (default 480;
# each job is killed at LIMIT + 60), so the command ends inside the 10-minute limit. Finished jobs are
# kept in gpu/mpnet_quality/ and skipped when run again on the same warm machine. $OUT gets
# mpnet_quality.jsonl (one row per job and side: task, method, seed, test / dev metrics, trainable
# parameters, seconds), mpnet_quality_runs.tgz (each s3pet report.json and parity.py JSON, the tails of the
# logs) and env.txt. Then, here: tools/.venv/bin/python tools/parity_table.py --rows mpnet_quality.jsonl
# --compare results/runs.jsonl (the table of docs/PARITY.md).
# ONLY (a bash regular expression over job names such as s3pet-cola-full-1 or peer-rte-lora-3) runs just
# the jobs it matches (the rows of an earlier lease are docs/runs/mpnet_quality_h200_*.jsonl).
# A smoke test on a CPU (the same steps on a few examples): SMOKE=1 BIN=target/release/s3pet DEVICE=cpu
#   PY=tools/.venv/bin/python (with the environment of tools/venv.sh) tools/gpu/mpnet_quality.sh run
set -uo pipefail
cd "$(dirname "$0")/../.."
TASKS=${TASKS:-"cola stsb mrpc rte"}   # longest first
SEEDS=${SEEDS:-"1 2 3"}
METHODS="full lora"
EPOCHS=3
EXPORT_CAP=()
if [ "${SMOKE:-}" = 1 ]; then
  TASKS=${TASKS_SMOKE:-rte}; SEEDS=1; EPOCHS=1; EXPORT_CAP=(--max-train-examples 32 --max-eval-examples 16)
fi
BIN=${BIN:-dist/s3pet-cuda}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
OUT=${OUT:-gpu/out}
PIECE_MIB=${PIECE_MIB:-44}
MODEL=${S3PET_MPNET:-models/all-mpnet-base-v2}
R=gpu/mpnet_quality

prepare() {
  set -e
  [ -f "$MODEL/model.safetensors" ] || { echo "no $MODEL (scripts/setup.sh --model all-mpnet-base-v2)"; exit 1; }
  mkdir -p gpu/mpnet gpu/mpnet-pieces gpu/data
  cp "$MODEL"/{config.json,tokenizer.json} gpu/mpnet/
  ${TOOLS_PY:-tools/.venv/bin/python} - "$MODEL/model.safetensors" gpu/mpnet-pieces/model.fp16.safetensors <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
save_file({k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in t.items()}, sys.argv[2])
PY
  (cd gpu/mpnet-pieces && rm -f piece.* && split -b "${PIECE_MIB}m" -d -a 2 model.fp16.safetensors piece. &&
   sha256sum model.fp16.safetensors | cut -d' ' -f1 > ../mpnet/model.fp16.sha256 && rm model.fp16.safetensors)
  local data=${S3PET_DATA:-../shared/data}
  for d in glue/CoLA glue/STS-B glue/MRPC glue/RTE; do
    mkdir -p "gpu/data/$d" && cp "$data/$d/train.tsv" "$data/$d/dev.tsv" "gpu/data/$d/"
  done
  local tree budget=$((60 * 1048576)) size
  tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  size() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }
  [ -f dist/s3pet-cuda ] || echo "NOTE: no dist/s3pet-cuda yet (scripts/build-cuda.sh); its size is not counted below"
  du -sh gpu/mpnet-pieces/piece.* gpu/data gpu/mpnet dist/s3pet-cuda 2>/dev/null || true
  echo "working tree $((tree / 1048576)) MiB, carried by every call; a call may carry 64 MiB in all"
  # the run call carries the binary, the model directory and the data, and the last piece when it fits
  local final=(dist/s3pet-cuda gpu/mpnet gpu/data) pieces=(gpu/mpnet-pieces/piece.*) n=0
  [ -d .whl ] && final+=(.whl)
  size=$(( tree + $(size "${final[@]}") + $(size "${pieces[-1]}") ))
  if [ "$size" -le "$budget" ]; then final+=("${pieces[-1]}"); unset 'pieces[-1]'; fi
  for p in "${pieces[@]}"; do
    n=$((n + 1)); echo "call $n: carry [\"$p\"]  command: tools/gpu/mpnet_quality.sh receive"
  done
  local list
  list=$(printf '"%s", ' "${final[@]}")
  echo "call $((n + 1)): carry [${list%, }]  command: tools/gpu/mpnet_quality.sh run   (timeout_s 600)"
  echo "(one call after the other: a machine is given back 30 s after a call, and the pieces with it)"
}

receive() {
  ls -la gpu/mpnet-pieces/ 2>&1
  du -sh gpu/mpnet-pieces 2>&1
}

# the job lines, both sides, longest first; each writes $R/<side>-<task>-<method>-<seed>.{json,log}
jobs() {
  for t in $TASKS; do
    for m in $METHODS; do
      for s in $SEEDS; do
        local bs=32 lr=1e-3 clip=2.0 n=$t-$m-$s
        [ "$t" = rte ] && bs=16
        [ "$m" = full ] && lr=5e-5 && clip=1.0
        local common="--epochs $EPOCHS --batch-size $bs --lr $lr --clip-norm $clip --seed $s"
        # the same seed and caps as the export parity.py reads: s3pet makes the same split
        [[ s3pet-$n =~ ${ONLY:-.} ]] && [ ! -f "$R/s3pet-$n/report.json" ] && echo "$BIN -q train --task $t --method $m $common ${EXPORT_CAP[*]} \
--eval-batch-size 128 --max-length 128 --device $DEVICE --threads 1 --model gpu/mpnet --data-dir gpu/data \
--out $R/s3pet-$n --overwrite > $R/s3pet-$n.log 2>&1"
        [[ peer-$n =~ ${ONLY:-.} ]] && [ ! -f "$R/peer-$n.json" ] && echo "$PY tools/parity.py --data gpu/exports/$t-$s --model gpu/mpnet \
--method $m $common --eval-batch-size 128 --max-length 128 --device $DEVICE --threads 1 --out $R/peer-$n.json \
> $R/peer-$n.log 2>&1"
      done
    done
  done
}

# joins the pieces into gpu/mpnet/model.safetensors once and checks its sha256 (also for tools/gpu/paper_mpnet.sh)
assemble() {
  if [ ! -f gpu/mpnet/model.safetensors ]; then
    cat gpu/mpnet-pieces/piece.* > gpu/mpnet/model.safetensors || return 1
  fi
  local sum
  sum=$(sha256sum gpu/mpnet/model.safetensors | cut -d' ' -f1)
  if [ "$sum" != "$(cat gpu/mpnet/model.fp16.sha256)" ]; then
    echo "assembled model.safetensors: sha256 $sum, expected $(cat gpu/mpnet/model.fp16.sha256) (a piece missing?)"
    rm -f gpu/mpnet/model.safetensors; ls -la gpu/mpnet-pieces; return 1
  fi
}

run() {
  local start end
  start=$(date +%s); end=$((start + ${LIMIT:-480}))
  source scripts/gpu-env.sh
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  fi
  mkdir -p "$R" gpu/exports "$OUT"
  assemble || exit 1
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
    $BIN --version; git log -1 --format='commit %H %cd' 2>/dev/null; } > "$OUT/env.txt" 2>&1
  for t in $TASKS; do
    for s in $SEEDS; do
      [ -d gpu/exports/$t-$s ] || $BIN -q data export --task $t --seed $s "${EXPORT_CAP[@]}" --data-dir gpu/data \
        --out gpu/exports/$t-$s > /dev/null || exit 1
    done
  done
  # a job not started by `end` is skipped; one still running at end + 60 is killed
  jobs | END=$end xargs -P "${PAR:-16}" -I{} bash -c '[ $(date +%s) -lt $END ] || exit 0; timeout $((END + 60 - $(date +%s))) bash -c "{}"'
  collect
  echo "wall $(( $(date +%s) - start )) s"
}

collect() {
  $PY - "$R" "$OUT/mpnet_quality.jsonl" "$TASKS" "$SEEDS" <<'PY'
import json, os, sys
root, out, tasks, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
rows = []
for t in tasks:
    for m in ("full", "lora"):
        for s in seeds:
            n = f"{t}-{m}-{s}"
            for side, path in (("s3pet", f"{root}/s3pet-{n}/report.json"), ("peer", f"{root}/peer-{n}.json")):
                row = {"side": side, "task": t, "method": m, "seed": int(s)}
                if os.path.exists(path):
                    r = json.load(open(path))
                    row.update(status="done", metric=r.get("metric") or r["metrics"][0], test=r["test"], dev=r["dev"],
                               trainable=r.get("trainable_params"),
                               seconds=r.get("train_seconds", r.get("wall_seconds")))
                else:
                    row["status"] = "not run or failed (see its log)"
                rows.append(row)
with open(out, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
done = sum(r["status"] == "done" for r in rows)
print(f"{done} of {len(rows)} runs done")
PY
  for l in "$R"/*.log; do tail -n 20 "$l" > "$l.tail"; done 2>/dev/null
  tar czf "$OUT/mpnet_quality_runs.tgz" "$R"/*/report.json "$R"/*.json "$R"/*.log.tail 2>/dev/null
  ls -la "$OUT"
}

case "${1:-}" in
  prepare) prepare ;;
  receive) receive ;;
  assemble) assemble ;;
  run) run ;;
  *) echo "usage: $0 prepare | receive | assemble | run"; exit 2 ;;
esac
