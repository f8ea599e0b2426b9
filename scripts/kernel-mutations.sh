#!/usr/bin/env bash
# Mutation evidence for the emulated kernel tests: injects typical CUDA
# kernel bugs into kernels/src/cuda/cu/*.cu one at a time, runs the emulated
# suite (cargo test -p pagoda-kernels --test emu_kernels) on each, and prints
# a Markdown table of which tests caught it. Every source is restored after
# each run (and on exit). Needs only g++ and cargo; ~30 s per mutation.
# The suite is emu_kernels plus cuda_vs_cpu (whose `emulated::` tests run
# the launchers on the emulator; the MoE kernels are checked there).
#   usage: scripts/kernel-mutations.sh [NAME_FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
cu=kernels/src/cuda/cu
filter="${1:-}"
backup=$(mktemp -d)
trap 'for f in "$backup"/*; do [ -e "$f" ] && cp "$f" "$cu/$(basename "$f")"; done; rm -rf "$backup"' EXIT

# name @@ file @@ exact original text @@ replacement
mutations=(
  "ldmatrix A address (rows 8-15 read rows 0-7)@@attention_prefill.cu@@q_s + (warp * 16 + (lane & 15)) * STRIDE@@q_s + (warp * 16 + (lane & 7)) * STRIDE"
  "wrong mma B fragment (upper n-tile reuses the lower)@@attention_prefill.cu@@mma_16816<T>(s[2 * np + 1], a, b + 2);@@mma_16816<T>(s[2 * np + 1], a, b);"
  "off-by-one causal mask (sees one future key)@@attention_prefill.cu@@if (key > qp || key >= num_keys || (window > 0@@if (key > qp + 1 || key >= num_keys || (window > 0"
  "prefill window off by one (one key too many)@@attention_prefill.cu@@(window > 0 && key <= qp - window)@@(window > 0 && key < qp - window)"
  "prefill loads K/V before the CTA's window (freed slots)@@attention_prefill.cu@@if (t >= first_key && t < num_keys && lb < max_blocks_per_seq)@@if (t < num_keys && lb < max_blocks_per_seq)"
  "prefill skips a key its CTA's first row sees@@attention_prefill.cu@@max(0, pos0 + row0 + 1 - window)@@max(0, pos0 + row0 + 2 - window)"
  "prefill soft-cap dropped@@attention_prefill.cu@@        if (softcap_log2 > 0.f) v = softcap_log2 * tanhf(v / softcap_log2);
@@"
  "decode window off by one (reads a freed slot)@@attention_decode.cu@@const int first = window > 0 ? max(0, ctx - window) : 0;@@const int first = window > 0 ? max(0, ctx - window - 1) : 0;"
  "decode soft-cap dropped@@attention_decode.cu@@        if (softcap_log2 > 0.f) acc = softcap_log2 * tanhf(acc / softcap_log2);
@@"
  "reduce counts partitions from key 0 under a window@@attention_decode.cu@@const int span = window > 0 ? min(ctx, window) : ctx;@@const int span = ctx;"
  "dropped __syncthreads before the next K/V tile@@attention_prefill.cu@@    __syncthreads();  // the previous tile is consumed (and Q is in place)@@    // barrier dropped"
  "wrong GQA head map (prefill)@@attention_prefill.cu@@const int kv_head = head / (num_heads / num_kv_heads);@@const int kv_head = head % num_kv_heads;"
  "split-K reduce weight without the partition's sum@@attention_decode.cu@@const float wi = tmp_sum[base + i] * fast_exp2(tmp_max[base + i] - b);@@const float wi = fast_exp2(tmp_max[base + i] - b);"
  "dropped __syncthreads before the decode tree reuses smem@@attention_decode.cu@@  __syncthreads();  // \`work\` is reused below@@  // barrier dropped"
  "decode group offset ignores the KV head@@attention_decode.cu@@const int h0 = kv_head * group + chunk * heads_per_cta;@@const int h0 = chunk * heads_per_cta;"
  "GeGLU tanh argument without the cubic term@@activation.cu@@return 0.5f * g * (1.f + tanhf(inner));@@return 0.5f * g * (1.f + tanhf(0.7978845608028654f * g));"
  "final soft-cap without dividing by the cap@@activation.cu@@x[i] = from_float<T>(tanhf(to_float(x[i]) / cap) * cap);@@x[i] = from_float<T>(tanhf(to_float(x[i])) * cap);"
  "Gemma gain 1 + w rounded to the element type first@@norm.cu@@return gemma ? from_float<T>(v * r * (1.f + to_float(w)))@@return gemma ? norm_scale<T>(v, r, from_float<T>(1.f + to_float(w)))"
  "Gemma norm rounds before the gain@@norm.cu@@return gemma ? from_float<T>(v * r * (1.f + to_float(w)))@@return gemma ? from_float<T>(to_float(from_float<T>(v * r)) * (1.f + to_float(w)))"
  "MoE top-k keeps the higher id among equals@@moe.cu@@if (best < 0 || pe > best_p) {@@if (best < 0 || pe >= best_p) {"
  "MoE combine drops the shared expert's gate@@moe.cu@@if (p.shared_out) acc += gate * to_float(@@if (p.shared_out) acc += to_float("
  "MoE matmul reads the first expert's matrix for every row@@moe.cu@@reinterpret_cast<const T*>(p.weights[p.row_expert[r]])@@reinterpret_cast<const T*>(p.weights[0])"
  "MoE align maps a gathered row to the wrong token@@moe.cu@@p.row_token[row] = (u32)(i / p.top_k);@@p.row_token[row] = (u32)(i % p.top_k);"
  "reshape_and_cache writes the previous token's slot@@cache.cu@@const i64 slot = slot_mapping[t];@@const i64 slot = slot_mapping[t > 0 ? t - 1 : 0];"
  "decode drops each partition's last key@@attention_decode.cu@@const int end = min(ctx, start + partition_size);@@const int end = min(ctx, start + partition_size) - 1;"
  "RMSNorm mean over dim - 1@@norm.cu@@/ (float)dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i]@@/ (float)(dim - 1) + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i]"
  "rotary sign error in the second half@@rotary.cu@@p[j + half] = from_float<T>(x2 * c + x1 * s);@@p[j + half] = from_float<T>(x2 * c - x1 * s);"
  "sampler: logit bias without the vocab bound check@@sampling.cu@@    if (id >= (u32)vocab) continue;
    // -inf sets@@    // -inf sets"
  "sampler: top-k keeps k + 1 tokens@@sampling.cu@@lb = select_prefix(row, vocab, lb, (u64)k, true, sm);@@lb = select_prefix(row, vocab, lb, (u64)k + 1, true, sm);"
  "token bitmask: masked row index not bounds-checked@@sampling.cu@@  if (row >= (u32)p.num_rows) return;
@@"
  "token bitmask: tokens past the mask's words allowed@@sampling.cu@@p.bitmask[(size_t)j * p.mask_words + w] : 0u;@@p.bitmask[(size_t)j * p.mask_words + w] : ~0u;"
)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
run_suite() {
  cargo test -q -p pagoda-kernels --test emu_kernels --test cuda_vs_cpu 2>&1 | grep -E '^    [a-z_:]+$' | sed 's/^ *//' | sort -u |
    paste -sd, - | sed 's/,/, /g' || true
}

echo "baseline: building and running the unmutated suite" >&2
if ! cargo test -q -p pagoda-kernels --test emu_kernels --test cuda_vs_cpu >/dev/null 2>&1; then
  echo "the unmutated suite fails: fix that first" >&2
  exit 1
fi

echo "| # | injected bug | file | caught by |"
echo "|---|---|---|---|"
n=0
missed=0
for m in "${mutations[@]}"; do
  name="${m%%@@*}"; rest="${m#*@@}"
  file="${rest%%@@*}"; rest="${rest#*@@}"
  old="${rest%%@@*}"; new="${rest#*@@}"
  [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && continue
  n=$((n + 1))
  cp "$cu/$file" "$backup/$file"
  python3 - "$cu/$file" "$old" "$new" <<'EOF'
import sys
path, old, new = sys.argv[1:4]
s = open(path).read()
if s.count(old) != 1:
    sys.exit(f"{path}: the mutation's original text occurs {s.count(old)} times")
open(path, "w").write(s.replace(old, new))
EOF
  failed=$(run_suite)
  cp "$backup/$file" "$cu/$file"
  if [ -z "$failed" ]; then
    failed="**NOT CAUGHT**"
    missed=$((missed + 1))
  fi
  echo "| $n | $name | $file | $failed |"
done
echo
echo "$n mutations, $((n - missed)) caught." >&2
[ "$missed" -eq 0 ]
