// RMSNorm family (f32 statistics; the output rounded where HF rounds it):
//   rms_norm:           out = w * T(x * rsqrt(mean(x²) + eps))  (HF's order and casts)
//   fused_add_rms_norm: residual = x + residual; x = rms_norm(residual)
//                       (the normalized value is that of the rounded residual,
//                       which is what the next layer reads)
//   rms_norm_heads:     in place over sub-rows of `dim` (Qwen3's per-head q/k norm)
// With `gemma` set, each applies Gemma's gain instead: T(x * r * (1 + w)), in
// f32 with one rounding (HF's Gemma RMSNorm; the checkpoint stores w).
// Grid for the first two: one CTA per row. Reductions have a fixed order.
#include "common.cuh"

// HF's rounding: `weight * (x * rsqrt(var + eps)).to(dtype)`, so the normalized
// value is rounded to T before the weight multiply (rounded again).
template <typename T>
__device__ __forceinline__ T norm_scale(float v, float r, T w) {
  return from_float<T>(to_float(from_float<T>(v * r)) * to_float(w));
}

template <typename T>
__device__ __forceinline__ T norm_apply(float v, float r, T w, int gemma) {
  return gemma ? from_float<T>(v * r * (1.f + to_float(w))) : norm_scale<T>(v, r, w);
}

template <typename T>
__device__ __forceinline__ void rms_norm_impl(T* __restrict__ out, int out_stride, const T* __restrict__ x,
                                              int x_stride, const T* __restrict__ w, float eps, int dim,
                                              int gemma) {
  __shared__ float scratch[32];
  const T* xr = x + (size_t)blockIdx.x * x_stride;
  T* orow = out + (size_t)blockIdx.x * out_stride;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_float(xr[i]);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss, scratch) / (float)dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = norm_apply<T>(to_float(xr[i]), r, w[i], gemma);
}

template <typename T>
__device__ __forceinline__ void fused_add_rms_norm_impl(T* x, T* residual, const T* __restrict__ w, float eps,
                                                        int dim, int gemma) {
  __shared__ float scratch[32];
  T* xr = x + (size_t)blockIdx.x * dim;
  T* rr = residual + (size_t)blockIdx.x * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const T s = from_float<T>(to_float(xr[i]) + to_float(rr[i]));
    rr[i] = s;
    const float v = to_float(s);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss, scratch) / (float)dim + eps);
  // Each thread re-reads only the elements it wrote itself.
  for (int i = threadIdx.x; i < dim; i += blockDim.x) xr[i] = norm_apply<T>(to_float(rr[i]), r, w[i], gemma);
}

// One warp per sub-row: sub-row i is at x + (i / per_row) * row_stride + (i % per_row) * dim.
template <typename T>
__device__ __forceinline__ void rms_norm_heads_impl(T* x, int row_stride, int per_row, int dim,
                                                    const T* __restrict__ w, float eps, int num_sub_rows,
                                                    int gemma) {
  const int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (i >= num_sub_rows) return;
  T* p = x + (size_t)(i / per_row) * row_stride + (size_t)(i % per_row) * dim;
  float ss = 0.f;
  for (int e = lane; e < dim; e += WARP_SIZE) {
    const float v = to_float(p[e]);
    ss += v * v;
  }
  const float r = rsqrtf(warp_sum(ss) / (float)dim + eps);
  for (int e = lane; e < dim; e += WARP_SIZE) p[e] = norm_apply<T>(to_float(p[e]), r, w[e], gemma);
}

#define NORM_KERNELS(SUFFIX, T)                                                                    \
  KERNEL(rms_norm_##SUFFIX, RmsNormParams) {                                                      \
    rms_norm_impl<T>(static_cast<T*>(p.out), p.out_stride, static_cast<const T*>(p.x), p.x_stride, \
                     static_cast<const T*>(p.weight), p.eps, p.dim, p.gemma);                    \
  }                                                                                              \
  KERNEL(fused_add_rms_norm_##SUFFIX, FusedAddRmsNormParams) {                                    \
    fused_add_rms_norm_impl<T>(static_cast<T*>(p.x), static_cast<T*>(p.residual),                \
                               static_cast<const T*>(p.weight), p.eps, p.dim, p.gemma);          \
  }                                                                                              \
  KERNEL(rms_norm_heads_##SUFFIX, RmsNormHeadsParams) {                                           \
    rms_norm_heads_impl<T>(static_cast<T*>(p.x), p.row_stride, p.per_row, p.dim,                 \
                           static_cast<const T*>(p.weight), p.eps, p.num_sub_rows, p.gemma);     \
  }

NORM_KERNELS(bf16, bf16_t)
NORM_KERNELS(f16, half_t)
NORM_KERNELS(f32, float)
