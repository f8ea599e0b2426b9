// Activations on the fused gate_up projection, x = [gate | up] per row, in f32:
//   silu_and_mul_*:      out = silu(gate) * up, silu(g) = g / (1 + e^-g)
//   gelu_tanh_and_mul_*: out = gelu_tanh(gate) * up (Gemma's GeGLU,
//                        PyTorch's gelu(approximate="tanh"))
// Grid: one CTA per row. And two flat in-place maps (grid-stride loops):
//   scale_*:   x *= value (Gemma's embedding scale)
//   softcap_*: x = value * tanh(x / value) (Gemma 2's final logit cap)
#include "common.cuh"

struct SiluOp {
  __device__ __forceinline__ float operator()(float g) const { return g / (1.f + expf(-g)); }
};
struct GeluTanhOp {
  __device__ __forceinline__ float operator()(float g) const {
    const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);  // sqrt(2/pi)
    return 0.5f * g * (1.f + tanhf(inner));
  }
};

template <typename T, typename Op>
__device__ __forceinline__ void act_and_mul_impl(T* __restrict__ out, int out_stride, const T* __restrict__ x,
                                                 int x_stride, int d, Op op) {
  const T* xr = x + (size_t)blockIdx.x * x_stride;
  T* orow = out + (size_t)blockIdx.x * out_stride;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float g = to_float(xr[i]), u = to_float(xr[d + i]);
    orow[i] = from_float<T>(op(g) * u);
  }
}

template <typename T>
__device__ __forceinline__ void scale_impl(T* x, u64 n, float factor) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
    x[i] = from_float<T>(to_float(x[i]) * factor);
}

template <typename T>
__device__ __forceinline__ void softcap_impl(T* x, u64 n, float cap) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
    x[i] = from_float<T>(tanhf(to_float(x[i]) / cap) * cap);
}

#define ACTIVATION_KERNELS(SUFFIX, T)                                                           \
  KERNEL(silu_and_mul_##SUFFIX, SiluAndMulParams) {                                           \
    act_and_mul_impl<T>(static_cast<T*>(p.out), p.out_stride, static_cast<const T*>(p.x),     \
                        p.x_stride, p.d, SiluOp());                                           \
  }                                                                                           \
  KERNEL(gelu_tanh_and_mul_##SUFFIX, SiluAndMulParams) {                                      \
    act_and_mul_impl<T>(static_cast<T*>(p.out), p.out_stride, static_cast<const T*>(p.x),     \
                        p.x_stride, p.d, GeluTanhOp());                                       \
  }                                                                                           \
  KERNEL(scale_##SUFFIX, ScalarMapParams) { scale_impl<T>(static_cast<T*>(p.x), p.n, p.value); } \
  KERNEL(softcap_##SUFFIX, ScalarMapParams) { softcap_impl<T>(static_cast<T*>(p.x), p.n, p.value); }

ACTIVATION_KERNELS(bf16, bf16_t)
ACTIVATION_KERNELS(f16, half_t)
ACTIVATION_KERNELS(f32, float)
