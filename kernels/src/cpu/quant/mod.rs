//! GGUF block-quantized weights kept as blocks, and the kernels that compute
//! on them.
//!
//! A weight row of `k` values is `k / block_size` blocks of `type_size` bytes
//! (ggml's layouts). Two ways to multiply by one:
//! - [`MatmulMode::Fast`]: activations are quantized per row to 8-bit blocks
//!   of 32 ([`q8`]) and each weight block is dotted with them in integers
//!   (AVX2 `maddubs`, AVX-512 VNNI `vpdpbusd`, or portable scalar code, chosen
//!   at run time, [`isa`]): llama.cpp's scheme, a fraction of the bytes and
//!   arithmetic of f32;
//! - [`MatmulMode::Exact`]: tiles of weight rows are dequantized to f32 inside
//!   the GEMM (never the whole matrix) and multiplied by the f32 activations,
//!   the values HF transformers computes with after dequantizing the file.

mod dequant;
mod dot_scalar;
#[cfg(target_arch = "x86_64")]
mod dot_x86;
pub mod isa;
mod matmul;
pub mod q8;
pub mod repack;
#[cfg(target_arch = "x86_64")]
mod x8_x86;

pub use dequant::{dequantize_block, dequantize_row};
pub use isa::{quant_isa, QuantIsa};
pub use matmul::{quant_matmul, quant_matmul_with, quant_matmul_x8_with};

/// The GGUF block types this crate keeps in memory as blocks.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Values per K-quant super-block.
const QK_K: usize = 256;

impl QuantType {
    /// Values per block.
    pub fn block_size(self) -> usize {
        use QuantType::*;
        match self {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => QK_K,
        }
    }

    /// Bytes per block (ggml's `type_size`).
    pub fn type_size(self) -> usize {
        use QuantType::*;
        match self {
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q2_K => 2 + 2 + QK_K / 16 + QK_K / 4,
            Q3_K => 2 + QK_K / 4 + QK_K / 8 + 12,
            Q4_K => 2 + 2 + QK_K / 2 + 12,
            Q5_K => 2 + 2 + QK_K / 2 + QK_K / 8 + 12,
            Q6_K => 2 + QK_K / 2 + QK_K / 4 + QK_K / 16,
        }
    }

    /// The name llama.cpp prints.
    pub fn name(self) -> &'static str {
        use QuantType::*;
        match self {
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
        }
    }

    /// Bytes of one row of `k` values (`k` a multiple of the block size).
    pub fn row_bytes(self, k: usize) -> usize {
        k / self.block_size() * self.type_size()
    }

    /// Whether [`MatmulMode::Fast`] has integer dot products for this type
    /// (the others are dequantized per tile in either mode).
    pub fn has_int8_kernel(self) -> bool {
        use QuantType::*;
        matches!(self, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K)
    }

    pub const ALL: [QuantType; 10] = {
        use QuantType::*;
        [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K]
    };
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the CPU multiplies by weights stored below f32 (`--cpu-matmul`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulMode {
    /// Integer dot products against 8-bit quantized activations for block
    /// types that have them; 16-bit weights are converted per tile (exact).
    Fast,
    /// Every weight dequantized per tile to f32, multiplied in f32.
    #[default]
    Exact,
}

#[cfg(test)]
mod tests;
