#!/usr/bin/env bash
# Throughput and TTFT of 1 vs N `pagoda serve` replicas on this machine:
# `pagoda bench serve` against one replica directly, then through
# vllm-router (round_robin) over 1 replica and over N replicas. A
# benchmark, not a test: results go in BENCHMARKS.md ("Scale-out behind
# vllm-router"). On one machine the replicas share its cores, so this
# measures what replication costs or gains here, not what N machines give.
#
# usage: scripts/scale-out-throughput.sh [N (default 3)]
#   PAGODA_BIN (default target/release/pagoda), NUM_PROMPTS (64),
#   CONCURRENCY (16), INPUT_LEN (128), OUTPUT_LEN (64)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-3}"
source scripts/scale_out/common.sh

replicas=()
for i in $(seq 0 $((N - 1))); do
  port=$((18300 + i))
  "$BIN" serve --model "$GGUF" --device cpu --served-model-name smol \
    --host 127.0.0.1 --port "$port" --max-model-len 2048 \
    --kv-cache-memory 256MiB --max-num-seqs 32 >"$LOGS/replica$i.log" 2>&1 &
  pids+=($!)
  replicas+=("http://127.0.0.1:$port")
done
for r in "${replicas[@]}"; do wait_ready "$r/health"; done

bench() { # label base-url
  "$BIN" bench serve --base-url "$2" --model smol --dataset-name random \
    --random-input-len "${INPUT_LEN:-128}" --random-output-len "${OUTPUT_LEN:-64}" \
    --num-prompts "${NUM_PROMPTS:-64}" --max-concurrency "${CONCURRENCY:-16}" \
    --tokenizer "$GGUF" --disable-tqdm --seed 7 --percentile-metrics ttft,tpot,e2el \
    --metric-percentiles 50,99 >"$LOGS/bench-$1.txt" 2>&1
  echo "== $1"
  grep -E "Successful requests|Request throughput|Output token throughput|Median TTFT|P99 TTFT|Median TPOT" \
    "$LOGS/bench-$1.txt"
}

router() { # label port workers...
  local label=$1 port=$2; shift 2
  python3 -m vllm_router.launch_router --host 127.0.0.1 --port "$port" --worker-urls "$@" \
    --prometheus-host 127.0.0.1 --prometheus-port $((port + 700)) --policy round_robin \
    >"$LOGS/router-$label.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_ready "http://127.0.0.1:$port/v1/models"
  bench "$label" "http://127.0.0.1:$port"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

bench "1-replica-direct" "${replicas[0]}"
router "1-replica-router" 18400 "${replicas[0]}"
router "$N-replicas-router" 18401 "${replicas[@]}"
echo "logs: $LOGS"
