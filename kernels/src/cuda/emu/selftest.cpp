// Deliberately wrong kernels: the emulator's diagnostics must name each
// mistake (tests in mod.rs). Never compiled for a GPU.
#include "runtime.hpp"
#include "../cu/common.cuh"

struct SelftestParams {
  float* out;
  int mode;
};

// mode 0: lanes of one warp at different collectives (shuffle vs ballot).
// mode 1: a full-mask shuffle in a warp of 16 threads (a partial warp).
// mode 2: half of each warp at a shuffle, the other half at a barrier: deadlock.
// mode 3: ldmatrix with a misaligned row address.
// mode 4: ldmatrix past the end of dynamic shared memory.
// mode 5: threads at two different __syncthreads.
// mode 6: half the lanes exit before a shuffle.
// mode 7: correct: a shared-memory reduction with its barrier.
// mode 8: the same reduction without the barrier (a race the order shows).
KERNEL(emu_selftest, SelftestParams) {
  const int t = threadIdx.x, lane = t & 31;
  DYN_SMEM(u8, smem);
  float* s = reinterpret_cast<float*>(smem);
  switch (p.mode) {
    case 0:
      if (lane < 16) p.out[t] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
      else p.out[t] = (float)__ballot_sync(0xffffffffu, 1);
      break;
    case 1:
      p.out[t] = warp_sum(1.f);
      break;
    case 2:
      if (lane < 16) p.out[t] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
      else __syncthreads();
      break;
    case 3:
    case 4: {
      u32 r[4];
      const u32 base = p.mode == 3 ? 8 : 64 * 16;
      ptx_ldmatrix_x4(r, smem_u32(smem) + base + (lane % 8) * 16);
      p.out[t] = (float)r[0];
      break;
    }
    case 5:
      if (t < 32) __syncthreads();
      else __syncthreads();
      break;
    case 6:
      if (lane >= 16) return;
      p.out[t] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
      break;
    case 7:
    case 8: {
      s[t] = (float)(t + 1);
      if (p.mode == 7) __syncthreads();
      if (t == 0) {
        float acc = 0.f;
        for (int i = 0; i < (int)blockDim.x; ++i) acc += s[i];
        p.out[0] = acc;
      }
      break;
    }
  }
}
