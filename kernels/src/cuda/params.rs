//! Every kernel's parameters as one `#[repr(C)]` struct, passed by value: the
//! same bytes go to `cuLaunchKernel` on a GPU and to the emulator. Each
//! struct mirrors the one of the same name in `cu/common.cuh`; the
//! `params_layout` test (with the emulator) holds sizes and field offsets
//! equal on both sides, so the argument ABI is tested without a GPU.
//!
//! Pointers are device addresses (`CUdeviceptr`, host addresses on the
//! emulator); `int` fields are `i32`, checked conversions from `usize`.

/// A device address (cudarc's `CUdeviceptr`).
pub type DevPtr = u64;

/// One field of a parameter struct: name, byte offset, byte size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// A kernel parameter struct.
pub trait KernelParams: cudarc::driver::DeviceRepr + Copy + Send + Sync + 'static {
    /// The struct's name in `common.cuh`.
    const NAME: &'static str;
    /// Its fields in declaration order.
    fn fields() -> Vec<FieldLayout>;
}

macro_rules! kernel_params {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident { $( $field:ident : $ty:ty ),* $(,)? }
    )*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Debug, Clone, Copy, Default, PartialEq)]
            pub struct $name { $( pub $field: $ty ),* }

            // SAFETY: #[repr(C)] of integers and floats only, laid out as the
            // CUDA struct of the same name (held by the layout test).
            unsafe impl cudarc::driver::DeviceRepr for $name {}

            impl KernelParams for $name {
                const NAME: &'static str = stringify!($name);
                fn fields() -> Vec<FieldLayout> {
                    vec![$(FieldLayout {
                        name: stringify!($field),
                        offset: std::mem::offset_of!($name, $field),
                        size: std::mem::size_of::<$ty>(),
                    }),*]
                }
            }
        )*

        /// Every struct: name, size, fields.
        pub fn all_layouts() -> Vec<(&'static str, usize, Vec<FieldLayout>)> {
            vec![$((stringify!($name), std::mem::size_of::<$name>(), $name::fields())),*]
        }
    };
}

kernel_params! {
    /// `paged_attention_{prefill,decode,reduce}_*`.
    pub struct AttentionParams {
        out: DevPtr,
        q: DevPtr,
        k_cache: DevPtr,
        v_cache: DevPtr,
        block_tables: DevPtr,
        query_start_loc: DevPtr,
        seq_lens: DevPtr,
        tmp_out: DevPtr,
        tmp_max: DevPtr,
        tmp_sum: DevPtr,
        out_stride: i32,
        q_stride: i32,
        max_blocks_per_seq: i32,
        num_seqs: i32,
        num_heads: i32,
        num_kv_heads: i32,
        block_size: i32,
        scale_log2: f32,
        skip_decodes: i32,
        heads_per_cta: i32,
        partition_size: i32,
        max_partitions: i32,
        // Keys a token sees, itself included; 0: every key.
        sliding_window: i32,
        // The attention logit cap times log2(e); 0: no cap.
        softcap_log2: f32,
    }

    /// `reshape_and_cache_*`.
    pub struct ReshapeAndCacheParams {
        key: DevPtr,
        value: DevPtr,
        k_cache: DevPtr,
        v_cache: DevPtr,
        slot_mapping: DevPtr,
        key_stride: i32,
        value_stride: i32,
        row_len: i32,
    }

    /// `rms_norm_*`.
    pub struct RmsNormParams {
        out: DevPtr,
        x: DevPtr,
        weight: DevPtr,
        out_stride: i32,
        x_stride: i32,
        dim: i32,
        eps: f32,
        // 1: Gemma's gain, T(x * r * (1 + w)).
        gemma: i32,
    }

    /// `fused_add_rms_norm_*`.
    pub struct FusedAddRmsNormParams {
        x: DevPtr,
        residual: DevPtr,
        weight: DevPtr,
        dim: i32,
        eps: f32,
        // 1: Gemma's gain, T(x * r * (1 + w)).
        gemma: i32,
    }

    /// `rms_norm_heads_*`.
    pub struct RmsNormHeadsParams {
        x: DevPtr,
        weight: DevPtr,
        row_stride: i32,
        per_row: i32,
        dim: i32,
        num_sub_rows: i32,
        eps: f32,
        // 1: Gemma's gain, T(x * r * (1 + w)).
        gemma: i32,
    }

    /// `rotary_embedding_*`.
    pub struct RotaryParams {
        positions: DevPtr,
        q: DevPtr,
        k: DevPtr,
        cos: DevPtr,
        sin: DevPtr,
        q_stride: i32,
        k_stride: i32,
        max_position: i32,
        half: i32,
        num_heads: i32,
        num_kv_heads: i32,
        head_dim: i32,
    }

    /// `silu_and_mul_*`.
    pub struct SiluAndMulParams {
        out: DevPtr,
        x: DevPtr,
        out_stride: i32,
        x_stride: i32,
        d: i32,
    }

    /// `gather_rows_b16`, `gather_rows_b32`.
    pub struct GatherRowsParams {
        out: DevPtr,
        src: DevPtr,
        idx: DevPtr,
        num_src_rows: u32,
        row_len: i32,
    }

    /// `split_qkv_b16`.
    pub struct SplitQkvParams {
        qkv: DevPtr,
        q: DevPtr,
        k: DevPtr,
        v: DevPtr,
        q_dim: i32,
        kv_dim: i32,
    }

    /// `moe_route_*`.
    pub struct MoeRouteParams {
        logits: DevPtr,
        expert_ids: DevPtr,
        weights: DevPtr,
        num_tokens: i32,
        num_experts: i32,
        top_k: i32,
        renormalize: i32,
    }

    /// `moe_align`.
    pub struct MoeAlignParams {
        expert_ids: DevPtr,
        expert_offsets: DevPtr,
        row_token: DevPtr,
        row_expert: DevPtr,
        gathered_row: DevPtr,
        num_pairs: i32,
        num_experts: i32,
        top_k: i32,
    }

    /// `moe_matmul_*`.
    pub struct MoeMatmulParams {
        out: DevPtr,
        x: DevPtr,
        weights: DevPtr,
        row_expert: DevPtr,
        rows: i32,
        k: i32,
        n: i32,
    }

    /// `moe_combine_*` (shared_out 0: no shared expert).
    pub struct MoeCombineParams {
        hidden: DevPtr,
        expert_out: DevPtr,
        gathered_row: DevPtr,
        weights: DevPtr,
        shared_out: DevPtr,
        shared_gate: DevPtr,
        num_tokens: i32,
        top_k: i32,
        dim: i32,
    }

    /// `scale_*` (value: the factor), `softcap_*` (value: the cap).
    pub struct ScalarMapParams {
        x: DevPtr,
        n: u64,
        value: f32,
    }

    /// `add_bias_*`.
    pub struct AddBiasParams {
        x: DevPtr,
        bias: DevPtr,
        cols: i32,
    }

    /// `convert_*`.
    pub struct ConvertParams {
        out: DevPtr,
        input: DevPtr,
        n: u64,
    }

    /// `sample_tokens`.
    pub struct SampleTokensParams {
        logits: DevPtr,
        temperature: DevPtr,
        top_k: DevPtr,
        top_p: DevPtr,
        min_p: DevPtr,
        uniform: DevPtr,
        out: DevPtr,
        vocab: i32,
    }

    /// `logprobs_topk`.
    pub struct LogprobsTopkParams {
        logits: DevPtr,
        top_ids: DevPtr,
        top_logprobs: DevPtr,
        vocab: i32,
        k: i32,
    }

    /// `token_logprobs`.
    pub struct TokenLogprobsParams {
        logits: DevPtr,
        tokens: DevPtr,
        out_logprob: DevPtr,
        out_rank: DevPtr,
        vocab: i32,
    }

    /// `apply_logit_bias`.
    pub struct LogitBiasParams {
        logits: DevPtr,
        offsets: DevPtr,
        ids: DevPtr,
        values: DevPtr,
        vocab: i32,
    }

    /// `apply_penalties`.
    pub struct PenaltiesParams {
        logits: DevPtr,
        offsets: DevPtr,
        ids: DevPtr,
        output_counts: DevPtr,
        repetition: DevPtr,
        frequency: DevPtr,
        presence: DevPtr,
        vocab: i32,
    }

    /// `apply_token_bitmask`.
    pub struct TokenBitmaskParams {
        logits: DevPtr,
        bitmask: DevPtr,
        mask_rows: DevPtr,
        num_rows: i32,
        vocab: i32,
        mask_words: i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_in_order_and_inside_the_struct() {
        for (name, size, fields) in all_layouts() {
            let mut end = 0;
            for f in &fields {
                assert!(f.offset >= end, "{name}.{} overlaps", f.name);
                assert_eq!(f.offset % f.size, 0, "{name}.{} misaligned", f.name);
                end = f.offset + f.size;
            }
            assert!(
                end <= size && size - end < 8,
                "{name}: {size} bytes for {end}"
            );
        }
    }
}
