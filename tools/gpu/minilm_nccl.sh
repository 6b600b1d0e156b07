#!/usr/bin/env bash
# One short H200 call: issue 14's MiniLM fp32 rows (LoRA against the plain PEFT loop; retrain, search1 and
# search2 with their PyTorch peers and the search / retrain ratios) and issue 19's world of one over NCCL
# (dist-check, then 20 LoRA steps launched on one rank against the same 20 steps in one plain process,
# final weights compared). Carry dist/s3pet-cuda, gpu/data (RTE) and gpu/model-cfg (tools/gpu/prep13.sh:
# MiniLM's config and tokenizer; random weights are made here). Writes $OUT/perf.json, $OUT/nccl.log,
# $OUT/minilm_nccl.log. LIMIT (seconds, default 240) bounds the benchmark part.
set -uo pipefail
source scripts/gpu-env.sh
OUT=${OUT:-/tmp/minilm_nccl}
mkdir -p "$OUT"
S3=dist/s3pet-cuda
{
  timeout "${LIMIT:-240}" python3 tools/compare_bench.py --s3pet $S3 --python python3 --device cuda --hardware h200 \
    --batch-size 32 --seq-len 128 --json "$OUT/perf.json" --shape minilm --workload lora,retrain,search1,search2 \
    --warmup 3 --steps 10
} 2>&1 | tee "$OUT/minilm_nccl.log"
M=/tmp/nccl-model
python3 tools/gpu/random_minilm.py $M --no-dropout 2>&1 | tail -1  # so the two runs can match value by value
{
  timeout 60 $S3 launch --nproc 1 --gpus 0 --backend nccl -- dist-check --device cuda
  echo "dist-check exit $?"
  common=(train --task rte --method lora --model $M --data-dir gpu/data --device cuda --max-steps 20 --seed 3
          --overwrite -q)
  timeout 90 $S3 launch --nproc 1 --gpus 0 --backend nccl -- "${common[@]}" --out /tmp/nccl-w1
  echo "launched train exit $?"
  timeout 90 $S3 "${common[@]}" --out /tmp/nccl-plain
  echo "plain train exit $?"
  python3 - <<'PY'
from safetensors.torch import load_file
a, b = load_file("/tmp/nccl-w1/weights.safetensors"), load_file("/tmp/nccl-plain/weights.safetensors")
assert a.keys() == b.keys(), (sorted(a), sorted(b))
d = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
print(f"world 1 over NCCL against one process: {len(a)} tensors, max abs diff {d:.3e}")
PY
} 2>&1 | tee "$OUT/nccl.log"
