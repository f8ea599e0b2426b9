#!/usr/bin/env bash
# GPU check of Pagoda's CUDA backend (issue 5, section 4), for a machine with
# an NVIDIA GPU, its driver, CUDA and PyTorch but no Rust toolchain.
#
# 1. Build and stage, on a machine with Rust (no GPU needed):
#      scripts/gpu-check.sh --stage
#    builds in release (`cargo build --release -p pagoda-cli` for the
#    `pagoda` binary, `cargo test --release -p pagoda-kernels --no-run` for the
#    kernel test executables), strips them into .device/bin/ (ignored by git)
#    and checks that .device/ fits one device call's 64 MiB carry.
# 2. Run, on the GPU machine, from the repository root:
#      scripts/gpu-check.sh            (the device tool: carry [".device"], timeout_s 540)
#    Steps, each under its own time limit (about 8 minutes in all):
#      a. every .cu unit compiled by that machine's NVRTC (sm_90, sm_80);
#      b. each CUDA kernel against its CPU twin (PAGODA_REQUIRE_GPU=1: no skips);
#      c. `pagoda generate`, 32 greedy tokens on several prompts, cuda against cpu
#         (and cuda with CUDA graphs against cuda --enforce-eager):
#         SmolLM2-135M-Instruct when its GGUF is there (PAGODA_SMOLLM2_GGUF, or
#         .device/models/*.gguf, or split parts .device/models/*.gguf.part-*),
#         else SmolLM2's shape with dummy weights (said so in the table);
#      d. `pagoda bench throughput --load-format dummy` at Llama-3-8B's shape
#         (scripts/gpu/llama3-8b/config.json): 256 prompts, 256 in, 256 out;
#      e. `pagoda bench latency` at batch 1, 32 and 256: decode step time;
#      f. PyTorch device-to-device copy bandwidth, the HBM roofline's divisor;
#    then prints the table and writes it to $OUT/gpu-check.md (OUT defaults to
#    ./gpu-check-out), with every step's raw output beside it.
# The SmolLM2 GGUF (98 MB) exceeds one call's carry: split it
# (split -b 40M SmolLM2-135M-Instruct.Q4_1.gguf .device/models/smollm2.gguf.part-),
# carry .device/models in a first call (the device keeps ignored paths between
# calls while it stays warm), then run this with carry [".device/bin"].
set -uo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
bin="$root/.device/bin"

if [ "${1:-}" = "--stage" ]; then
  set -e
  mkdir -p "$bin"
  cargo build --release -p pagoda-cli
  cp target/release/pagoda "$bin/pagoda"
  # `cargo test --no-run` names each test executable on stderr.
  cargo test --release -p pagoda-kernels --no-run 2>&1 | tee /dev/stderr |
    sed -n 's/.*Executable tests\/\(cuda_[a-z_]*\)\.rs (\(.*\))/\1 \2/p' |
    while read -r name path; do cp "$path" "$bin/$name"; done
  strip "$bin"/* 2>/dev/null || true
  ls -la "$bin"
  size=$(du -sm "$root/.device" | cut -f1)
  echo "staged .device/: ${size} MiB (a device call carries 64 MiB at most)"
  [ "$size" -le 64 ] || { echo "too large to carry in one call" >&2; exit 1; }
  exit 0
fi

out="${OUT:-$root/gpu-check-out}"
export PAGODA_REQUIRE_NVRTC=1 PAGODA_REQUIRE_GPU=1
mkdir -p "$out"
py="$(command -v python3)"
deadline=$((SECONDS + ${PAGODA_GPU_CHECK_SECONDS:-470}))

# Libraries: libcuda from the driver; NVRTC and cuBLAS from the CUDA toolkit or
# PyTorch's pip wheels (newest major first). cudarc dlopens them by name.
libdirs=""
add_dirs_of() { # pattern, search roots...
  local pat="$1"; shift
  for d in $(find "$@" -name "$pat" 2>/dev/null | sort -rV | xargs -r -n1 dirname | awk '!s[$0]++'); do
    libdirs="${libdirs:+$libdirs:}$d"
  done
}
pip_nvidia="$("$py" -c 'import nvidia, sys; print(" ".join(nvidia.__path__))' 2>/dev/null || true)"
add_dirs_of 'libnvrtc.so.1*' /usr/local/cuda/lib64 /usr/local/cuda/targets $pip_nvidia
add_dirs_of 'libcublas.so.1*' /usr/local/cuda/lib64 /usr/local/cuda/targets $pip_nvidia
ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1' || add_dirs_of 'libcuda.so.1' /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUDA_INCLUDE_DIR="${CUDA_INCLUDE_DIR:-/usr/local/cuda/include}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"

# step NAME SECONDS COMMAND...: runs with a time limit (never past the deadline),
# output in OUT/NAME.log, "ok" / "FAILED (rc N)" / "TIMEOUT" in OUT/NAME.status.
step() {
  local name="$1" limit="$2"; shift 2
  local left=$((deadline - SECONDS))
  [ "$limit" -gt "$left" ] && limit="$left"
  if [ "$limit" -le 5 ]; then echo "skipped: out of time" > "$out/$name.status"; return 1; fi
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  case $rc in
    0) echo ok ;;
    124) echo "TIMEOUT after ${limit}s" ;;
    *) echo "FAILED (rc $rc)" ;;
  esac > "$out/$name.status"
  echo "-> $(cat "$out/$name.status")"
  return $rc
}

need() { [ -x "$1" ] || { echo "missing $1: run scripts/gpu-check.sh --stage on the build machine" | tee "$out/$2.status"; return 1; }; }

# f first: the roofline needs it, and it takes seconds.
step bandwidth 60 sh -c "\"$py\" scripts/gpu/bandwidth.py > \"$out/bandwidth.json\""

if need "$bin/cuda_nvrtc_compile" nvrtc; then
  step nvrtc 90 "$bin/cuda_nvrtc_compile" --test-threads=1 --nocapture
fi
if need "$bin/cuda_vs_cpu" kernels; then
  step kernels 150 "$bin/cuda_vs_cpu" --test-threads=1
fi

pagoda="$bin/pagoda"
if need "$pagoda" generate; then
  gguf="${PAGODA_SMOLLM2_GGUF:-}"
  if [ -z "$gguf" ]; then
    gguf="$(ls "$root"/.device/models/*.gguf 2>/dev/null | head -1)"
  fi
  if [ -z "$gguf" ] && ls "$root"/.device/models/*.gguf.part-* >/dev/null 2>&1; then
    gguf="/tmp/smollm2.gguf"
    cat "$root"/.device/models/*.gguf.part-* > "$gguf"
  fi
  if [ -n "$gguf" ]; then
    gen_model=(--model "$gguf")
    prompts=(--prompt "What is the capital of France?" --prompt "Write a haiku about the sea."
             --prompt "def fibonacci(n):" --prompt "The three laws of thermodynamics are")
    echo "SmolLM2-135M-Instruct GGUF: $gguf" > "$out/generate.model"
  else
    gen_model=(--model scripts/gpu/smollm2-135m --load-format dummy)
    prompts=(--prompt-ids 1,2,3,4,5 --prompt-ids 100,200,300 --prompt-ids 42 --prompt-ids 7,7,7,7,7,7,7,7)
    echo "SmolLM2 shape, dummy weights (no GGUF carried)" > "$out/generate.model"
  fi
  for dev in cpu cuda; do
    step "generate_$dev" 60 sh -c '"$@" > "'"$out/generate_$dev.jsonl"'"' _ \
      "$pagoda" generate "${gen_model[@]}" --device "$dev" "${prompts[@]}" --max-tokens 32 --ignore-eos --json
  done
  step generate 20 sh -c "\"$py\" scripts/gpu/compare_generate.py \"$out/generate_cpu.jsonl\" \"$out/generate_cuda.jsonl\" > \"$out/generate.json\""
  # Decode steps replay CUDA graphs by default: eager must give the same tokens.
  step generate_cuda_eager 60 sh -c '"$@" > "'"$out/generate_cuda_eager.jsonl"'"' _ \
    "$pagoda" generate "${gen_model[@]}" --device cuda --enforce-eager "${prompts[@]}" --max-tokens 32 --ignore-eos --json
  step graphs_vs_eager 20 sh -c "\"$py\" scripts/gpu/compare_generate.py \"$out/generate_cuda_eager.jsonl\" \"$out/generate_cuda.jsonl\" > \"$out/graphs_vs_eager.json\""

  llama=(--model scripts/gpu/llama3-8b --load-format dummy --device cuda --max-model-len 2048 --max-num-seqs 256)
  step throughput 150 "$pagoda" bench throughput "${llama[@]}" --num-prompts 256 --input-len 256 \
    --output-len 256 --output-json "$out/throughput.json"
  step latency_b1_eager 60 "$pagoda" bench latency "${llama[@]}" --enforce-eager --batch-size 1 \
    --input-len 128 --output-len 64 --num-iters-warmup 2 --num-iters 5 --output-json "$out/latency_b1_eager.json"
  for b in 1 32 256; do
    step "latency_b$b" 80 "$pagoda" bench latency "${llama[@]}" --batch-size "$b" --input-len 128 \
      --output-len 64 --num-iters-warmup 2 --num-iters 5 --output-json "$out/latency_b$b.json"
  done
fi

"$py" scripts/gpu/report.py "$out" scripts/gpu/llama3-8b/config.json 128 64 | tee "$out/report.log"
echo "model for generate: $(cat "$out/generate.model" 2>/dev/null)" | tee -a "$out/gpu-check.md"
