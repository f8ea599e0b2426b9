# Sourced by scripts/scale-out.sh and scripts/scale-out-throughput.sh (from
# the project root): the model, the binary, the router package, a log
# folder, and processes started with `pids+=(...)` ended on exit.
GGUF="${PAGODA_SMOLLM2_GGUF:-$(scripts/fetch-smollm2.sh)}"
BIN="${PAGODA_BIN:-target/release/pagoda}"
[ -x "$BIN" ] || cargo build --release -p pagoda-cli
python3 -c "import vllm_router" 2>/dev/null || python3 -m pip install -q "vllm-router==0.1.17"
LOGS="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_ready() { # url
  for _ in $(seq 1 240); do
    python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "$1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "not ready: $1 (logs in $LOGS)" >&2
  return 1
}
