// SiLU-and-multiply on the fused gate_up projection: x = [gate | up] per row,
// out = silu(gate) * up with silu(g) = g / (1 + e^-g), in f32.
// Grid: one CTA per row.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void silu_and_mul_impl(T* __restrict__ out, int out_stride, const T* __restrict__ x,
                                                  int x_stride, int d) {
  const T* xr = x + (size_t)blockIdx.x * x_stride;
  T* orow = out + (size_t)blockIdx.x * out_stride;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float g = to_float(xr[i]), u = to_float(xr[d + i]);
    orow[i] = from_float<T>(g / (1.f + expf(-g)) * u);
  }
}

#define SILU_KERNEL(SUFFIX, T)                                                                 \
  KERNEL(silu_and_mul_##SUFFIX, SiluAndMulParams) {                                          \
    silu_and_mul_impl<T>(static_cast<T*>(p.out), p.out_stride, static_cast<const T*>(p.x),   \
                         p.x_stride, p.d);                                                   \
  }

SILU_KERNEL(bf16, bf16_t)
SILU_KERNEL(f16, half_t)
SILU_KERNEL(f32, float)
