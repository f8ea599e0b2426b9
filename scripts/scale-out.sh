#!/usr/bin/env bash
# Three `pagoda serve` replicas on loopback behind the real vllm-router
# (PyPI `vllm-router`, the vLLM project's Rust router), routed once with
# `--policy kv_aware` (fed by Pagoda's KV-cache events) and once with
# `--policy round_robin`, then `--policy power_of_two` (load-aware);
# scripts/scale_out/workload.py sends a long shared-prefix prompt,
# follow-ups with that prefix, then unrelated concurrent traffic, and
# prints per-replica prefix-cache hits. Last, scripts/scale_out/failover.py
# SIGKILLs one replica while requests are in flight behind a round-robin
# router and fails if any request is lost. Results go in BENCHMARKS.md
# ("Scale-out behind vllm-router").
#
# usage: scripts/scale-out.sh   (PAGODA_BIN picks the binary; default
# target/release/pagoda, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/scale_out/common.sh

replicas=()
sources=()
for i in 0 1 2; do
  port=$((18100 + i)); pub=$((18500 + i)); replay=$((18600 + i))
  "$BIN" serve --model "$GGUF" --device cpu --served-model-name smol \
    --host 127.0.0.1 --port "$port" --max-model-len 2048 \
    --kv-cache-memory 256MiB --max-num-seqs 8 \
    --kv-events-config "{\"enable_kv_cache_events\": true, \"endpoint\": \"tcp://*:$pub\", \"replay_endpoint\": \"tcp://*:$replay\", \"topic\": \"kv-events\"}" \
    >"$LOGS/replica$i.log" 2>&1 &
  pids+=($!)
  replicas+=("http://127.0.0.1:$port")
  sources+=(--kv-event-source "http://127.0.0.1:$port=tcp://127.0.0.1:$pub"
            --kv-event-replay-source "http://127.0.0.1:$port=tcp://127.0.0.1:$replay")
done
for r in "${replicas[@]}"; do wait_ready "$r/health"; done

run_policy() { # policy port seed extra-args...
  local policy=$1 port=$2 seed=$3; shift 3
  python3 -m vllm_router.launch_router --host 127.0.0.1 --port "$port" --worker-urls "${replicas[@]}" \
    --prometheus-host 127.0.0.1 --prometheus-port $((port + 700)) \
    --policy "$policy" "$@" >"$LOGS/router-$policy.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_ready "http://127.0.0.1:$port/v1/models"
  python3 scripts/scale_out/workload.py "http://127.0.0.1:$port" "${replicas[@]}" \
    --label "$policy" --seed "$seed"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

run_policy kv_aware 18200 1 "${sources[@]}" --kv-event-block-size 16 --kv-event-model smol
run_policy round_robin 18201 2
run_policy power_of_two 18202 4

# Failover: replica 2 dies mid-load; the router's retries (its default, 5
# attempts with backoff) must carry every request to a survivor.
python3 -m vllm_router.launch_router --host 127.0.0.1 --port 18203 --worker-urls "${replicas[@]}" \
  --prometheus-host 127.0.0.1 --prometheus-port 18903 --policy round_robin \
  >"$LOGS/router-failover.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:18203/v1/models"
python3 scripts/scale_out/failover.py "http://127.0.0.1:18203" "${replicas[@]}" \
  --kill-pid "${pids[2]}" --victim "${replicas[2]}" --router-metrics http://127.0.0.1:18903
echo "logs: $LOGS"
