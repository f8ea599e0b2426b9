#!/usr/bin/env bash
# Runs every test. Fetches what the tests need first: the SmolLM2 GGUF (the
# real model the golden and server tests run), NVRTC (to compile the CUDA
# kernels for sm_90 without a GPU), the official openai client, and pyzmq +
# msgspec (the KV-event subscriber test decodes as vLLM's consumers do), and
# vllm-router (the scale-out test routes three replicas through it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PAGODA_SMOLLM2_GGUF="${PAGODA_SMOLLM2_GGUF:-$(scripts/fetch-smollm2.sh)}"
eval "$(scripts/fetch-nvrtc.sh)"
export PAGODA_REQUIRE_NVRTC="${PAGODA_REQUIRE_NVRTC:-1}"
export PAGODA_REQUIRE_SMOLLM2="${PAGODA_REQUIRE_SMOLLM2:-1}"
# The kernels' ASan + UBSan rerun (pagoda-kernels' emu_kernels) must not skip.
export PAGODA_REQUIRE_SANITIZERS="${PAGODA_REQUIRE_SANITIZERS:-1}"
# Pinned: tests/tests/server_request_fields.rs walks this SDK's request
# fields, so a new SDK field is a deliberate bump, not a red CI one morning.
OPENAI_VERSION=3.57.0
python3 -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null ||
  python3 -m pip install -q "openai==$OPENAI_VERSION"
python3 -c "import zmq, msgspec" 2>/dev/null || python3 -m pip install -q pyzmq msgspec
python3 -c "import vllm_router" 2>/dev/null || python3 -m pip install -q "vllm-router==0.1.17"
cargo test --workspace "$@"
