//! CPU kernels, f32 activations (weights f32, 16-bit or GGUF blocks): what CI, tests and GPU-less machines run, and the
//! reference the CUDA kernels are checked against.
//!
//! Parallel kernels use rayon's global pool; SIMD is chosen at run time
//! (`gemm` crate for GEMMs, [`simd`] for the hand-written loops), so builds
//! stay portable (no `target-cpu=native`).

mod activation;
mod attention;
mod cache;
mod embedding;
mod gelu;
mod gemm;
mod kv_cache;
mod linear;
mod moe_routing;
mod norm;
pub mod quant;
mod rotary;
pub mod simd;
mod softcap;
mod softmax;
#[cfg(test)]
mod test_util;
mod token_bitmask;

pub use activation::silu_and_mul;
pub use attention::{paged_attention, PagedAttentionParams};
pub use cache::reshape_and_cache;
pub use embedding::embedding;
pub use gelu::{gelu_tanh, gelu_tanh_and_mul};
pub use gemm::{add_bias, batch_invariant, matmul_transb, set_batch_invariant, GEMV_MAX_M};
pub use kv_cache::{zeroed_vec, KvBuffer, KvCacheDtype, KvSlice, KvSliceMut, ZeroBits};
pub use linear::{linear, WeightRef};
pub use moe_routing::{moe_gather, moe_scatter_weighted, ExpertRouting};
pub use norm::{fused_add_rms_norm, rms_norm, rms_norm_inplace};
pub use quant::{MatmulMode, QuantType};
pub use rotary::{rope_inv_freq, rotary_embedding, RopeScaling, RotaryCache};
pub use softcap::softcap_inplace;
pub use softmax::{log_softmax_inplace, softmax_inplace};
pub use token_bitmask::apply_token_bitmask;

/// Threads the CPU kernels split work over: rayon's global pool (sized by
/// `RAYON_NUM_THREADS`, default one per core).
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Elements of elementwise/row-wise work below which a kernel stays on the
/// calling thread: a rayon fork/join costs a few microseconds.
const PAR_MIN_ELEMS: usize = 1 << 15;

/// Minimum rows per rayon task for a row-wise kernel over rows of `row_len`.
fn min_rows_per_task(row_len: usize) -> usize {
    (PAR_MIN_ELEMS / row_len.max(1)).max(1)
}
