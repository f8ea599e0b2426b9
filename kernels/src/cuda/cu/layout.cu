// Row moves and small element-wise ops around the GEMMs:
//   gather_rows_b{16,32}: out[i] = src[idx[i]] (embedding lookup with token
//       ids; the hidden rows whose logits are needed). An index past the
//       source rows writes zeros rather than reading out of bounds.
//   split_qkv_b16:  fused [rows, q_dim + 2*kv_dim] -> q, k, v.
//   add_bias_*:     x[r, :] += bias (in place).
//   convert_*:      element type casts (f32 <-> bf16 / f16).
// Moves are dtype-agnostic (raw 16- or 32-bit words). Grid: one CTA per row.
#include "common.cuh"

template <typename W>
__device__ __forceinline__ void gather_rows_impl(W* __restrict__ out, const W* __restrict__ src,
                                                 const u32* __restrict__ idx, u32 num_src_rows, int row_len) {
  const u32 r = idx[blockIdx.x];
  W* o = out + (size_t)blockIdx.x * row_len;
  if (r >= num_src_rows) {
    for (int i = threadIdx.x; i < row_len; i += blockDim.x) o[i] = W(0);
    return;
  }
  const W* s = src + (size_t)r * row_len;
  for (int i = threadIdx.x; i < row_len; i += blockDim.x) o[i] = s[i];
}

extern "C" __global__ void gather_rows_b16(u16* out, const u16* src, const u32* idx, u32 num_src_rows,
                                           int row_len) {
  gather_rows_impl<u16>(out, src, idx, num_src_rows, row_len);
}
extern "C" __global__ void gather_rows_b32(u32* out, const u32* src, const u32* idx, u32 num_src_rows,
                                           int row_len) {
  gather_rows_impl<u32>(out, src, idx, num_src_rows, row_len);
}

extern "C" __global__ void split_qkv_b16(const u16* __restrict__ qkv, u16* __restrict__ q, u16* __restrict__ k,
                                         u16* __restrict__ v, int q_dim, int kv_dim) {
  const int width = q_dim + 2 * kv_dim;
  const u16* row = qkv + (size_t)blockIdx.x * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const u16 e = row[i];
    if (i < q_dim) q[(size_t)blockIdx.x * q_dim + i] = e;
    else if (i < q_dim + kv_dim) k[(size_t)blockIdx.x * kv_dim + (i - q_dim)] = e;
    else v[(size_t)blockIdx.x * kv_dim + (i - q_dim - kv_dim)] = e;
  }
}

template <typename T>
__device__ __forceinline__ void add_bias_impl(T* x, const T* __restrict__ bias, int cols) {
  T* r = x + (size_t)blockIdx.x * cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) r[i] = from_float<T>(to_float(r[i]) + to_float(bias[i]));
}
extern "C" __global__ void add_bias_bf16(bf16_t* x, const bf16_t* bias, int cols) { add_bias_impl(x, bias, cols); }
extern "C" __global__ void add_bias_f16(half_t* x, const half_t* bias, int cols) { add_bias_impl(x, bias, cols); }
extern "C" __global__ void add_bias_f32(float* x, const float* bias, int cols) { add_bias_impl(x, bias, cols); }

// Flat casts over n elements; grid-stride loop.
template <typename S, typename D>
__device__ __forceinline__ void convert_impl(D* __restrict__ out, const S* __restrict__ in, u64 n) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
    out[i] = from_float<D>(to_float(in[i]));
}
extern "C" __global__ void convert_bf16_f32(float* out, const bf16_t* in, u64 n) { convert_impl(out, in, n); }
extern "C" __global__ void convert_f16_f32(float* out, const half_t* in, u64 n) { convert_impl(out, in, n); }
extern "C" __global__ void convert_f32_bf16(bf16_t* out, const float* in, u64 n) { convert_impl(out, in, n); }
extern "C" __global__ void convert_f32_f16(half_t* out, const float* in, u64 n) { convert_impl(out, in, n); }
