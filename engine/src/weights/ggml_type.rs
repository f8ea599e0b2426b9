//! ggml's tensor types: their ids (ggml.h), names, and block layouts
//! (gguf-py's GGML_QUANT_SIZES). Only some can be dequantized (see
//! `gguf_dequant`); the others are named so that errors say what they are.

/// ggml tensor types, with the ids of ggml.h. Only some can be dequantized
/// (see `gguf_dequant`); the others are named so errors can say what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    IQ2XXS,
    IQ2XS,
    IQ3XXS,
    IQ1S,
    IQ4NL,
    IQ3S,
    IQ2S,
    IQ4XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    /// An id this build does not know.
    Unknown(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            16 => IQ2XXS,
            17 => IQ2XS,
            18 => IQ3XXS,
            19 => IQ1S,
            20 => IQ4NL,
            21 => IQ3S,
            22 => IQ2S,
            23 => IQ4XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            other => Unknown(other),
        }
    }

    /// The type's id in a GGUF tensor info (the inverse of [`Self::from_id`]).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::Unknown(id) => id,
            known => (0..64)
                .find(|&i| GgmlType::from_id(i) == known)
                .expect("every named type has an id below 64"),
        }
    }

    /// The name llama.cpp prints.
    pub fn name(self) -> String {
        use GgmlType::*;
        let s = match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ2XXS => "IQ2_XXS",
            IQ2XS => "IQ2_XS",
            IQ3XXS => "IQ3_XXS",
            IQ1S => "IQ1_S",
            IQ4NL => "IQ4_NL",
            IQ3S => "IQ3_S",
            IQ2S => "IQ2_S",
            IQ4XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            Unknown(id) => return format!("unknown type id {id}"),
        };
        s.to_string()
    }

    /// (elements per block, bytes per block), as gguf-py's GGML_QUANT_SIZES.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        use GgmlType::*;
        const K: usize = 256;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 40),
            Q2K => (K, 2 + 2 + K / 16 + K / 4),
            Q3K => (K, 2 + K / 4 + K / 8 + 12),
            Q4K => (K, 2 + 2 + K / 2 + 12),
            Q5K => (K, 2 + 2 + K / 2 + K / 8 + 12),
            Q6K => (K, 2 + K / 2 + K / 4 + K / 16),
            Q8K => (K, 4 + K + K / 8),
            IQ2XXS => (K, 2 + K / 4),
            IQ2XS => (K, 2 + K / 4 + K / 32),
            IQ3XXS => (K, 2 + K / 4 + K / 8),
            IQ1S => (K, 2 + K / 8 + K / 16),
            IQ4NL => (32, 18),
            IQ3S => (K, 2 + K / 4 + K / 8 + K / 32 + 4),
            IQ2S => (K, 2 + K / 4 + K / 16),
            IQ4XS => (K, 2 + 2 + K / 2 + K / 64),
            IQ1M => (K, K / 8 + K / 16 + K / 32),
            TQ1_0 => (K, 2 + 4 * 13),
            TQ2_0 => (K, 2 + 64),
            MXFP4 => (32, 17),
            Unknown(_) => return None,
        })
    }

    /// The block type the CPU kernels keep in memory as blocks, if any.
    pub fn quant_type(self) -> Option<pagoda_kernels::cpu::QuantType> {
        use pagoda_kernels::cpu::QuantType as Q;
        use GgmlType::*;
        Some(match self {
            Q4_0 => Q::Q4_0,
            Q4_1 => Q::Q4_1,
            Q5_0 => Q::Q5_0,
            Q5_1 => Q::Q5_1,
            Q8_0 => Q::Q8_0,
            Q2K => Q::Q2_K,
            Q3K => Q::Q3_K,
            Q4K => Q::Q4_K,
            Q5K => Q::Q5_K,
            Q6K => Q::Q6_K,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::GgmlType;

    #[test]
    fn ids_round_trip() {
        for id in 0..64 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
    }
}
