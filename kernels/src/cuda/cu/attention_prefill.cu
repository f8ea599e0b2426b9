// Varlen paged attention, prefill path: FlashAttention-2 tiling on tensor cores.
//
// One CTA = 4 warps = 64 query rows of one sequence and one query head; each
// warp owns 16 rows. K and V tiles are gathered from the paged cache through
// the block table into shared memory; S = Q·Kᵀ and O += P·V run on
// mma.sync.m16n8k16 (bf16 or f16 inputs, f32 accumulators) with an online
// softmax in the log2 domain. Causal: the query at position p sees keys 0..=p
// of its own sequence, p = seq_len - query_len + row; with a sliding window
// W only keys p - W + 1..=p (key tiles wholly before the CTA's first window
// are skipped, and slots before it are never read: the KV manager may have
// freed their blocks). A logit cap C turns a scaled score s into
// C·tanh(s / C) before the mask (Gemma 2).
//
// Grid: x = num_tokens / 64 + num_seqs (vLLM's varlen tile count, so it
// depends only on host-known sizes), y = num_heads. CTA x belongs to the last
// sequence s with query_start_loc[s] / 64 + s <= x; extra CTAs exit at once.
#include "common.cuh"

#define PF_BM 64
#define PF_THREADS 128

template <typename T> __device__ __forceinline__ void mma_16816(float* c, const u32* a, const u32* b);
template <> __device__ __forceinline__ void mma_16816<bf16_t>(float* c, const u32* a, const u32* b) {
  ptx_mma_m16n8k16_bf16(c, a, b);
}
template <> __device__ __forceinline__ void mma_16816<half_t>(float* c, const u32* a, const u32* b) {
  ptx_mma_m16n8k16_f16(c, a, b);
}

// Index of the sequence owning CTA `bx`: the last s with qsl[s] / BM + s <= bx.
__device__ __forceinline__ int prefill_find_seq(const u32* qsl, int num_seqs, int bx) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if ((int)(qsl[mid] / PF_BM) + mid <= bx) lo = mid; else hi = mid - 1;
  }
  return lo;
}

template <typename T, int D, int BN>
__device__ __forceinline__ void prefill_attention(
    T* __restrict__ out, int out_stride, const T* __restrict__ q, int q_stride,
    const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const u32* __restrict__ block_tables, int max_blocks_per_seq,
    const u32* __restrict__ query_start_loc, const u32* __restrict__ seq_lens, int num_seqs,
    int num_heads, int num_kv_heads, int block_size, float scale_log2, int skip_decodes,
    int window, float softcap_log2) {
  static_assert(D % 16 == 0 && BN % 16 == 0, "tile shapes");
  constexpr int STRIDE = D + 8;  // 16-byte row padding: ldmatrix rows hit distinct banks
  constexpr int DV = D / 8;      // 16-byte vectors per row
  DYN_SMEM(u8, smem_raw);
  T* q_s = reinterpret_cast<T*>(smem_raw);
  T* k_s = q_s + PF_BM * STRIDE;
  T* v_s = k_s + BN * STRIDE;

  const int head = blockIdx.y;
  const int seq = prefill_find_seq(query_start_loc, num_seqs, blockIdx.x);
  const int q_start = (int)query_start_loc[seq];
  const int q_len = (int)query_start_loc[seq + 1] - q_start;
  const int row0 = ((int)blockIdx.x - (q_start / PF_BM + seq)) * PF_BM;
  if (row0 >= q_len || (skip_decodes && q_len == 1)) return;
  const int ctx = (int)seq_lens[seq];
  const int pos0 = ctx - q_len;  // position of the sequence's first new token
  if (pos0 < 0) return;          // malformed metadata: nothing sensible to attend to
  const int rows = min(PF_BM, q_len - row0);
  const int num_keys = pos0 + row0 + rows;  // last row attends keys 0..num_keys-1
  // The CTA's first row sees no key before `first_key`; nor does any later row.
  const int first_key = window > 0 ? max(0, pos0 + row0 + 1 - window) : 0;
  const int kv_head = head / (num_heads / num_kv_heads);
  const u32* bt = block_tables + (size_t)seq * max_blocks_per_seq;

  for (int i = threadIdx.x; i < PF_BM * DV; i += PF_THREADS) {
    const int r = i / DV, c = (i % DV) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < rows)
      v = *reinterpret_cast<const uint4*>(q + (size_t)(q_start + row0 + r) * q_stride + head * D + c);
    *reinterpret_cast<uint4*>(q_s + r * STRIDE + c) = v;
  }

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int qpos0 = pos0 + row0 + warp * 16 + (lane >> 2);  // this thread's rows: qpos0, qpos0 + 8
  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

  for (int kv0 = first_key / BN * BN; kv0 < num_keys; kv0 += BN) {
    __syncthreads();  // the previous tile is consumed (and Q is in place)
    for (int i = threadIdx.x; i < BN * DV; i += PF_THREADS) {
      const int r = i / DV, c = (i % DV) * 8;
      const int t = kv0 + r;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      const int lb = t / block_size;
      if (t >= first_key && t < num_keys && lb < max_blocks_per_seq) {
        const size_t slot = (size_t)bt[lb] * block_size + t % block_size;
        const size_t off = (slot * num_kv_heads + kv_head) * D + c;
        kv = *reinterpret_cast<const uint4*>(k_cache + off);
        vv = *reinterpret_cast<const uint4*>(v_cache + off);
      }
      *reinterpret_cast<uint4*>(k_s + r * STRIDE + c) = kv;
      *reinterpret_cast<uint4*>(v_s + r * STRIDE + c) = vv;
    }
    __syncthreads();

    float s[BN / 8][4];
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      u32 a[4];
      ptx_ldmatrix_x4(a, smem_u32(q_s + (warp * 16 + (lane & 15)) * STRIDE + kk * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        u32 b[4];
        ptx_ldmatrix_x4(b, smem_u32(k_s + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * STRIDE + kk * 16 +
                                ((lane >> 3) & 1) * 8));
        mma_16816<T>(s[2 * np], a, b);
        mma_16816<T>(s[2 * np + 1], a, b + 2);
      }
    }

    // Cap, mask (causal, window and tile end), then the online softmax update.
    float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = kv0 + nt * 8 + (lane & 3) * 2 + (e & 1);
        const int qp = qpos0 + (e >> 1) * 8;
        float v = s[nt][e] * scale_log2;
        if (softcap_log2 > 0.f) v = softcap_log2 * tanhf(v / softcap_log2);
        if (key > qp || key >= num_keys || (window > 0 && key <= qp - window)) v = NEG_INF;
        s[nt][e] = v;
        mx[e >> 1] = fmaxf(mx[e >> 1], v);
      }
    }
    float base[2], alpha[2], rs[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      base[r] = m_new == NEG_INF ? 0.f : m_new;
      alpha[r] = fast_exp2(m[r] - base[r]);
      m[r] = m_new;
    }
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = fast_exp2(s[nt][e] - base[e >> 1]);
        s[nt][e] = p;
        rs[e >> 1] += p;
      }
    }
    l[0] = l[0] * alpha[0] + rs[0];
    l[1] = l[1] * alpha[1] + rs[1];
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      o[dt][0] *= alpha[0]; o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1]; o[dt][3] *= alpha[1];
    }

    // O += P·V: the S accumulators of two adjacent key tiles are P's A fragment.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      u32 a[4];
      a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        u32 b[4];
        ptx_ldmatrix_x4_trans(b, smem_u32(v_s + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * STRIDE + dp * 16 +
                                      (lane >> 4) * 8));
        mma_16816<T>(o[2 * dp], a, b);
        mma_16816<T>(o[2 * dp + 1], a, b + 2);
      }
    }
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
  }
  const int lr0 = warp * 16 + (lane >> 2);
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    const int col = head * D + dt * 8 + (lane & 3) * 2;
    if (lr0 < rows)
      *reinterpret_cast<u32*>(out + (size_t)(q_start + row0 + lr0) * out_stride + col) =
          pack2<T>(o[dt][0] * inv[0], o[dt][1] * inv[0]);
    if (lr0 + 8 < rows)
      *reinterpret_cast<u32*>(out + (size_t)(q_start + row0 + lr0 + 8) * out_stride + col) =
          pack2<T>(o[dt][2] * inv[1], o[dt][3] * inv[1]);
  }
}

#define PREFILL_KERNEL(SUFFIX, T, D, BN)                                                             \
  KERNEL_BOUNDED(paged_attention_prefill_##SUFFIX##_d##D, AttentionParams, PF_THREADS) {            \
    prefill_attention<T, D, BN>(static_cast<T*>(p.out), p.out_stride, static_cast<const T*>(p.q),   \
                                p.q_stride, static_cast<const T*>(p.k_cache),                       \
                                static_cast<const T*>(p.v_cache), p.block_tables,                   \
                                p.max_blocks_per_seq, p.query_start_loc, p.seq_lens, p.num_seqs,    \
                                p.num_heads, p.num_kv_heads, p.block_size, p.scale_log2,            \
                                p.skip_decodes, p.sliding_window, p.softcap_log2);                  \
  }

// The host compiles one unit per head size (-DPAGODA_HEAD_DIM=128, ...);
// without the define every instance is built.
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 64
PREFILL_KERNEL(bf16, bf16_t, 64, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 80
PREFILL_KERNEL(bf16, bf16_t, 80, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 96
PREFILL_KERNEL(bf16, bf16_t, 96, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 128
PREFILL_KERNEL(bf16, bf16_t, 128, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 256
PREFILL_KERNEL(bf16, bf16_t, 256, 32)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 64
PREFILL_KERNEL(f16, half_t, 64, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 80
PREFILL_KERNEL(f16, half_t, 80, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 96
PREFILL_KERNEL(f16, half_t, 96, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 128
PREFILL_KERNEL(f16, half_t, 128, 64)
#endif
#if !defined(PAGODA_HEAD_DIM) || PAGODA_HEAD_DIM == 256
PREFILL_KERNEL(f16, half_t, 256, 32)
#endif
