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

KERNEL(gather_rows_b16, GatherRowsParams) {
  gather_rows_impl<u16>(static_cast<u16*>(p.out), static_cast<const u16*>(p.src), p.idx, p.num_src_rows,
                        p.row_len);
}
KERNEL(gather_rows_b32, GatherRowsParams) {
  gather_rows_impl<u32>(static_cast<u32*>(p.out), static_cast<const u32*>(p.src), p.idx, p.num_src_rows,
                        p.row_len);
}

__device__ __forceinline__ void split_qkv_impl(const u16* __restrict__ qkv, u16* __restrict__ q,
                                               u16* __restrict__ k, u16* __restrict__ v, int q_dim, int kv_dim) {
  const int width = q_dim + 2 * kv_dim;
  const u16* row = qkv + (size_t)blockIdx.x * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const u16 e = row[i];
    if (i < q_dim) q[(size_t)blockIdx.x * q_dim + i] = e;
    else if (i < q_dim + kv_dim) k[(size_t)blockIdx.x * kv_dim + (i - q_dim)] = e;
    else v[(size_t)blockIdx.x * kv_dim + (i - q_dim - kv_dim)] = e;
  }
}
KERNEL(split_qkv_b16, SplitQkvParams) { split_qkv_impl(p.qkv, p.q, p.k, p.v, p.q_dim, p.kv_dim); }

template <typename T>
__device__ __forceinline__ void add_bias_impl(T* x, const T* __restrict__ bias, int cols) {
  T* r = x + (size_t)blockIdx.x * cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) r[i] = from_float<T>(to_float(r[i]) + to_float(bias[i]));
}
#define ADD_BIAS_KERNEL(SUFFIX, T)                                                         \
  KERNEL(add_bias_##SUFFIX, AddBiasParams) {                                             \
    add_bias_impl(static_cast<T*>(p.x), static_cast<const T*>(p.bias), p.cols);           \
  }
ADD_BIAS_KERNEL(bf16, bf16_t)
ADD_BIAS_KERNEL(f16, half_t)
ADD_BIAS_KERNEL(f32, float)

// Flat casts over n elements; grid-stride loop.
template <typename S, typename D>
__device__ __forceinline__ void convert_impl(D* __restrict__ out, const S* __restrict__ in, u64 n) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
    out[i] = from_float<D>(to_float(in[i]));
}
#define CONVERT_KERNEL(NAME, S, D)                                                            \
  KERNEL(NAME, ConvertParams) { convert_impl(static_cast<D*>(p.out), static_cast<const S*>(p.input), p.n); }
CONVERT_KERNEL(convert_bf16_f32, bf16_t, float)
CONVERT_KERNEL(convert_f16_f32, half_t, float)
CONVERT_KERNEL(convert_f32_bf16, float, bf16_t)
CONVERT_KERNEL(convert_f32_f16, float, half_t)
