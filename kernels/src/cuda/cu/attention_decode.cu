// Varlen paged attention, decode path: split along the context (the idea of
// flash-decoding and of vLLM's paged attention v2).
//
// Only sequences with exactly one new token are handled here (the prefill
// kernel skips them when told to). One CTA = 4 warps = one sequence, one KV
// head, up to DEC_MAX_GROUP of the query heads sharing it (GQA/MQA: K and V
// are read once for the whole group), and one partition of `partition_size`
// context tokens.
//
//   1. scores: two threads per key, 16 keys per warp step, 16-byte loads;
//   2. per head max and sum of 2^(s - max) over the partition;
//   3. P·V: each thread owns 8 output columns of one key lane; the key lanes
//      are summed by a fixed tree in shared memory (deterministic).
// A sequence with one partition writes `out` directly; otherwise the
// partition writes its normalized partial output, max and sum, and
// paged_attention_reduce combines them. Partitions start at the first key
// the token sees: key 0, or seq_len - W under a sliding window W (slots
// before it are never read); a logit cap C maps s to C·tanh(s / C).
//
// Grid: x = num_kv_heads * ceil(group / heads_per_cta), y = num_seqs,
// z = max_partitions. Dynamic shared memory (floats):
// heads_per_cta * (D + max(partition_size, (NTL / 2) * D)), NTL = 128 / (D / 8).
#include "common.cuh"

#define DEC_THREADS 128
#define DEC_WARPS 4
#define DEC_MAX_GROUP 8

template <typename T, int D>
__device__ __forceinline__ void decode_attention(
    T* __restrict__ out, int out_stride, float* __restrict__ tmp_out, float* __restrict__ tmp_max,
    float* __restrict__ tmp_sum, const T* __restrict__ q, int q_stride, const T* __restrict__ k_cache,
    const T* __restrict__ v_cache, const u32* __restrict__ block_tables, int max_blocks_per_seq,
    const u32* __restrict__ query_start_loc, const u32* __restrict__ seq_lens, int num_heads,
    int num_kv_heads, int block_size, float scale_log2, int heads_per_cta, int partition_size,
    int max_partitions, int window, float softcap_log2) {
  static_assert(D % 16 == 0, "head size");
  constexpr int NV = D / 16;                   // 16-byte vectors per thread (2 threads per key)
  constexpr int SLOTS = D / 8;                 // 16-byte vectors per row
  constexpr int NTL = DEC_THREADS / SLOTS;     // key lanes in the P·V phase
  DYN_SMEM(u8, smem_raw);
  float* q_s = reinterpret_cast<float*>(smem_raw);  // [heads_per_cta][D], pre-scaled
  float* work = q_s + heads_per_cta * D;            // logits [h][partition_size], then the tree buffer
  __shared__ float stat_s[DEC_MAX_GROUP][2];

  const int seq = blockIdx.y;
  const int q_start = (int)query_start_loc[seq];
  if ((int)query_start_loc[seq + 1] - q_start != 1) return;
  const int ctx = (int)seq_lens[seq];
  const int part = blockIdx.z;
  const int group = num_heads / num_kv_heads;
  const int chunks = (group + heads_per_cta - 1) / heads_per_cta;
  const int kv_head = blockIdx.x / chunks;
  const int chunk = blockIdx.x % chunks;
  const int h0 = kv_head * group + chunk * heads_per_cta;
  const int nh = min(heads_per_cta, group - chunk * heads_per_cta);
  if (ctx <= 0) {
    // A padding row of a graph-padded batch (seq_len 0, slot -1): it attends
    // to nothing; write zeros, as the CPU kernel does, so the row is defined.
    if (part == 0)
      for (int i = threadIdx.x; i < nh * D; i += DEC_THREADS)
        out[(size_t)q_start * out_stride + h0 * D + i] = from_float<T>(0.f);
    return;
  }
  const int first = window > 0 ? max(0, ctx - window) : 0;
  const int start = first + part * partition_size;
  if (start >= ctx) return;
  const int end = min(ctx, start + partition_size);
  const int num_parts = (ctx - first + partition_size - 1) / partition_size;
  if (num_parts > max_partitions) return;  // the host sized the grid too small: never read past tmp
  const u32* bt = block_tables + (size_t)seq * max_blocks_per_seq;

  for (int i = threadIdx.x; i < nh * D; i += DEC_THREADS)
    q_s[i] = to_float(q[(size_t)q_start * q_stride + h0 * D + i]) * scale_log2;
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // 1. scores
  for (int base = start + warp * 16; base < end; base += DEC_WARPS * 16) {
    const int t = base + (lane >> 1);
    const int half = lane & 1;
    const int lb = t / block_size;
    const bool valid = t < end && lb < max_blocks_per_seq;
    uint4 kv[NV];
    if (valid) {
      const size_t slot = (size_t)bt[lb] * block_size + t % block_size;
      const uint4* row = reinterpret_cast<const uint4*>(k_cache + (slot * num_kv_heads + kv_head) * D);
#pragma unroll
      for (int j = 0; j < NV; ++j) kv[j] = row[half + 2 * j];
    } else {
#pragma unroll
      for (int j = 0; j < NV; ++j) kv[j] = make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int g = 0; g < DEC_MAX_GROUP; ++g) {
      if (g < nh) {
        float acc = 0.f;
#pragma unroll
        for (int j = 0; j < NV; ++j) {
          float kf[8];
          unpack8<T>(kv[j], kf);
          const float* qg = q_s + g * D + (half + 2 * j) * 8;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc += qg[e] * kf[e];
        }
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        if (softcap_log2 > 0.f) acc = softcap_log2 * tanhf(acc / softcap_log2);
        if (t < end && half == 0) work[g * partition_size + (t - start)] = valid ? acc : NEG_INF;
      }
    }
  }
  __syncthreads();

  // 2. softmax statistics, one warp per head
  const int n = end - start;
  for (int g = warp; g < nh; g += DEC_WARPS) {
    float* lg = work + g * partition_size;
    float mx = NEG_INF;
    for (int i = lane; i < n; i += WARP_SIZE) mx = fmaxf(mx, lg[i]);
    mx = warp_max(mx);
    const float b = mx == NEG_INF ? 0.f : mx;
    float sm = 0.f;
    for (int i = lane; i < n; i += WARP_SIZE) {
      const float p = fast_exp2(lg[i] - b);
      lg[i] = p;
      sm += p;
    }
    sm = warp_sum(sm);
    if (lane == 0) {
      stat_s[g][0] = mx;
      stat_s[g][1] = sm;
    }
  }
  __syncthreads();

  // 3. P·V
  const int slot = threadIdx.x % SLOTS, kl = threadIdx.x / SLOTS;
  float acc[DEC_MAX_GROUP][8];
#pragma unroll
  for (int g = 0; g < DEC_MAX_GROUP; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
  if (kl < NTL) {
    for (int t = start + kl; t < end; t += NTL) {
      const int lb = t / block_size;
      if (lb >= max_blocks_per_seq) break;
      const size_t s = (size_t)bt[lb] * block_size + t % block_size;
      const uint4 vv = reinterpret_cast<const uint4*>(v_cache + (s * num_kv_heads + kv_head) * D)[slot];
      float vf[8];
      unpack8<T>(vv, vf);
#pragma unroll
      for (int g = 0; g < DEC_MAX_GROUP; ++g) {
        if (g < nh) {
          const float p = work[g * partition_size + (t - start)];
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[g][e] += p * vf[e];
        }
      }
    }
  }
  __syncthreads();  // `work` is reused below
  for (int cnt = NTL; cnt > 1;) {
    const int upper = (cnt + 1) / 2;  // lanes [upper, cnt) hand their sums to lanes [0, cnt - upper)
    if (kl >= upper && kl < cnt) {
#pragma unroll
      for (int g = 0; g < DEC_MAX_GROUP; ++g)
        if (g < nh)
#pragma unroll
          for (int e = 0; e < 8; ++e) work[((kl - upper) * heads_per_cta + g) * D + slot * 8 + e] = acc[g][e];
    }
    __syncthreads();
    if (kl < cnt - upper) {
#pragma unroll
      for (int g = 0; g < DEC_MAX_GROUP; ++g)
        if (g < nh)
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[g][e] += work[(kl * heads_per_cta + g) * D + slot * 8 + e];
    }
    __syncthreads();
    cnt = upper;
  }

  if (kl == 0) {
#pragma unroll
    for (int g = 0; g < DEC_MAX_GROUP; ++g) {
      if (g < nh) {
        const float sm = stat_s[g][1];
        const float inv = sm > 0.f ? 1.f / sm : 0.f;
        float r[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) r[e] = acc[g][e] * inv;
        const int h = h0 + g;
        if (num_parts == 1) {
          *reinterpret_cast<uint4*>(out + (size_t)q_start * out_stride + h * D + slot * 8) = pack8<T>(r);
        } else {
          const size_t idx = ((size_t)seq * num_heads + h) * max_partitions + part;
          float4* dst = reinterpret_cast<float4*>(tmp_out + idx * D + slot * 8);
          dst[0] = make_float4(r[0], r[1], r[2], r[3]);
          dst[1] = make_float4(r[4], r[5], r[6], r[7]);
          if (slot == 0) {
            tmp_max[idx] = stat_s[g][0];
            tmp_sum[idx] = sm;
          }
        }
      }
    }
  }
}

// Combines the partitions of one (sequence, head): weights sum_i * 2^(max_i - max).
// Grid: x = num_heads, y = num_seqs; 128 threads; dynamic smem: max_partitions floats.
template <typename T, int D>
__device__ __forceinline__ void decode_reduce(T* __restrict__ out, int out_stride,
                                              const float* __restrict__ tmp_out,
                                              const float* __restrict__ tmp_max,
                                              const float* __restrict__ tmp_sum,
                                              const u32* __restrict__ query_start_loc,
                                              const u32* __restrict__ seq_lens, int num_heads,
                                              int partition_size, int max_partitions, int window) {
  DYN_SMEM(u8, smem_raw);
  float* w = reinterpret_cast<float*>(smem_raw);
  __shared__ float scratch[32];
  const int seq = blockIdx.y, h = blockIdx.x;
  const int q_start = (int)query_start_loc[seq];
  if ((int)query_start_loc[seq + 1] - q_start != 1) return;
  const int ctx = (int)seq_lens[seq];
  const int span = window > 0 ? min(ctx, window) : ctx;  // as decode_attention partitions
  const int num_parts = (span + partition_size - 1) / partition_size;
  if (num_parts <= 1 || num_parts > max_partitions) return;
  const size_t base = ((size_t)seq * num_heads + h) * max_partitions;
  float mx = NEG_INF;
  for (int i = threadIdx.x; i < num_parts; i += blockDim.x) mx = fmaxf(mx, tmp_max[base + i]);
  mx = block_max(mx, scratch);
  const float b = mx == NEG_INF ? 0.f : mx;
  float tot = 0.f;
  for (int i = threadIdx.x; i < num_parts; i += blockDim.x) {
    const float wi = tmp_sum[base + i] * fast_exp2(tmp_max[base + i] - b);
    w[i] = wi;
    tot += wi;
  }
  tot = block_sum(tot, scratch);  // also orders the w[] writes before the reads below
  const float inv = tot > 0.f ? 1.f / tot : 0.f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.f;
    for (int i = 0; i < num_parts; ++i) acc += w[i] * tmp_out[(base + i) * D + d];
    out[(size_t)q_start * out_stride + h * D + d] = from_float<T>(acc * inv);
  }
}

#define DECODE_KERNELS(SUFFIX, T, D)                                                                 \
  KERNEL_BOUNDED(paged_attention_decode_##SUFFIX##_d##D, AttentionParams, DEC_THREADS) {            \
    decode_attention<T, D>(static_cast<T*>(p.out), p.out_stride, p.tmp_out, p.tmp_max, p.tmp_sum,   \
                           static_cast<const T*>(p.q), p.q_stride, static_cast<const T*>(p.k_cache),\
                           static_cast<const T*>(p.v_cache), p.block_tables, p.max_blocks_per_seq, \
                           p.query_start_loc, p.seq_lens, p.num_heads, p.num_kv_heads,              \
                           p.block_size, p.scale_log2, p.heads_per_cta, p.partition_size,           \
                           p.max_partitions, p.sliding_window, p.softcap_log2);                     \
  }                                                                                                 \
  KERNEL(paged_attention_reduce_##SUFFIX##_d##D, AttentionParams) {                                 \
    decode_reduce<T, D>(static_cast<T*>(p.out), p.out_stride, p.tmp_out, p.tmp_max, p.tmp_sum,      \
                        p.query_start_loc, p.seq_lens, p.num_heads, p.partition_size,               \
                        p.max_partitions, p.sliding_window);                                        \
  }

// The host compiles one unit per head size (-DPAGODA_HEAD_DIM=128, ...);
// without the define every instance is built.
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 64
DECODE_KERNELS(bf16, bf16_t, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 80
DECODE_KERNELS(bf16, bf16_t, 80)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 96
DECODE_KERNELS(bf16, bf16_t, 96)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 128
DECODE_KERNELS(bf16, bf16_t, 128)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 256
DECODE_KERNELS(bf16, bf16_t, 256)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 64
DECODE_KERNELS(f16, half_t, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 80
DECODE_KERNELS(f16, half_t, 80)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 96
DECODE_KERNELS(f16, half_t, 96)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 128
DECODE_KERNELS(f16, half_t, 128)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 256
DECODE_KERNELS(f16, half_t, 256)
#endif
