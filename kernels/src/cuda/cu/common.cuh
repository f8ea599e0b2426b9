// Shared helpers for every Pagoda CUDA source.
//
// Self-contained on purpose: no CUDA header is included, so NVRTC compiles
// these sources without any include path (the machine running them may have
// a driver and libnvrtc but no toolkit headers). 16-bit floats are stored as
// raw bits and converted with PTX `cvt` (sm_80+: bf16 conversions).
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define NEG_INF (__int_as_float(0xff800000))
#define WARP_SIZE 32

// ---- 16-bit float storage -------------------------------------------------

struct bf16_t { u16 bits; };
struct half_t { u16 bits; };

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16_t x) { return __uint_as_float(((u32)x.bits) << 16); }
__device__ __forceinline__ float to_float(half_t x) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
  return f;
}

template <typename T> __device__ __forceinline__ T from_float(float f);
template <> __device__ __forceinline__ float from_float<float>(float f) { return f; }
template <> __device__ __forceinline__ bf16_t from_float<bf16_t>(float f) {
  bf16_t r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
  return r;
}
template <> __device__ __forceinline__ half_t from_float<half_t>(float f) {
  half_t r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
  return r;
}

// Two 16-bit values packed in a u32, `lo` in the low half (element order in memory).
template <typename T> __device__ __forceinline__ u32 pack2(float lo, float hi);
template <> __device__ __forceinline__ u32 pack2<bf16_t>(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <> __device__ __forceinline__ u32 pack2<half_t>(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

template <typename T> __device__ __forceinline__ float lo_float(u32 v) { T t; t.bits = (u16)(v & 0xffff); return to_float(t); }
template <typename T> __device__ __forceinline__ float hi_float(u32 v) { T t; t.bits = (u16)(v >> 16); return to_float(t); }

// Eight 16-bit values (one 16-byte vector) to floats and back.
template <typename T> __device__ __forceinline__ void unpack8(const uint4 v, float* f) {
  f[0] = lo_float<T>(v.x); f[1] = hi_float<T>(v.x);
  f[2] = lo_float<T>(v.y); f[3] = hi_float<T>(v.y);
  f[4] = lo_float<T>(v.z); f[5] = hi_float<T>(v.z);
  f[6] = lo_float<T>(v.w); f[7] = hi_float<T>(v.w);
}
template <typename T> __device__ __forceinline__ uint4 pack8(const float* f) {
  uint4 v;
  v.x = pack2<T>(f[0], f[1]); v.y = pack2<T>(f[2], f[3]);
  v.z = pack2<T>(f[4], f[5]); v.w = pack2<T>(f[6], f[7]);
  return v;
}

// ---- reductions -----------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / max; `scratch` holds 32 floats; every thread gets the result.
// The reduction order is fixed, so results are bit-for-bit reproducible.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : NEG_INF;
  return warp_max(v);
}

// 2^x with the hardware approximation (relative error ~2^-22); 2^-inf = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ u32 smem_u32(const void* p) {
  return (u32)__cvta_generic_to_shared(p);
}
