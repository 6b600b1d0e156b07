# Source on a GPU machine with PyTorch 2.11 installed: puts its libtorch and CUDA 13 libraries on
# LD_LIBRARY_PATH for dist/s3pet-cuda.
TORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')
SITE=$(dirname "$TORCH_DIR")
# nvidia/nccl/lib: the NCCL that `s3pet launch --backend nccl` reduces with (src/dist/nccl.rs)
export LD_LIBRARY_PATH="$TORCH_DIR/lib:$SITE/nvidia/cu13/lib:$SITE/nvidia/nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# dist/s3pet-cuda from the dist/s3pet-cuda.xz a call carried (xz -9: the plain binary does not fit beside
# a model piece in one call's 64 MiB), once
unpack_binary() {
  [ -f dist/s3pet-cuda.xz ] || { [ -x dist/s3pet-cuda ] && return 0; echo "no dist/s3pet-cuda(.xz)" >&2; return 1; }
  python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('dist/s3pet-cuda.xz'), open('dist/s3pet-cuda', 'wb'))" &&
    chmod +x dist/s3pet-cuda && rm dist/s3pet-cuda.xz
}
