//! Which integer dot-product instructions the quantized kernels use,
//! detected once from CPUID; tests force each path the CPU can run.

use std::sync::OnceLock;

/// Integer dot-product paths, best last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuantIsa {
    /// Portable Rust, any target.
    Scalar,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` (x86-64-v3).
    Avx2,
    /// AVX-512 VNNI `vpdpbusd` on 256-bit registers (with AVX-512 VL).
    Avx512Vnni,
}

impl QuantIsa {
    pub const ALL: [QuantIsa; 3] = [QuantIsa::Scalar, QuantIsa::Avx2, QuantIsa::Avx512Vnni];
}

/// The best path this CPU supports (detected once).
pub fn quant_isa() -> QuantIsa {
    static ISA: OnceLock<QuantIsa> = OnceLock::new();
    *ISA.get_or_init(detect)
}

/// Whether this CPU can run `isa`.
pub fn supported(isa: QuantIsa) -> bool {
    isa <= quant_isa()
}

#[cfg(target_arch = "x86_64")]
fn detect() -> QuantIsa {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma")) {
        QuantIsa::Scalar
    } else if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512vnni") {
        QuantIsa::Avx512Vnni
    } else {
        QuantIsa::Avx2
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> QuantIsa {
    QuantIsa::Scalar
}
