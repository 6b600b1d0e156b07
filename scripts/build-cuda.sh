#!/usr/bin/env bash
# Builds s3pet with the `cuda` feature against the full torch==2.11.0 wheel set (CUDA 13) in .venv-cuda,
# into target-cuda/, and writes a stripped copy to dist/s3pet-cuda for shipping to a GPU machine.
# There, start it with LD_LIBRARY_PATH=<torch>/lib:<site-packages>/nvidia/cu13/lib (scripts/gpu-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-cuda
if ! ls "$VENV"/lib/python3*/site-packages/torch/lib/libtorch_cuda.so >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.11.0
fi
# csrc/cuda_graph.cpp includes libtorch's CUDA headers, which include cuda_runtime.h, which needs the
# compiler's crt/ headers: those of the nvcc wheel of the same CUDA release (only its headers are used)
if ! ls "$VENV"/lib/python3*/site-packages/nvidia/cu13/include/crt/host_config.h >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q nvidia-cuda-nvcc==13.0.88
fi
TORCH_DIR=$(cd "$(ls -d "$VENV"/lib/python3*/site-packages/torch | head -1)" && pwd)
LIBTORCH="$TORCH_DIR" LIBTORCH_CXX11_ABI=1 CARGO_TARGET_DIR=target-cuda cargo build --release --features cuda
mkdir -p dist
strip -o dist/s3pet-cuda target-cuda/release/s3pet
ls -la dist/s3pet-cuda
