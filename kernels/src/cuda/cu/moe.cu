// Mixture of experts on the device: the CPU's `fused_moe` (the reference,
// engine/src/backend/cpu_moe.rs) as kernels whose launch shapes depend only
// on host-known sizes, so a decode step with MoE layers records as a graph.
//   moe_route_*:   per token, softmax of the router logits in f32, the top-k
//                  (higher probability first, the lower id among equals),
//                  divided by their rank-order sum when renormalizing, then
//                  written in ascending expert id. One thread per token.
//   moe_align:     the (token, choice) pairs grouped by expert, tokens in
//                  ascending order within an expert (a stable counting sort):
//                  expert_offsets, row_token (gathered row -> token),
//                  row_expert, gathered_row (pair -> gathered row). One CTA;
//                  thread e owns expert e, so no atomics and a fixed order.
//   moe_matmul_*:  out[r] = x[r] · W_{row_expert[r]}ᵀ over the gathered rows,
//                  each expert's matrix found through a device table of
//                  pointers; f32 accumulation, one rounding. SIMT, one thread
//                  per output element: correct first, not tuned (no tensor
//                  cores, no weight reuse across rows).
//   moe_combine_*: hidden[t] = Σ_j w[t, j] · expert_out[gathered_row[t, j]]
//                  in ascending expert order, plus sigmoid(g_t) · shared[t]
//                  for a shared expert; f32, one rounding.
#include "common.cuh"

#define MOE_MAX_TOP_K 16

template <typename T>
__device__ __forceinline__ void moe_route_impl(const MoeRouteParams& p) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= p.num_tokens) return;
  const T* row = static_cast<const T*>(p.logits) + (size_t)t * p.num_experts;
  float mx = NEG_INF;
  for (int e = 0; e < p.num_experts; ++e) mx = fmaxf(mx, to_float(row[e]));
  float sum = 0.f;
  for (int e = 0; e < p.num_experts; ++e) sum += expf(to_float(row[e]) - mx);
  int ids[MOE_MAX_TOP_K];
  float probs[MOE_MAX_TOP_K];
  float rank_sum = 0.f;
  for (int j = 0; j < p.top_k; ++j) {
    int best = -1;
    float best_p = 0.f;
    for (int e = 0; e < p.num_experts; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken = taken || ids[i] == e;
      if (taken) continue;
      const float pe = expf(to_float(row[e]) - mx) / sum;
      if (best < 0 || pe > best_p) {
        best = e;
        best_p = pe;
      }
    }
    ids[j] = best;
    probs[j] = best_p;
    rank_sum += best_p;  // in rank order, as torch sums the top-k values
  }
  // Ascending expert id (insertion sort of at most MOE_MAX_TOP_K).
  for (int j = 1; j < p.top_k; ++j) {
    const int id = ids[j];
    const float pr = probs[j];
    int i = j - 1;
    while (i >= 0 && ids[i] > id) {
      ids[i + 1] = ids[i];
      probs[i + 1] = probs[i];
      --i;
    }
    ids[i + 1] = id;
    probs[i + 1] = pr;
  }
  for (int j = 0; j < p.top_k; ++j) {
    p.expert_ids[(size_t)t * p.top_k + j] = (u32)ids[j];
    p.weights[(size_t)t * p.top_k + j] = p.renormalize ? probs[j] / rank_sum : probs[j];
  }
}

#define MOE_ALIGN_THREADS 256

KERNEL_BOUNDED(moe_align, MoeAlignParams, MOE_ALIGN_THREADS) {
  // expert_offsets doubles as the counts until the prefix sum.
  for (int e = threadIdx.x; e < p.num_experts; e += blockDim.x) {
    u32 n = 0;
    for (int i = 0; i < p.num_pairs; ++i) n += p.expert_ids[i] == (u32)e;
    p.expert_offsets[e + 1] = n;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    p.expert_offsets[0] = 0;
    for (int e = 0; e < p.num_experts; ++e) p.expert_offsets[e + 1] += p.expert_offsets[e];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < p.num_experts; e += blockDim.x) {
    u32 row = p.expert_offsets[e];
    for (int i = 0; i < p.num_pairs; ++i) {
      if (p.expert_ids[i] != (u32)e) continue;
      p.row_token[row] = (u32)(i / p.top_k);
      p.row_expert[row] = (u32)e;
      p.gathered_row[i] = row;
      ++row;
    }
  }
}

template <typename T>
__device__ __forceinline__ void moe_matmul_impl(const MoeMatmulParams& p) {
  const int r = blockIdx.x;
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (r >= p.rows || n >= p.n) return;
  const T* w = reinterpret_cast<const T*>(p.weights[p.row_expert[r]]) + (size_t)n * p.k;
  const T* x = static_cast<const T*>(p.x) + (size_t)r * p.k;
  float acc = 0.f;
  for (int i = 0; i < p.k; ++i) acc += to_float(x[i]) * to_float(w[i]);
  static_cast<T*>(p.out)[(size_t)r * p.n + n] = from_float<T>(acc);
}

template <typename T>
__device__ __forceinline__ void moe_combine_impl(const MoeCombineParams& p) {
  const int t = blockIdx.x;
  if (t >= p.num_tokens) return;
  const T* eo = static_cast<const T*>(p.expert_out);
  T* out = static_cast<T*>(p.hidden) + (size_t)t * p.dim;
  float gate = 0.f;
  if (p.shared_out) gate = 1.f / (1.f + expf(-to_float(static_cast<const T*>(p.shared_gate)[t])));
  for (int d = threadIdx.x; d < p.dim; d += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < p.top_k; ++j) {
      const size_t c = (size_t)t * p.top_k + j;
      acc += to_float(eo[(size_t)p.gathered_row[c] * p.dim + d]) * p.weights[c];
    }
    if (p.shared_out) acc += gate * to_float(static_cast<const T*>(p.shared_out)[(size_t)t * p.dim + d]);
    out[d] = from_float<T>(acc);
  }
}

#define MOE_KERNELS(SUFFIX, T)                                                         \
  KERNEL(moe_route_##SUFFIX, MoeRouteParams) { moe_route_impl<T>(p); }               \
  KERNEL(moe_matmul_##SUFFIX, MoeMatmulParams) { moe_matmul_impl<T>(p); }            \
  KERNEL(moe_combine_##SUFFIX, MoeCombineParams) { moe_combine_impl<T>(p); }

MOE_KERNELS(bf16, bf16_t)
MOE_KERNELS(f16, half_t)
MOE_KERNELS(f32, float)
