//! The CUDA C++ sources, embedded in the binary, and the compile units made
//! of them. A unit is one NVRTC program and one loaded module; attention is
//! split per head size (`-DPAGODA_HEAD_DIM=…`) so that a model compiles only
//! the instances it uses and the units compile in parallel.

/// The header every source includes as `"common.cuh"`.
pub const COMMON_HEADER: (&str, &str) = ("common.cuh", include_str!("cu/common.cuh"));

/// One `.cu` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaSource {
    pub file: &'static str,
    pub code: &'static str,
}

pub const ATTENTION_PREFILL: CudaSource = CudaSource {
    file: "attention_prefill.cu",
    code: include_str!("cu/attention_prefill.cu"),
};
pub const ATTENTION_DECODE: CudaSource = CudaSource {
    file: "attention_decode.cu",
    code: include_str!("cu/attention_decode.cu"),
};
pub const CACHE: CudaSource = CudaSource {
    file: "cache.cu",
    code: include_str!("cu/cache.cu"),
};
pub const NORM: CudaSource = CudaSource {
    file: "norm.cu",
    code: include_str!("cu/norm.cu"),
};
pub const ROTARY: CudaSource = CudaSource {
    file: "rotary.cu",
    code: include_str!("cu/rotary.cu"),
};
pub const ACTIVATION: CudaSource = CudaSource {
    file: "activation.cu",
    code: include_str!("cu/activation.cu"),
};
pub const LAYOUT: CudaSource = CudaSource {
    file: "layout.cu",
    code: include_str!("cu/layout.cu"),
};
pub const MOE: CudaSource = CudaSource {
    file: "moe.cu",
    code: include_str!("cu/moe.cu"),
};
pub const SAMPLING: CudaSource = CudaSource {
    file: "sampling.cu",
    code: include_str!("cu/sampling.cu"),
};

/// Every source file.
pub const SOURCES: [CudaSource; 9] = [
    ATTENTION_PREFILL,
    ATTENTION_DECODE,
    CACHE,
    NORM,
    ROTARY,
    ACTIVATION,
    LAYOUT,
    MOE,
    SAMPLING,
];

/// Head sizes with attention instances.
pub const HEAD_DIMS: [usize; 5] = [64, 80, 96, 128, 256];

/// One NVRTC program: a source plus preprocessor definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileUnit {
    /// Module key, e.g. `attention_decode_d128` or `norm`.
    pub name: String,
    pub source: CudaSource,
    pub defines: Vec<(String, String)>,
}

/// Module key of the attention unit for a head size.
pub fn attention_unit(source: &CudaSource, head_dim: usize) -> String {
    format!("{}_d{head_dim}", source.file.trim_end_matches(".cu"))
}

/// Module key of a single-unit source.
pub fn unit_name(source: &CudaSource) -> String {
    source.file.trim_end_matches(".cu").to_string()
}

/// The units for a model with these head sizes (every supported one when
/// empty); unsupported head sizes are left out (the caller checks them).
pub fn compile_units(head_dims: &[usize]) -> Vec<CompileUnit> {
    let dims: Vec<usize> = if head_dims.is_empty() {
        HEAD_DIMS.to_vec()
    } else {
        let mut d: Vec<usize> = head_dims
            .iter()
            .copied()
            .filter(|d| HEAD_DIMS.contains(d))
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    };
    let mut units = Vec::new();
    for src in [ATTENTION_PREFILL, ATTENTION_DECODE] {
        for &d in &dims {
            units.push(CompileUnit {
                name: attention_unit(&src, d),
                source: src,
                defines: vec![("PAGODA_HEAD_DIM".into(), d.to_string())],
            });
        }
    }
    for src in [CACHE, NORM, ROTARY, ACTIVATION, LAYOUT, MOE, SAMPLING] {
        units.push(CompileUnit {
            name: unit_name(&src),
            source: src,
            defines: Vec::new(),
        });
    }
    units
}

/// The kernels the host wrappers launch from a unit (by its name); the
/// NVRTC compile test checks each is in the unit's CUBIN.
pub fn kernel_names(unit: &str) -> Vec<String> {
    let typed = |bases: &[&str], types: &[&str]| -> Vec<String> {
        bases
            .iter()
            .flat_map(|b| types.iter().map(move |t| format!("{b}_{t}")))
            .collect()
    };
    let half = ["bf16", "f16"];
    let all = ["bf16", "f16", "f32"];
    if let Some(d) = unit.strip_prefix("attention_prefill_d") {
        return half
            .iter()
            .map(|t| format!("paged_attention_prefill_{t}_d{d}"))
            .collect();
    }
    if let Some(d) = unit.strip_prefix("attention_decode_d") {
        return half
            .iter()
            .flat_map(|t| {
                [
                    format!("paged_attention_decode_{t}_d{d}"),
                    format!("paged_attention_reduce_{t}_d{d}"),
                ]
            })
            .collect();
    }
    match unit {
        "cache" => typed(&["reshape_and_cache"], &half),
        "norm" => typed(&["rms_norm", "fused_add_rms_norm", "rms_norm_heads"], &all),
        "rotary" => typed(&["rotary_embedding"], &all),
        "activation" => typed(
            &["silu_and_mul", "gelu_tanh_and_mul", "scale", "softcap"],
            &all,
        ),
        "moe" => {
            let mut v = typed(&["moe_route", "moe_matmul", "moe_combine"], &all);
            v.push("moe_align".into());
            v
        }
        "layout" => {
            let mut v = typed(&["add_bias"], &all);
            v.extend(["gather_rows_b16", "gather_rows_b32", "split_qkv_b16"].map(String::from));
            v.extend(
                [
                    "convert_bf16_f32",
                    "convert_f16_f32",
                    "convert_f32_bf16",
                    "convert_f32_f16",
                ]
                .map(String::from),
            );
            v
        }
        "sampling" => [
            "sample_tokens",
            "logprobs_topk",
            "token_logprobs",
            "apply_logit_bias",
            "apply_penalties",
        ]
        .map(String::from)
        .to_vec(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_includes_the_common_header_and_nothing_else() {
        for src in SOURCES {
            let includes: Vec<&str> = src
                .code
                .lines()
                .filter(|l| l.trim_start().starts_with("#include"))
                .collect();
            assert_eq!(includes, vec!["#include \"common.cuh\""], "{}", src.file);
        }
        assert!(
            !COMMON_HEADER.1.contains("#include"),
            "common.cuh must stay self-contained"
        );
    }

    #[test]
    fn units_cover_every_source_and_head_dim() {
        let all = compile_units(&[]);
        assert_eq!(all.len(), 2 * HEAD_DIMS.len() + 7);
        for src in SOURCES {
            assert!(
                all.iter().any(|u| u.source == src),
                "{} has no unit",
                src.file
            );
        }
        let names: Vec<&str> = all.iter().map(|u| u.name.as_str()).collect();
        assert!(
            names.contains(&"attention_prefill_d80") && names.contains(&"attention_decode_d256")
        );
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len(), "unit names must be unique");
    }

    #[test]
    fn every_unit_lists_its_kernels() {
        for u in compile_units(&[]) {
            assert!(!kernel_names(&u.name).is_empty(), "{}", u.name);
        }
        assert!(kernel_names("attention_decode_d96")
            .contains(&"paged_attention_reduce_f16_d96".to_string()));
    }

    #[test]
    fn a_model_compiles_only_its_head_dims() {
        let units = compile_units(&[128, 128, 77]);
        let attn: Vec<&str> = units
            .iter()
            .filter(|u| u.name.starts_with("attention"))
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(
            attn,
            vec!["attention_prefill_d128", "attention_decode_d128"]
        );
        assert_eq!(
            units[0].defines,
            vec![("PAGODA_HEAD_DIM".to_string(), "128".to_string())]
        );
    }

    #[test]
    fn every_head_dim_is_instantiated_in_both_attention_sources() {
        for d in HEAD_DIMS {
            for (src, prefix) in [
                (ATTENTION_PREFILL, "PREFILL_KERNEL"),
                (ATTENTION_DECODE, "DECODE_KERNELS"),
            ] {
                for dt in ["bf16", "f16"] {
                    let pat = format!("{prefix}({dt}, ");
                    let found = src
                        .code
                        .lines()
                        .any(|l| l.starts_with(&pat) && l.contains(&format!(", {d}")));
                    assert!(found, "{} lacks {dt} d{d}", src.file);
                }
                assert!(src.code.contains(&format!("PAGODA_HEAD_DIM == {d}")));
            }
        }
    }
}
