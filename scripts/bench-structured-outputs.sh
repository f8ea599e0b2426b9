#!/bin/bash
# Half constrained vs none: two concurrent `pagoda bench serve` clients
# against one server; in the second run one client asks for JSON mode.
set -u
BIN=${PAGODA_BIN:-target/release/pagoda}
M=$PAGODA_SMOLLM2_GGUF
OUT=${OUT:-/tmp/pagoda-bench-structured}
mkdir -p $OUT
PORT=8391
$BIN --log-level warn serve --model $M --device cpu --host 127.0.0.1 --port $PORT \
  --max-num-seqs 32 --kv-cache-memory 1GiB > $OUT/server.log 2>&1 &
SPID=$!
for i in $(seq 1 120); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 1; done
client() { # name extra
  $BIN bench serve --port $PORT --tokenizer $M --dataset-name random \
    --random-input-len 32 --random-output-len 32 --num-prompts 32 --max-concurrency 8 \
    --request-rate inf --seed "$3" --ignore-eos --disable-tqdm "${@:4}" > $OUT/$1.txt 2>&1
}
# warm-up (builds the token trie once)
client warm x 9 --num-prompts 4 --extra-body '{"response_format": {"type": "json_object"}}'
for round in 1 2; do
  client none_a$round x 1 & a=$!; client none_b$round x 2 & b=$!; wait $a $b
  client half_free$round x 1 & a=$!
  client half_json$round x 2 --extra-body '{"response_format": {"type": "json_object"}}' & b=$!
  wait $a $b
done
kill $SPID; wait $SPID 2>/dev/null
grep -H "Output token throughput\|Request throughput\|Successful" $OUT/*.txt
