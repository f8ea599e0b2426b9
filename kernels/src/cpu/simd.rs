//! Runtime SIMD dispatch for the hand-written kernels.
//!
//! Builds target baseline x86-64: these VMs advertise instructions they cannot
//! run, so `target-cpu=native` is out. Hot loops are written once, as plain Rust
//! over fixed-width lane arrays that LLVM auto-vectorizes, and compiled three
//! times by [`dispatch!`]: for AVX-512, for AVX2 + FMA, and for the baseline.
//! [`isa`] picks one from CPUID, once per process.

use std::sync::OnceLock;

/// Lane count of the lane arrays: one AVX-512 register, two AVX2 registers.
pub(crate) const LANES: usize = 16;

/// The instruction-set levels a kernel is compiled for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Baseline x86-64 (SSE2) or any non-x86 target.
    Baseline,
    /// AVX2 with FMA and F16C (x86-64-v3).
    Avx2,
    /// AVX-512 F/VL/BW/DQ (x86-64-v4).
    Avx512,
}

/// The best instruction set this CPU supports (detected once).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(detect)
}

/// `requested`, lowered to what the CPU supports: lets tests force a path
/// without ever running an instruction the CPU lacks.
pub(crate) fn usable(requested: Isa) -> Isa {
    requested.min(isa())
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    let v3 = has!("avx2") && has!("fma") && has!("f16c");
    if v3 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
        Isa::Avx512
    } else if v3 {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Baseline
}

/// `ISA` parameter of a kernel body: the level it is compiled for.
pub(crate) const LEVEL_BASELINE: u8 = 0;
pub(crate) const LEVEL_AVX2: u8 = 1;
pub(crate) const LEVEL_AVX512: u8 = 2;

/// Defines `$name(args)` (dispatching on [`isa`]) and `$with(isa, args)` (a
/// chosen ISA, lowered to what the CPU has) over `$body::<ISA>(args)`, an
/// `#[inline(always)]` function whose helpers are `#[inline(always)]` too, so
/// the whole loop nest is compiled with each target's features.
///
/// Safety contract: a body or helper instantiated with `ISA` above
/// `LEVEL_BASELINE` may use that level's instructions unconditionally, so it
/// must only run inside the wrapper this macro generates for that level.
macro_rules! dispatch {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident / $with:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident;
    ) => {
        $(#[$attr])*
        #[allow(dead_code)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $with($crate::cpu::simd::isa(), $($arg),*)
        }

        #[allow(dead_code)]
        $vis fn $with(isa: $crate::cpu::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body::<{ $crate::cpu::simd::LEVEL_AVX512 }>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body::<{ $crate::cpu::simd::LEVEL_AVX2 }>($($arg),*)
                }
                match $crate::cpu::simd::usable(isa) {
                    // SAFETY: `usable` never returns an ISA that CPUID does not report.
                    $crate::cpu::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::cpu::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::cpu::simd::Isa::Baseline => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = isa;
            $body::<{ $crate::cpu::simd::LEVEL_BASELINE }>($($arg),*)
        }
    };
}
pub(crate) use dispatch;

/// `a * b + c`: one fused instruction where the target has FMA (a libm call
/// otherwise, which is why the baseline build takes the unfused form).
#[inline(always)]
pub(crate) fn fmadd<const ISA: u8>(a: f32, b: f32, c: f32) -> f32 {
    if ISA >= LEVEL_AVX2 {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Horizontal sum of a lane array, with the shuffle sequence of `pulp` (the
/// `gemm` crate's SIMD layer) on AVX2/AVX-512. Written in plain Rust, LLVM's
/// SLP vectorizer re-splits the reduction tree, and with it the accumulation
/// loop that fed it, into 2-wide pieces: several times slower.
#[inline(always)]
pub(crate) fn hsum<const ISA: u8>(v: [f32; LANES]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use pulp::Simd;
        if ISA == LEVEL_AVX512 {
            debug_assert_eq!(isa(), Isa::Avx512);
            // SAFETY: level-AVX512 code runs only inside `dispatch!`'s AVX-512
            // wrapper, entered after CPUID reported these features.
            let simd = unsafe { pulp::x86::V4::new_unchecked() };
            return simd.reduce_sum_f32s(pulp::cast(v));
        }
        if ISA == LEVEL_AVX2 {
            debug_assert!(isa() >= Isa::Avx2);
            // SAFETY: as above, for the AVX2 wrapper.
            let simd = unsafe { pulp::x86::V3::new_unchecked() };
            let [lo, hi]: [pulp::f32x8; 2] = pulp::cast(v);
            return simd.reduce_sum_f32s(simd.add_f32s(lo, hi));
        }
    }
    let mut v = v;
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            v[i] += v[i + width];
        }
        width /= 2;
    }
    v[0]
}

/// Sum of squares, 16 lanes wide, with a scalar tail.
#[inline(always)]
pub(crate) fn sum_squares<const ISA: u8>(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    for x in &mut ca {
        for i in 0..LANES {
            acc[i] = fmadd::<ISA>(x[i], x[i], acc[i]);
        }
    }
    let mut s = hsum::<ISA>(acc);
    for x in ca.remainder() {
        s = fmadd::<ISA>(*x, *x, s);
    }
    s
}

/// Maximum of a slice (`-inf` when empty; NaN entries are skipped).
#[inline(always)]
pub(crate) fn max(a: &[f32]) -> f32 {
    // `if a > b` rather than `f32::max`, whose NaN rule does not map onto
    // one vector instruction.
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut ca = a.chunks_exact(LANES);
    for x in &mut ca {
        for i in 0..LANES {
            acc[i] = if x[i] > acc[i] { x[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.iter().chain(ca.remainder()) {
        m = if *v > m { *v } else { m };
    }
    m
}

/// `e^x` in f32, branch-free so loops over it vectorize (libm's `expf` is a
/// call per element). Cephes' range reduction and degree-6 polynomial: within
/// 2 ulp of the true value for normal results; 0 below -87.3 (where `expf`
/// would go subnormal), +inf above 88.3; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp<const ISA: u8>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.3;
    const HI: f32 = 88.3;
    let xc = x.clamp(LO, HI);
    let t = fmadd::<ISA>(xc, LOG2E, ROUND);
    let n = t - ROUND;
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = fmadd::<ISA>(n, -LN2_LO, fmadd::<ISA>(n, -LN2_HI, xc));
    let mut p = 1.987_569_1e-4;
    p = fmadd::<ISA>(p, r, 1.398_199_9e-3);
    p = fmadd::<ISA>(p, r, 8.333_345e-3);
    p = fmadd::<ISA>(p, r, 4.166_579_6e-2);
    p = fmadd::<ISA>(p, r, 1.666_666_5e-1);
    p = fmadd::<ISA>(p, r, 0.5);
    let p = fmadd::<ISA>(p, r * r, r) + 1.0;
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32).wrapping_shl(23));
    let y = p * scale;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp_all(isa: Isa, xs: &[f32]) -> Vec<f32> {
        fn body<const ISA: u8>(xs: &[f32], out: &mut [f32]) {
            for (o, x) in out.iter_mut().zip(xs) {
                *o = exp::<ISA>(*x);
            }
        }
        dispatch! { fn run / run_with(xs: &[f32], out: &mut [f32]) = body; }
        let mut out = vec![0.0; xs.len()];
        run_with(isa, xs, &mut out);
        out
    }

    #[test]
    fn exp_is_within_two_ulp_on_every_path() {
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + 175.0 * i as f32 / 200_000.0)
            .collect();
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            let ys = exp_all(isa, &xs);
            for (x, y) in xs.iter().zip(&ys) {
                let want = (*x as f64).exp();
                let ulp = (want as f32).to_bits().abs_diff(y.to_bits());
                assert!(ulp <= 2, "{isa:?}: exp({x}) = {y}, want {want} ({ulp} ulp)");
            }
        }
    }

    #[test]
    fn exp_edge_cases() {
        let ys = exp_all(
            isa(),
            &[
                0.0,
                -0.0,
                -100.0,
                f32::NEG_INFINITY,
                100.0,
                f32::INFINITY,
                f32::NAN,
            ],
        );
        assert_eq!(
            &ys[..6],
            &[1.0, 1.0, 0.0, 0.0, f32::INFINITY, f32::INFINITY]
        );
        assert!(ys[6].is_nan());
    }

    #[test]
    fn reductions_match_f64() {
        let a: Vec<f32> = (0..103)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.25)
            .collect();
        let sq64: f64 = a.iter().map(|x| *x as f64 * *x as f64).sum();
        assert!((sum_squares::<LEVEL_BASELINE>(&a) as f64 - sq64).abs() < 1e-4);
        assert_eq!(max(&a), 2.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(hsum::<LEVEL_BASELINE>([1.0; LANES]), LANES as f32);
    }
}
