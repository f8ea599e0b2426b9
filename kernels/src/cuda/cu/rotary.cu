// Rotary embedding, HF "rotate_half" (neox) convention, in place on q and k.
//
// cos, sin: [max_position, half] f32 each, uploaded as they are from the CPU
// RotaryCache (same inv_freq, scaling and rounding). For each head and
// j < half (rot_dim = 2 * half <= head_dim):
//   x1 = x[j], x2 = x[j + half]
//   x[j] = x1*cos - x2*sin;  x[j + half] = x2*cos + x1*sin.
// A position outside the table leaves the token unrotated (the host bounds
// positions by max_model_len). Grid: one CTA per token.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void rotary_impl(const u32* __restrict__ positions, T* q, int q_stride, T* k,
                                            int k_stride, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                            int max_position, int half, int num_heads, int num_kv_heads, int head_dim) {
  const int t = blockIdx.x;
  const u32 pos = positions[t];
  if (pos >= (u32)max_position) return;
  const float* cr = cos_t + (size_t)pos * half;
  const float* sr = sin_t + (size_t)pos * half;
  const int total = (num_heads + num_kv_heads) * half;
  for (int i = threadIdx.x; i < total; i += blockDim.x) {
    const int h = i / half, j = i % half;
    T* p = h < num_heads ? q + (size_t)t * q_stride + h * head_dim
                         : k + (size_t)t * k_stride + (h - num_heads) * head_dim;
    const float c = cr[j], s = sr[j];
    const float x1 = to_float(p[j]), x2 = to_float(p[j + half]);
    p[j] = from_float<T>(x1 * c - x2 * s);
    p[j + half] = from_float<T>(x2 * c + x1 * s);
  }
}

#define ROTARY_KERNEL(SUFFIX, T)                                                                \
  KERNEL(rotary_embedding_##SUFFIX, RotaryParams) {                                           \
    rotary_impl<T>(p.positions, static_cast<T*>(p.q), p.q_stride, static_cast<T*>(p.k),       \
                   p.k_stride, p.cos, p.sin, p.max_position, p.half, p.num_heads,             \
                   p.num_kv_heads, p.head_dim);                                               \
  }

ROTARY_KERNEL(bf16, bf16_t)
ROTARY_KERNEL(f16, half_t)
ROTARY_KERNEL(f32, float)
