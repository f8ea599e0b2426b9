#!/usr/bin/env bash
# The CPU figures of BENCHMARKS.md in one run, on a quiet machine:
#   1. `pagoda bench throughput` beside HF transformers `generate`
#      (benches/peers/hf_generate.py) on SmolLM2-135M, uniform and mixed lengths;
#   2. `pagoda bench serve` against `pagoda serve` and against llama.cpp's
#      `llama-server` (same GGUF, same client), at 1, 8 and 32 streams.
# Needs: a release build (cargo build --release -p pagoda-cli), torch +
# transformers + gguf + accelerate for the HF peer, and LLAMA_SERVER pointing
# at a llama-server binary (built from the llama-cpp-python sdist, see
# ../shared/models/README.md) for the serve comparison (skipped if unset).
# Results land in $OUT_DIR (default target/bench-cpu) as JSON, and a summary
# is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
pagoda=target/release/pagoda
gguf="${PAGODA_SMOLLM2_GGUF:-$(scripts/fetch-smollm2.sh)}"
out="${OUT_DIR:-target/bench-cpu}"
mkdir -p "$out"
only="${1:-all}"

if [ "$only" = all ] || [ "$only" = throughput ]; then
  for kind in uniform mixed; do
    if [ $kind = uniform ]; then lens="--input-len 128 --output-len 128"; else lens="--input-len 144 --output-len 144 --random-range-ratio 0.7777"; fi
    echo "== throughput $kind: HF transformers"
    python3 benches/peers/hf_generate.py --gguf "$gguf" --num-prompts 64 $lens --seed 0 \
      --save-dataset "$out/$kind-dataset.json" --output-json "$out/hf-$kind.json" | tail -3
    echo "== throughput $kind: pagoda"
    $pagoda bench throughput --model "$gguf" --device cpu --num-prompts 64 $lens --seed 0 \
      --output-json "$out/pagoda-$kind.json" 2>&1 | grep -E "Throughput|Total"
  done
fi

# Each concurrency level gets its own prompts (seed = streams): with one
# seed, a level would find the previous level's prompts in the prefix cache
# (Pagoda's and llama-server's alike) and measure cached prefills.
serve_bench() { # name port concurrency prompts
  $pagoda bench serve --port "$2" --endpoint /v1/completions --dataset-name random \
    --random-input-len 128 --random-output-len 128 --num-prompts "$4" --max-concurrency "$3" \
    --ignore-eos --seed "$3" --tokenizer "$gguf" --disable-tqdm --save-result --result-dir "$out" \
    --result-filename "serve-$1-c$3.json" 2>&1 | grep -E "Output token throughput|Mean TTFT|P99 TTFT|Mean TPOT|Successful"
}
wait_up() { for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$1/v1/models" >/dev/null && return 0; sleep 0.5; done; return 1; }

if [ "$only" = all ] || [ "$only" = serve ]; then
  $pagoda serve --model "$gguf" --port 8011 --device cpu --kv-cache-memory 2GiB --max-num-seqs 64 \
    --disable-log-requests --log-level warn & pid=$!
  wait_up 8011
  for c in 1 8 32; do
    n=$([ $c = 1 ] && echo 16 || echo 64)
    echo "== serve pagoda, $c streams, $n prompts"; serve_bench pagoda 8011 $c $n
  done
  kill -INT $pid; wait $pid || true
  if [ -n "${LLAMA_SERVER:-}" ]; then
    "$LLAMA_SERVER" -m "$gguf" --port 8012 -np 32 -cb -c 16384 -t 2 --log-disable >/dev/null 2>&1 & lpid=$!
    wait_up 8012
    for c in 1 8 32; do
      n=$([ $c = 1 ] && echo 16 || echo 64)
      echo "== serve llama-server, $c streams, $n prompts"; serve_bench llama 8012 $c $n
    done
    kill $lpid; wait $lpid || true
  fi
fi
