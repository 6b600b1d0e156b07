#!/usr/bin/env bash
# Issue 21 on the lent GPU: plans/paper-mpnet.toml on the real all-mpnet-base-v2, over as many leases as it
# takes: the runner skips finished cells and resumes cut ones, and the results (without weights) travel
# back here after each lease and out again with the next one.
#   here:    tools/gpu/paper_mpnet.sh prepare     # gpu/mpnet-pieces, gpu/mpnet, gpu/data (the plan's 7 tasks),
#                                                 # gpu/results-mpnet (from results/mpnet if absent);
#                                                 # prints the calls that carry the model's pieces
#   device:  one call per piece: tools/gpu/mpnet_quality.sh receive
#   device:  the last call carries the last piece, gpu/mpnet, gpu/data, gpu/results-mpnet (when there is
#            one) and dist/s3pet-cuda.xz (`xz -9 -k dist/s3pet-cuda`: the plain binary does not fit beside the
#            piece in 64 MiB) and runs `PAPER_LIMIT=480 tools/gpu/mpnet_lease.sh` (unpacks the binary, joins
#            the pieces, then `run` below)   -> $OUT/results-mpnet.tgz; later calls of the same lease:
#            `LIMIT=480 tools/gpu/paper_mpnet.sh run`, carrying nothing
#   here:    tools/gpu/paper_mpnet.sh collect FILES_AT/results-mpnet.tgz
#            # unpacks into gpu/results-mpnet (for the next lease) and reports into results/mpnet
# A lease's cells run PARALLEL at once (default: the plan's 24); no new cell starts after LIMIT seconds, and
# at HARD seconds (LIMIT + 60) the cells still running are interrupted (checkpoint written, resumed next lease).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu/out}
RES=gpu/results-mpnet

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
  du -sh gpu/data "$RES" 2>/dev/null
}

run() {
  source scripts/gpu-env.sh
  tools/gpu/mpnet_quality.sh assemble || exit 1
  mkdir -p "$RES" "$OUT"
  local limit=${LIMIT:-480} minutes hard end_by
  hard=${HARD:-$((limit + 60))}
  minutes=$(python3 -c "print(${limit} / 60)")
  end_by=$(python3 -c "print(max(${hard} - 10, 1) / 60)")
  # no new cell after LIMIT s, and none whose kind has taken longer than what is left before HARD s
  # (--cells-end-by: shorter kinds fill the end); at HARD s (default LIMIT + 60) the runner and its
  # cells get SIGINT: each cell writes its checkpoint and stops, so the call ends in time and the cut
  # cells resume on the next call
  timeout -s INT "$hard" dist/s3pet-cuda experiment --plan plans/paper-mpnet.toml --out "$RES" \
    --max-minutes "$minutes" --cells-end-by "$end_by" ${PARALLEL:+--parallel "$PARALLEL"} > "$OUT/experiment.log" 2>&1
  echo "experiment exit $?; $(wc -l < "$RES/runs.jsonl" 2>/dev/null || echo 0) cells finished in all" | tee -a "$OUT/experiment.log"
  trim
  tar czf "$OUT/results-mpnet.tgz" -X "$OUT/left-out.txt" "$RES"
  ls -la "$OUT"
}

# what travels back: finished cells without weights; cut cells with their checkpoints (they resume next
# lease) while all of those together stay under KEEP_MB (default 12: a call brings back no file over
# 16 MiB; the 31 MB archive of KEEP_MB=40 stayed behind on the device), the
# smallest first; the others stay on this machine (a later call of the same lease resumes them) but do
# not travel back, so they start over next lease (full fine-tuning's checkpoints are over 1 GB). Writes
# the directories left out to $OUT/left-out.txt (tar's exclude list).
trim() {
  python3 - "$RES" "${KEEP_MB:-12}" "$OUT/left-out.txt" <<'PY'
import json, os, sys
res, keep, left_out = sys.argv[1], float(sys.argv[2]) * (1 << 20), sys.argv[3]
done = set()
if os.path.exists(f"{res}/runs.jsonl"):
    done = {json.loads(l)["id"] for l in open(f"{res}/runs.jsonl") if l.strip()}
cells = f"{res}/cells"
cut = []
for cell in sorted(os.listdir(cells)) if os.path.isdir(cells) else []:
    d = f"{cells}/{cell}"
    big = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    if cell in done:
        for f in big:
            os.remove(f"{d}/{f}")
    else:
        cut.append((sum(os.path.getsize(f"{d}/{f}") for f in big), cell))
total, out = 0, []
for size, cell in sorted(cut):
    if total + size <= keep:
        total += size
    else:
        out.append(f"{cells}/{cell}")
        print(f"{cell}: cut, its checkpoint ({size >> 20} MB) does not fit what returns; starts over next lease")
open(left_out, "w").writelines(p + "\n" for p in out)
PY
}

collect() {
  local tgz=${1:?usage: $0 collect RESULTS_TGZ}
  tar xzf "$tgz" || exit 1
  mkdir -p results/mpnet/cells
  cp "$RES/runs.jsonl" "$RES/plan.toml" results/mpnet/ || exit 1
  # the finished cells' directories (cut ones stay in gpu/results-mpnet, for the next lease)
  python3 - "$RES" <<'PY'
import json, os, shutil, sys
res = sys.argv[1]
for cell in {json.loads(l)["id"] for l in open(f"{res}/runs.jsonl") if l.strip()}:
    src = f"{res}/cells/{cell}"
    if os.path.isdir(src):  # a seed-1 cell copied from its sweep cell has none
        shutil.copytree(src, f"results/mpnet/cells/{cell}", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.safetensors"))
PY
  target/release/s3pet report results/mpnet
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  collect) shift; collect "$@" ;;
  *) echo "usage: $0 prepare | run | collect RESULTS_TGZ"; exit 2 ;;
esac
