#!/usr/bin/env bash
# Installs NVRTC and the CUDA runtime headers from PyPI into
# $PAGODA_HOME/cuda so the CUDA kernels can be compiled for sm_90 without a
# GPU, and prints the environment to use them (eval "$(scripts/fetch-nvrtc.sh)").
set -euo pipefail
home="${PAGODA_HOME:-$HOME/.cache/pagoda}"
dir="$home/cuda"
if [ ! -e "$dir/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ]; then
  python3 -m pip install -q --target "$dir" nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 >&2
fi
echo "export LD_LIBRARY_PATH=$dir/nvidia/cuda_nvrtc/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export CUDA_INCLUDE_DIR=$dir/nvidia/cuda_runtime/include"
