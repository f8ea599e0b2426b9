// Shared helpers for every Pagoda CUDA source.
//
// Self-contained on purpose: no CUDA header is included, so NVRTC compiles
// these sources without any include path (the machine running them may have
// a driver and libnvrtc but no toolkit headers). 16-bit floats are stored as
// raw bits and converted with PTX `cvt` (sm_80+: bf16 conversions).
//
// Two targets: NVRTC (the GPU), and the host emulator (`PAGODA_EMU`, the
// g++ build of ../emu, whose runtime.hpp supplies the CUDA built-ins). Every
// inline PTX statement lives in one `ptx_*` wrapper below with the
// emulator's alternative beside it, dynamic shared memory is declared with
// DYN_SMEM and every kernel with KERNEL, so the sources themselves are the
// same text for both.
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define NEG_INF (__int_as_float(0xff800000))
#define WARP_SIZE 32

// ---- the two targets --------------------------------------------------------

// `extern __shared__` storage of the launch's dynamic size, 16-byte aligned.
// KERNEL(name, Params): an `extern "C"` entry taking its parameter struct by
// value; KERNEL_BOUNDED adds `__launch_bounds__` (the emulator checks it).
#ifdef PAGODA_EMU
#define DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(emu::dyn_smem())
#define KERNEL(name, Params) EMU_KERNEL(name, Params, 1024)
#define KERNEL_BOUNDED(name, Params, threads) EMU_KERNEL(name, Params, threads)
#else
#define DYN_SMEM(T, name) extern __shared__ __align__(16) T name[]
#define KERNEL(name, Params) extern "C" __global__ void name(const Params p)
#define KERNEL_BOUNDED(name, Params, threads) \
  extern "C" __global__ void __launch_bounds__(threads) name(const Params p)
#endif

// ---- inline PTX: one wrapper per statement ------------------------------------

__device__ __forceinline__ float ptx_cvt_f32_f16(u16 h) {
#ifdef PAGODA_EMU
  return emu::cvt_f32_f16(h);
#else
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#endif
}
__device__ __forceinline__ u16 ptx_cvt_rn_bf16_f32(float f) {
#ifdef PAGODA_EMU
  return emu::cvt_rn_bf16_f32(f);
#else
  u16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
#endif
}
__device__ __forceinline__ u16 ptx_cvt_rn_f16_f32(float f) {
#ifdef PAGODA_EMU
  return emu::cvt_rn_f16_f32(f);
#else
  u16 r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
#endif
}
// Two values in one u32: `hi` in the upper half, `lo` in the lower.
__device__ __forceinline__ u32 ptx_cvt_rn_bf16x2_f32(float hi, float lo) {
#ifdef PAGODA_EMU
  return ((u32)emu::cvt_rn_bf16_f32(hi) << 16) | emu::cvt_rn_bf16_f32(lo);
#else
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#endif
}
__device__ __forceinline__ u32 ptx_cvt_rn_f16x2_f32(float hi, float lo) {
#ifdef PAGODA_EMU
  return ((u32)emu::cvt_rn_f16_f32(hi) << 16) | emu::cvt_rn_f16_f32(lo);
#else
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#endif
}
// 2^x with the hardware approximation (relative error ~2^-22); 2^-inf = 0.
__device__ __forceinline__ float ptx_ex2_approx_ftz(float x) {
#ifdef PAGODA_EMU
  return emu::ex2_approx_ftz(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}
// D = A·B + C on tensor cores, m16n8k16, f32 accumulators; fragments as the
// PTX ISA lays them out (a: 4 regs of A 16x16 row-major, b: 2 regs of B 16x8).
__device__ __forceinline__ void ptx_mma_m16n8k16_bf16(float* c, const u32* a, const u32* b) {
#ifdef PAGODA_EMU
  emu::mma_m16n8k16(true, c, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
__device__ __forceinline__ void ptx_mma_m16n8k16_f16(float* c, const u32* a, const u32* b) {
#ifdef PAGODA_EMU
  emu::mma_m16n8k16(false, c, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
// Four 8x8 b16 matrices from shared memory; lane i gives the address of row
// i % 8 of matrix i / 8 (16-byte aligned); .trans transposes each matrix.
__device__ __forceinline__ void ptx_ldmatrix_x4(u32* r, u32 addr) {
#ifdef PAGODA_EMU
  emu::ldmatrix_x4(false, r, addr);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}
__device__ __forceinline__ void ptx_ldmatrix_x4_trans(u32* r, u32 addr) {
#ifdef PAGODA_EMU
  emu::ldmatrix_x4(true, r, addr);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}
#ifdef PAGODA_EMU
// Inline PTX outside the wrappers above has no emulation: make it a compile error.
#define asm PAGODA_EMU_ERROR_inline_PTX_outside_the_common_cuh_wrappers
#endif

// ---- kernel parameters --------------------------------------------------------
//
// Each kernel takes one struct by value. kernels/src/cuda/params.rs declares
// the same structs (#[repr(C)]); a test holds their sizes and field offsets
// equal to these (the emulator build exports them). Pointers are device
// addresses; `void*` ones point at the kernel instance's element type.

// paged_attention_{prefill,decode,reduce}_*: prefill reads the first group,
// decode and reduce the workspace and split fields as well. sliding_window:
// keys a token sees, itself included (0: all); softcap_log2: Gemma 2's
// attention logit cap times log2(e) (0: none), applied to the scaled score.
struct AttentionParams {
  void* out;
  const void* q;
  const void* k_cache;
  const void* v_cache;
  const u32* block_tables;
  const u32* query_start_loc;
  const u32* seq_lens;
  float* tmp_out;
  float* tmp_max;
  float* tmp_sum;
  int out_stride;
  int q_stride;
  int max_blocks_per_seq;
  int num_seqs;
  int num_heads;
  int num_kv_heads;
  int block_size;
  float scale_log2;
  int skip_decodes;
  int heads_per_cta;
  int partition_size;
  int max_partitions;
  int sliding_window;
  float softcap_log2;
};
struct ReshapeAndCacheParams {
  const u16* key;
  const u16* value;
  u16* k_cache;
  u16* v_cache;
  const i64* slot_mapping;
  int key_stride;
  int value_stride;
  int row_len;
};
struct RmsNormParams {
  void* out;
  const void* x;
  const void* weight;
  int out_stride;
  int x_stride;
  int dim;
  float eps;
  int gemma;
};
struct FusedAddRmsNormParams {
  void* x;
  void* residual;
  const void* weight;
  int dim;
  float eps;
  int gemma;
};
struct RmsNormHeadsParams {
  void* x;
  const void* weight;
  int row_stride;
  int per_row;
  int dim;
  int num_sub_rows;
  float eps;
  int gemma;
};
struct RotaryParams {
  const u32* positions;
  void* q;
  void* k;
  const float* cos;
  const float* sin;
  int q_stride;
  int k_stride;
  int max_position;
  int half;
  int num_heads;
  int num_kv_heads;
  int head_dim;
};
struct SiluAndMulParams {
  void* out;
  const void* x;
  int out_stride;
  int x_stride;
  int d;
};
struct GatherRowsParams {
  void* out;
  const void* src;
  const u32* idx;
  u32 num_src_rows;
  int row_len;
};
struct SplitQkvParams {
  const u16* qkv;
  u16* q;
  u16* k;
  u16* v;
  int q_dim;
  int kv_dim;
};
// moe_route_*: logits [num_tokens, num_experts] of the kernel's type; out:
// each token's top_k expert ids (ascending) and weights.
struct MoeRouteParams {
  const void* logits;
  u32* expert_ids;
  float* weights;
  int num_tokens;
  int num_experts;
  int top_k;
  int renormalize;
};
// moe_align: expert_ids [num_pairs] in; expert_offsets [num_experts + 1],
// row_token / row_expert [num_pairs] (by gathered row) and gathered_row
// [num_pairs] (by pair) out.
struct MoeAlignParams {
  const u32* expert_ids;
  u32* expert_offsets;
  u32* row_token;
  u32* row_expert;
  u32* gathered_row;
  int num_pairs;
  int num_experts;
  int top_k;
};
// moe_matmul_*: out [rows, n] = x [rows, k] · W_eᵀ, W_e = weights[row_expert[r]]
// (a device address of an [n, k] matrix of the kernel's type).
struct MoeMatmulParams {
  void* out;
  const void* x;
  const u64* weights;
  const u32* row_expert;
  int rows;
  int k;
  int n;
};
// moe_combine_*: hidden [num_tokens, dim] = the weighted expert rows (+ the
// gated shared expert when shared_out is not null; shared_gate: its logit
// per token).
struct MoeCombineParams {
  void* hidden;
  const void* expert_out;
  const u32* gathered_row;
  const float* weights;
  const void* shared_out;
  const void* shared_gate;
  int num_tokens;
  int top_k;
  int dim;
};
// scale_* (value: the factor) and softcap_* (value: the cap), over n elements.
struct ScalarMapParams {
  void* x;
  u64 n;
  float value;
};
struct AddBiasParams {
  void* x;
  const void* bias;
  int cols;
};
struct ConvertParams {
  void* out;
  const void* input;
  u64 n;
};
struct SampleTokensParams {
  const float* logits;
  const float* temperature;
  const int* top_k;
  const float* top_p;
  const float* min_p;
  const float* uniform;
  u32* out;
  int vocab;
};
struct LogprobsTopkParams {
  const float* logits;
  u32* top_ids;
  float* top_logprobs;
  int vocab;
  int k;
};
struct TokenLogprobsParams {
  const float* logits;
  const u32* tokens;
  float* out_logprob;
  u32* out_rank;
  int vocab;
};
struct LogitBiasParams {
  float* logits;
  const u32* offsets;
  const u32* ids;
  const float* values;
  int vocab;
};
struct PenaltiesParams {
  float* logits;
  const u32* offsets;
  const u32* ids;
  const u32* output_counts;
  const float* repetition;
  const float* frequency;
  const float* presence;
  int vocab;
};
struct TokenBitmaskParams {
  float* logits;
  const u32* bitmask;
  const u32* mask_rows;
  int num_rows;
  int vocab;
  int mask_words;
};

// ---- 16-bit float storage -------------------------------------------------

struct bf16_t { u16 bits; };
struct half_t { u16 bits; };

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16_t x) { return __uint_as_float(((u32)x.bits) << 16); }
__device__ __forceinline__ float to_float(half_t x) { return ptx_cvt_f32_f16(x.bits); }

template <typename T> __device__ __forceinline__ T from_float(float f);
template <> __device__ __forceinline__ float from_float<float>(float f) { return f; }
template <> __device__ __forceinline__ bf16_t from_float<bf16_t>(float f) {
  bf16_t r;
  r.bits = ptx_cvt_rn_bf16_f32(f);
  return r;
}
template <> __device__ __forceinline__ half_t from_float<half_t>(float f) {
  half_t r;
  r.bits = ptx_cvt_rn_f16_f32(f);
  return r;
}

// Two 16-bit values packed in a u32, `lo` in the low half (element order in memory).
template <typename T> __device__ __forceinline__ u32 pack2(float lo, float hi);
template <> __device__ __forceinline__ u32 pack2<bf16_t>(float lo, float hi) {
  return ptx_cvt_rn_bf16x2_f32(hi, lo);
}
template <> __device__ __forceinline__ u32 pack2<half_t>(float lo, float hi) {
  return ptx_cvt_rn_f16x2_f32(hi, lo);
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

__device__ __forceinline__ float fast_exp2(float x) { return ptx_ex2_approx_ftz(x); }

// The shared-state-space address of a pointer into (dynamic) shared memory.
__device__ __forceinline__ u32 smem_u32(const void* p) {
  return (u32)__cvta_generic_to_shared(p);
}
