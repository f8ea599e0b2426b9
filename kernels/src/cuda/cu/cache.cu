// reshape_and_cache: writes each token's K and V rows into the paged cache.
//
// key/value: [num_tokens, *_stride] (a view into the fused qkv output works:
// the stride is the qkv row width); caches: [num_blocks, block_size,
// num_kv_heads, head_dim]. slot_mapping[t] = block_id * block_size + offset;
// a negative slot is padding and is skipped (vLLM's convention).
// Grid: num_tokens; the row is copied in 16-byte vectors, so
// num_kv_heads * head_dim and both strides must be multiples of 8.
#include "common.cuh"

__device__ __forceinline__ void reshape_and_cache_impl(const u16* __restrict__ key, int key_stride,
                                                       const u16* __restrict__ value, int value_stride,
                                                       u16* __restrict__ k_cache, u16* __restrict__ v_cache,
                                                       const i64* __restrict__ slot_mapping, int row_len) {
  const int t = blockIdx.x;
  const i64 slot = slot_mapping[t];
  if (slot < 0) return;
  const uint4* ks = reinterpret_cast<const uint4*>(key + (size_t)t * key_stride);
  const uint4* vs = reinterpret_cast<const uint4*>(value + (size_t)t * value_stride);
  uint4* kd = reinterpret_cast<uint4*>(k_cache + (size_t)slot * row_len);
  uint4* vd = reinterpret_cast<uint4*>(v_cache + (size_t)slot * row_len);
  for (int i = threadIdx.x; i < row_len / 8; i += blockDim.x) {
    kd[i] = ks[i];
    vd[i] = vs[i];
  }
}

// Both 16-bit types move as raw bits; two names keep the host's dispatch uniform.
KERNEL(reshape_and_cache_bf16, ReshapeAndCacheParams) {
  reshape_and_cache_impl(p.key, p.key_stride, p.value, p.value_stride, p.k_cache, p.v_cache, p.slot_mapping,
                         p.row_len);
}
KERNEL(reshape_and_cache_f16, ReshapeAndCacheParams) {
  reshape_and_cache_impl(p.key, p.key_stride, p.value, p.value_stride, p.k_cache, p.v_cache, p.slot_mapping,
                         p.row_len);
}
