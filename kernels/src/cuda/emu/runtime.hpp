// The emulator's host stand-ins for CUDA's built-ins, included before a `.cu`
// source compiled by g++ with -DPAGODA_EMU (see emu.cpp and ../cu/common.cuh).
//
// Every CUDA thread is a fiber; the fibers of a block run on the calling OS
// thread, switching only where a thread must wait (`__syncthreads`, warp
// collectives, exit), in an order the launch chooses. Blocks run one after
// another. Warp collectives (shuffles, ballot, mma.sync, ldmatrix) are
// computed by the last lane to arrive, for all 32, after checking that the
// lanes agree on what they do. See runtime.cpp for the scheduler.
#pragma once

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

// ---- language ----------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Per OS thread: concurrent launches (parallel tests) do not share it; blocks
// of one launch run one after another, so one copy serves them all.
#define __shared__ static thread_local
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }

// Built with -ffp-contract=off: these are single IEEE operations, as on the GPU.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
// Fibers never switch inside one, so a plain read-modify-write is atomic.
template <class T, class U> inline T atomicAdd(T* p, U v) {
  const T old = *p;
  *p = old + (T)v;
  return old;
}

namespace emu {

// What a running thread sees; the scheduler sets it on every switch.
struct ThreadCtx {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  unsigned char* dyn = nullptr;
  size_t dyn_size = 0;
};
inline thread_local ThreadCtx ctx;

[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

inline void* dyn_smem() { return ctx.dyn; }
inline size_t cvta_shared(const void* p) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (c < ctx.dyn || c > ctx.dyn + ctx.dyn_size)
    fail("cvta.to.shared of %p: not inside the block's dynamic shared memory", p);
  return (size_t)(c - ctx.dyn);
}

// ---- the emulated PTX of common.cuh's wrappers ----------------------------------
inline float cvt_f32_f16(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return (float)v;
}
inline uint16_t cvt_rn_f16_f32(float f) {
  const _Float16 v = (_Float16)f;  // round to nearest even, overflow to inf
  uint16_t r;
  std::memcpy(&r, &v, 2);
  return r;
}
inline uint16_t cvt_rn_bf16_f32(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // the canonical NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
inline float ftz(float x) { return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.f, x) : x; }
inline float ex2_approx_ftz(float x) { return ftz(exp2f(ftz(x))); }
void mma_m16n8k16(bool bf16, float* c, const uint32_t* a, const uint32_t* b);
void ldmatrix_x4(bool trans, uint32_t* r, uint32_t addr);

// ---- synchronization --------------------------------------------------------------
void syncthreads(const char* file, int line);
uint64_t shfl(const char* op, unsigned mask, uint64_t bits, int arg, int width);
unsigned ballot(unsigned mask, int pred);

template <class T> inline T shfl_as(const char* op, unsigned mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= 8, "a shuffle moves at most 64 bits");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  b = shfl(op, mask, b, arg, width);
  T r;
  std::memcpy(&r, &b, sizeof(T));
  return r;
}

// ---- kernels ------------------------------------------------------------------------
using KernelFn = void (*)(const void* params);
// One per kernel (EMU_KERNEL): the name the host launches it by.
struct Registration {
  Registration(const char* name, size_t params_size, int max_threads, KernelFn fn);
};

}  // namespace emu

#define threadIdx (::emu::ctx.thread_idx)
#define blockIdx (::emu::ctx.block_idx)
#define blockDim (::emu::ctx.block_dim)
#define gridDim (::emu::ctx.grid_dim)
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::emu::shfl_as("shfl.bfly", mask, v, lane_mask, width);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::shfl_as("shfl.up", mask, v, (int)delta, width);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::shfl_as("shfl.down", mask, v, (int)delta, width);
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::emu::shfl_as("shfl.idx", mask, v, src, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return ::emu::ballot(mask, pred); }
inline size_t __cvta_generic_to_shared(const void* p) { return ::emu::cvta_shared(p); }

// The kernel entry of common.cuh's KERNEL macros: a host function taking the
// parameter struct, registered under the kernel's name.
#define EMU_KERNEL(name, Params, max_threads)                                                 \
  static void name##_emu(const Params& p);                                                    \
  static const ::emu::Registration name##_emu_registration(                                   \
      #name, sizeof(Params), max_threads,                                                      \
      [](const void* raw) { name##_emu(*static_cast<const Params*>(raw)); });                  \
  static void name##_emu(const Params& p)
