// On-device sampling over f32 logits [num_rows, vocab], one CTA per row, so
// that only token ids (and requested logprobs) go back to the host.
//
// It mirrors the CPU sampler (engine/src/sampler): the order of tokens is
// "larger value first, then lower id" (rank_key); greedy is the first argmax;
// otherwise s = logit * (1 / temperature), min-p keeps s >= max + ln(min_p),
// top-k keeps the first k, top-p the shortest prefix whose probability mass
// (renormalized over the top-k set) reaches p, and the token is where the
// running mass of the kept prefix first exceeds u * kept mass, u being the
// request's own uniform draw (taken from its seeded generator on the host,
// so a request samples the same way whatever batch it is in).
//
// Every cut is a radix select over the 64-bit rank_key (8 passes of 8 bits at
// most, fewer when a bin holds exactly what is needed), with the mass in
// fixed point (2^40 = probability of the top token): integer sums are exact
// and order-independent, so results are bit-for-bit reproducible.
#include "common.cuh"

#define SAMPLE_THREADS 1024
#define FIXED_ONE 1099511627776.0  // 2^40

// Orderable 32-bit key of a float (larger float -> larger key; -0 == +0).
__device__ __forceinline__ u32 float_key(float f) {
  const u32 b = f == 0.f ? 0u : __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ u64 rank_key(float v, u32 i) {
  return ((u64)float_key(v) << 32) | (u64)(0xffffffffu - i);
}
__device__ __forceinline__ u32 key_index(u64 k) { return 0xffffffffu - (u32)(k & 0xffffffffu); }

__device__ __forceinline__ u64 warp_sum_u64(u64 v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ u64 warp_max_u64(u64 v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const u64 y = __shfl_xor_sync(0xffffffffu, v, o);
    v = y > v ? y : v;
  }
  return v;
}
__device__ __forceinline__ u64 warp_min_u64(u64 v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const u64 y = __shfl_xor_sync(0xffffffffu, v, o);
    v = y < v ? y : v;
  }
  return v;
}
// op: 0 = sum, 1 = max, 2 = min. `scratch` holds 32 u64.
__device__ __forceinline__ u64 block_reduce_u64(u64 v, int op, u64* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = op == 0 ? warp_sum_u64(v) : op == 1 ? warp_max_u64(v) : warp_min_u64(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const u64 id = op == 0 ? 0ull : op == 1 ? 0ull : ~0ull;
  v = lane < nwarps ? scratch[lane] : id;
  return op == 0 ? warp_sum_u64(v) : op == 1 ? warp_max_u64(v) : warp_min_u64(v);
}

struct SelectSmem {
  u64 hist_w[256];
  u32 hist_c[256];
  u64 above;
  int digit;
  int done;  // 0 = refine, 1 = found, 2 = total below target (keep all)
};

// Scaled logits and their fixed-point weights, recomputed on every pass.
struct RowView {
  const float* x;
  float inv_t;
  float max_s;
  // __fmul_rn: never contracted into an FMA with the subtraction below, so the
  // values are the host reference's bit for bit.
  __device__ __forceinline__ float s(int i) const { return __fmul_rn(x[i], inv_t); }
  __device__ __forceinline__ u64 key(int i) const { return rank_key(s(i), (u32)i); }
  __device__ __forceinline__ u64 weight(int i) const {
    return (u64)((double)expf(s(i) - max_s) * FIXED_ONE);
  }
};

// Among the candidates {key >= lb}, walked in descending key order, finds the
// key K at which the running weight first reaches `target` (>= 1); keeping
// {key >= K} keeps exactly that prefix. Returns lb when the candidates' total
// weight is below target (keep all). unit: every weight is 1 (a count).
__device__ u64 select_prefix(const RowView& row, int vocab, u64 lb, u64 target, bool unit, SelectSmem& sm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 prefix = 0, above = 0;
  for (int level = 0; level < 8; ++level) {
    const int shift = 56 - 8 * level;
    const u64 hi_mask = level == 0 ? 0ull : (~0ull << (shift + 8));
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sm.hist_w[b] = 0;
      sm.hist_c[b] = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const u64 k = row.key(i);
      if (k >= lb && (k & hi_mask) == prefix) {
        const int d = (int)((k >> shift) & 255);
        atomicAdd(&sm.hist_w[d], unit ? 1ull : row.weight(i));
        atomicAdd(&sm.hist_c[d], 1u);
      }
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l owns bins 255-8l down to 248-8l; an inclusive scan in descending bin order.
      u64 own = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) own += sm.hist_w[255 - 8 * lane - j];
      u64 incl = own;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, above + incl >= target);
      if (hit == 0) {
        if (lane == 0) sm.done = 2;
      } else if (lane == __ffs(hit) - 1) {
        u64 cum = above + incl - own;
        int d = 255 - 8 * lane - 7;
        for (int j = 0; j < 8; ++j) {
          const int b = 255 - 8 * lane - j;
          if (cum + sm.hist_w[b] >= target) {
            d = b;
            break;
          }
          cum += sm.hist_w[b];
        }
        const bool whole = sm.hist_c[d] == 1 || (unit && cum + sm.hist_c[d] == target);
        sm.above = cum;
        sm.digit = d;
        sm.done = (whole || level == 7) ? 1 : 0;
      }
    }
    __syncthreads();
    const int done = sm.done;
    if (done == 2) {
      __syncthreads();
      return lb;
    }
    above = sm.above;
    prefix |= (u64)sm.digit << shift;
    __syncthreads();  // everyone has read sm before the next level resets it
    if (done) break;
  }
  return prefix > lb ? prefix : lb;
}

__device__ u64 argmax_key(const float* x, int vocab, u64* scratch) {
  u64 best = 0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const u64 k = rank_key(x[i], (u32)i);
    best = k > best ? k : best;
  }
  return block_reduce_u64(best, 1, scratch);
}

// temperature < 1e-5 means greedy (SamplingParams::is_greedy); top_k <= 0 and
// top_p >= 1 and min_p <= 0 disable those cuts.
KERNEL_BOUNDED(sample_tokens, SampleTokensParams, SAMPLE_THREADS) {
  const float* __restrict__ logits = p.logits;
  const int vocab = p.vocab;
  const float* __restrict__ temperature = p.temperature;
  const int* __restrict__ top_k = p.top_k;
  const float* __restrict__ top_p = p.top_p;
  const float* __restrict__ min_p = p.min_p;
  const float* __restrict__ uniform = p.uniform;
  u32* __restrict__ out = p.out;
  __shared__ SelectSmem sm;
  __shared__ u64 scratch64[32];
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const float* x = logits + (size_t)r * vocab;
  const float t = temperature[r];
  if (t < 1e-5f) {
    const u64 k = argmax_key(x, vocab, scratch64);
    if (threadIdx.x == 0) out[r] = key_index(k);
    return;
  }
  RowView row;
  row.x = x;
  row.inv_t = 1.f / t;
  float mx = NEG_INF;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, row.s(i));
  mx = block_max(mx, scratch);
  row.max_s = mx;
  if (mx == NEG_INF) {  // nothing can be sampled: the CPU sampler returns token 0
    if (threadIdx.x == 0) out[r] = 0;
    return;
  }
  u64 lb = (u64)(float_key(NEG_INF) + 1u) << 32;  // excludes -inf
  const float mp = min_p[r];
  if (mp > 0.f) {
    const u64 floor_key = (u64)float_key(mx + logf(mp)) << 32;
    lb = floor_key > lb ? floor_key : lb;
  }
  const int k = top_k[r];
  if (k > 0 && k < vocab) lb = select_prefix(row, vocab, lb, (u64)k, true, sm);
  const float tp = top_p[r];
  if (tp < 1.f) {
    u64 tot = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x)
      if (row.key(i) >= lb) tot += row.weight(i);
    tot = block_reduce_u64(tot, 0, scratch64);
    u64 target = (u64)ceil((double)tp * (double)tot);
    target = target < 1 ? 1 : target;
    lb = select_prefix(row, vocab, lb, target, false, sm);
  }
  u64 tot = 0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x)
    if (row.key(i) >= lb) tot += row.weight(i);
  tot = block_reduce_u64(tot, 0, scratch64);
  u64 target = (u64)floor((double)uniform[r] * (double)tot) + 1;  // running mass > u * total
  target = target > tot ? tot : target;
  const u64 cut = select_prefix(row, vocab, lb, target, false, sm);
  // The sampled token is the smallest key kept: the element where the mass crossed.
  u64 best = ~0ull;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const u64 kk = row.key(i);
    if (kk >= cut && kk < best) best = kk;
  }
  best = block_reduce_u64(best, 2, scratch64);
  if (threadIdx.x == 0) out[r] = best == ~0ull ? 0u : key_index(best);
}

// log(sum(exp(x))) of one row, stable; -inf for an all -inf row.
__device__ float row_logsumexp(const float* x, int vocab, float* scratch) {
  float mx = NEG_INF;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, x[i]);
  mx = block_max(mx, scratch);
  if (mx == NEG_INF) return NEG_INF;
  float s = 0.f;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) s += expf(x[i] - mx);
  return mx + logf(block_sum(s, scratch));
}

#define LOGPROBS_MAX_K 1024

// The k most likely tokens of each raw row, highest first (lower id first on
// ties), as (id, logit - logsumexp). k <= min(vocab, 1024).
KERNEL_BOUNDED(logprobs_topk, LogprobsTopkParams, SAMPLE_THREADS) {
  const float* __restrict__ logits = p.logits;
  const int vocab = p.vocab, k = p.k;
  u32* __restrict__ top_ids = p.top_ids;
  float* __restrict__ top_logprobs = p.top_logprobs;
  __shared__ SelectSmem sm;
  __shared__ float scratch[32];
  __shared__ u64 keys[LOGPROBS_MAX_K];
  __shared__ int count;
  const int r = blockIdx.x;
  const float* x = logits + (size_t)r * vocab;
  const float lse = row_logsumexp(x, vocab, scratch);
  if (k <= 0) return;
  RowView row;
  row.x = x;
  row.inv_t = 1.f;
  row.max_s = 0.f;
  const u64 cut = select_prefix(row, vocab, 0ull, (u64)k, true, sm);
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const u64 kk = rank_key(x[i], (u32)i);
    if (kk >= cut) {
      const int slot = atomicAdd(&count, 1);
      if (slot < LOGPROBS_MAX_K) keys[slot] = kk;
    }
  }
  __syncthreads();
  const int n = min(count, min(k, LOGPROBS_MAX_K));
  // Rank by counting larger keys (keys are unique): a deterministic order.
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += keys[j] > keys[i];
    const u32 id = key_index(keys[i]);
    top_ids[(size_t)r * k + rank] = id;
    top_logprobs[(size_t)r * k + rank] = x[id] - lse;
  }
}

// The logprob of a given token per row (sampled, or the next prompt token)
// and its rank: 1 + the number of strictly larger logits.
KERNEL_BOUNDED(token_logprobs, TokenLogprobsParams, SAMPLE_THREADS) {
  const float* __restrict__ logits = p.logits;
  const int vocab = p.vocab;
  const u32* __restrict__ tokens = p.tokens;
  float* __restrict__ out_logprob = p.out_logprob;
  u32* __restrict__ out_rank = p.out_rank;
  __shared__ float scratch[32];
  __shared__ u64 scratch64[32];
  const int r = blockIdx.x;
  const float* x = logits + (size_t)r * vocab;
  const float lse = row_logsumexp(x, vocab, scratch);
  const u32 tok = tokens[r];
  const float chosen = tok < (u32)vocab ? x[tok] : NEG_INF;
  u64 above = 0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) above += x[i] > chosen;
  above = block_reduce_u64(above, 0, scratch64);
  if (threadIdx.x == 0) {
    out_logprob[r] = chosen - lse;
    out_rank[r] = (u32)above + 1;
  }
}

// Sparse per-row edits, in CSR form (offsets [num_rows + 1]); each row's ids
// must be unique. logit_bias: x += value (value -inf masks: min_tokens).
KERNEL(apply_logit_bias, LogitBiasParams) {
  float* __restrict__ logits = p.logits;
  const int vocab = p.vocab;
  const u32* __restrict__ offsets = p.offsets;
  const u32* __restrict__ ids = p.ids;
  const float* __restrict__ values = p.values;
  const int r = blockIdx.x;
  for (u32 e = offsets[r] + threadIdx.x; e < offsets[r + 1]; e += blockDim.x) {
    const u32 id = ids[e];
    if (id >= (u32)vocab) continue;
    // -inf sets (as the CPU's apply_edits), so a +inf or NaN logit is masked too.
    float* l = logits + (size_t)r * vocab + id;
    *l = values[e] == NEG_INF ? NEG_INF : *l + values[e];
  }
}

// vLLM's penalties. ids: every distinct token of the prompt and the output;
// output_counts: its count in the output (0 if only in the prompt).
// Repetition divides positive / multiplies negative logits of every listed
// token; frequency and presence apply to output tokens.
KERNEL(apply_penalties, PenaltiesParams) {
  float* __restrict__ logits = p.logits;
  const int vocab = p.vocab;
  const u32* __restrict__ offsets = p.offsets;
  const u32* __restrict__ ids = p.ids;
  const u32* __restrict__ output_counts = p.output_counts;
  const float* __restrict__ repetition = p.repetition;
  const float* __restrict__ frequency = p.frequency;
  const float* __restrict__ presence = p.presence;
  const int r = blockIdx.x;
  const float rp = repetition[r], fp = frequency[r], pp = presence[r];
  for (u32 e = offsets[r] + threadIdx.x; e < offsets[r + 1]; e += blockDim.x) {
    const u32 id = ids[e];
    if (id >= (u32)vocab) continue;
    float* l = logits + (size_t)r * vocab + id;
    float v = *l;
    if (rp != 1.f) v = v > 0.f ? v / rp : v * rp;
    const u32 c = output_counts[e];
    // Rounded like the CPU: (fp * c) + pp, then the subtraction (no FMA).
    if (c > 0 && (fp != 0.f || pp != 0.f)) v = __fsub_rn(v, __fadd_rn(__fmul_rn(fp, (float)c), pp));
    *l = v;
  }
}

// Structured-output masks (vLLM's apply_token_bitmask_inplace), before any
// other processor: row j of `bitmask` ([num_masked, mask_words] packed bits,
// bit i % 32 of word i / 32 allows token i) masks logits row mask_rows[j];
// disallowed tokens, and tokens past the mask's words, become -inf (a row
// index past num_rows is skipped, never written). One thread per logit, so
// a warp reads one mask word and writes 128 contiguous bytes.
// grid = (ceil(vocab / blockDim.x), num_masked).
KERNEL(apply_token_bitmask, TokenBitmaskParams) {
  const int vocab = p.vocab;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= vocab) return;
  const int j = blockIdx.y;
  const u32 row = p.mask_rows[j];
  if (row >= (u32)p.num_rows) return;
  const int w = i >> 5;
  const u32 bits = w < p.mask_words ? p.bitmask[(size_t)j * p.mask_words + w] : 0u;
  if (!((bits >> (i & 31)) & 1u)) p.logits[(size_t)row * vocab + i] = NEG_INF;
}
