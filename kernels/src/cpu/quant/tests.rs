//! Every block type against a naive f64 reference (dequantize the blocks,
//! dot in f64), on odd shapes, on every dot-product path this CPU runs.

use super::isa::{supported, QuantIsa};
use super::q8::Q8Rows;
use super::*;
use crate::cpu::linear::{linear, WeightRef};
use crate::cpu::test_util::random_vec;
use half::f16;
use rand::{Rng, SeedableRng};

/// `n` rows of random but well-formed blocks of `ty`: f16 scales in a sane
/// range, every other byte random (all quant values and sub-scales).
fn random_blocks(ty: QuantType, n: usize, k: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let nb = n * k / ty.block_size();
    let ts = ty.type_size();
    let mut out = vec![0u8; nb * ts];
    rng.fill(&mut out[..]);
    let f16_offsets: &[usize] = match ty {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => &[0],
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4_K | QuantType::Q5_K => &[0, 2],
        QuantType::Q2_K => &[80, 82],
        QuantType::Q3_K => &[108],
        QuantType::Q6_K => &[208],
    };
    for blk in out.chunks_exact_mut(ts) {
        for &o in f16_offsets {
            let v = f16::from_f32(rng.random_range(-0.05f32..0.05));
            blk[o..o + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    out
}

fn dequant(ty: QuantType, bytes: &[u8], numel: usize) -> Vec<f32> {
    let mut w = vec![0f32; numel];
    dequantize_row(ty, bytes, &mut w);
    w
}

fn naive(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                .sum();
        }
    }
    out
}

fn quantized(x: &[f32], m: usize, k: usize) -> Q8Rows {
    let mut q = Q8Rows::default();
    q.quantize(x, m, k);
    q
}

/// The activations as the integer kernels see them: quantized, dequantized.
fn requantized(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let q = quantized(x, m, k);
    let mut out = vec![0f32; m * k];
    for i in 0..m {
        let r = q.row(i);
        for p in 0..k {
            out[i * k + p] = r.qs[p] as f32 * r.d[p / 32];
        }
    }
    out
}

/// |got - want| <= rtol * |want| + atol * max|want| elementwise: sums of
/// many terms round relative to their largest, not to a near-zero result.
fn check(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    let scale = want.iter().fold(0f64, |a, v| a.max(v.abs())).max(1e-6);
    for (e, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs();
        assert!(
            err <= rtol * w.abs() + atol * scale,
            "{what}: element {e}: got {g}, want {w} (max |want| {scale})"
        );
    }
}

/// (m, k, n). The kernels take blocks eight at a time: `k` of 96, 224 and
/// 576 (SmolLM2's width) leave 3, 7 and 2 blocks of 32 after the last
/// eight (only formats with 32-value blocks run them).
const SHAPES: [(usize, usize, usize); 10] = [
    (1, 256, 1),
    (1, 512, 7),
    (2, 256, 33),
    (3, 768, 5),
    (4, 256, 64),
    (5, 512, 19),
    (37, 256, 130),
    (1, 96, 9),
    (2, 576, 17),
    (5, 224, 3),
];

#[test]
fn integer_kernels_match_f64_on_every_path() {
    for ty in QuantType::ALL.into_iter().filter(|t| t.has_int8_kernel()) {
        for isa in QuantIsa::ALL.into_iter().filter(|i| supported(*i)) {
            for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
                if !k.is_multiple_of(ty.block_size()) {
                    continue;
                }
                let x = random_vec(m * k, 100 + s as u64);
                let wb = random_blocks(ty, n, k, 200 + s as u64);
                let w = dequant(ty, &wb, n * k);
                // Padded output rows: ldo > n must leave the gaps alone.
                let ldo = n + 3;
                let mut out = vec![f32::NAN; m * ldo];
                quant_matmul_with(isa, ty, &x, &wb, &mut out, m, k, n, ldo);
                let got: Vec<f32> = (0..m * n).map(|e| out[e / n * ldo + e % n]).collect();
                let what = format!("{ty} {isa:?} m={m} k={k} n={n}");
                check_fast(&got, &x, &w, m, k, n, &what);
                for i in 0..m {
                    assert!(out[i * ldo + n..(i + 1) * ldo].iter().all(|v| v.is_nan()));
                }
            }
        }
    }
}

/// A fast-path result against f64: within f32 rounding of the same
/// quantized activations, and within the activations' rounding (half a step,
/// `d / 2`, per value) of the f32 ones.
#[allow(clippy::too_many_arguments)]
fn check_fast(got: &[f32], x: &[f32], w: &[f32], m: usize, k: usize, n: usize, what: &str) {
    let want = naive(&requantized(x, m, k), w, m, k, n);
    check(got, &want, 1e-5, 1e-5, what);
    let exact = naive(x, w, m, k, n);
    let xq = quantized(x, m, k);
    for i in 0..m {
        let row = xq.row(i);
        for j in 0..n {
            let bound: f64 = (0..k)
                .map(|p| (w[j * k + p] as f64).abs() * row.d[p / 32] as f64 / 2.0)
                .sum();
            let err = (got[i * n + j] as f64 - exact[i * n + j]).abs();
            assert!(
                err <= bound * 1.001 + 1e-5,
                "{what}: ({i},{j}) error {err} > {bound}"
            );
        }
    }
}

/// (m, k, n) for the interleaved kernels: `n` whole groups of eight, `m`
/// covering every count of activation rows per pass (1 to 4) and a rest.
const X8_SHAPES: [(usize, usize, usize); 7] = [
    (1, 96, 8),
    (2, 576, 16),
    (3, 224, 24),
    (4, 256, 64),
    (5, 512, 40),
    (9, 576, 8),
    (37, 256, 136),
];

#[test]
fn interleaved_kernels_match_f64_on_every_path() {
    for ty in QuantType::ALL.into_iter().filter(|t| repack::has_x8(*t)) {
        for isa in QuantIsa::ALL.into_iter().filter(|i| supported(*i)) {
            for (s, &(m, k, n)) in X8_SHAPES.iter().enumerate() {
                let x = random_vec(m * k, 300 + s as u64);
                let wb = random_blocks(ty, n, k, 400 + s as u64);
                let w = dequant(ty, &wb, n * k);
                let packed = repack::repack_x8(ty, &wb, n, k).unwrap();
                let ldo = n + 3;
                let mut out = vec![f32::NAN; m * ldo];
                quant_matmul_x8_with(isa, ty, &x, &packed, &mut out, m, k, n, ldo);
                let got: Vec<f32> = (0..m * n).map(|e| out[e / n * ldo + e % n]).collect();
                check_fast(
                    &got,
                    &x,
                    &w,
                    m,
                    k,
                    n,
                    &format!("{ty}x8 {isa:?} m={m} k={k} n={n}"),
                );
                for i in 0..m {
                    assert!(out[i * ldo + n..(i + 1) * ldo].iter().all(|v| v.is_nan()));
                }
            }
        }
    }
}

#[test]
fn interleaved_results_do_not_depend_on_batch_size_and_exact_mode_matches_row_major() {
    let n = 304;
    for ty in QuantType::ALL.into_iter().filter(|t| repack::has_x8(*t)) {
        for k in [512, 576] {
            let x = random_vec(9 * k, 17);
            let wb = random_blocks(ty, n, k, 18);
            let packed = repack::repack_x8(ty, &wb, n, k).unwrap();
            for isa in QuantIsa::ALL.into_iter().filter(|i| supported(*i)) {
                let mut all = vec![0f32; 9 * n];
                quant_matmul_x8_with(isa, ty, &x, &packed, &mut all, 9, k, n, n);
                for m in 1..9 {
                    let mut part = vec![0f32; m * n];
                    quant_matmul_x8_with(isa, ty, &x[..m * k], &packed, &mut part, m, k, n, n);
                    assert_eq!(part, all[..m * n], "{ty}x8 {isa:?}: {m} rows differ from 9");
                }
            }
            for m in [1, 3, 70] {
                let x = random_vec(m * k, 19);
                let run = |w: WeightRef<'_>| {
                    let mut out = vec![0f32; m * n];
                    linear(&x, w, &mut out, m, k, n, n, MatmulMode::Exact);
                    out
                };
                assert_eq!(
                    run(WeightRef::QuantX8(ty, &packed)),
                    run(WeightRef::Quant(ty, &wb)),
                    "{ty}x8 exact m={m}"
                );
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_batch_size_or_path_split() {
    let n = 300;
    for (ty, k) in QuantType::ALL
        .into_iter()
        .filter(|t| t.has_int8_kernel())
        .flat_map(|t| [(t, 512), (t, 576)])
        .filter(|(t, k): &(QuantType, usize)| k.is_multiple_of(t.block_size()))
    {
        let x = random_vec(9 * k, 7);
        let wb = random_blocks(ty, n, k, 8);
        let mut all = vec![0f32; 9 * n];
        quant_matmul(ty, &x, &wb, &mut all, 9, k, n, n);
        for m in 1..9 {
            let mut part = vec![0f32; m * n];
            quant_matmul(ty, &x[..m * k], &wb, &mut part, m, k, n, n);
            assert_eq!(part, all[..m * n], "{ty}: {m} rows differ from 9");
        }
    }
}

#[test]
fn exact_mode_equals_the_f32_path_on_the_dequantized_matrix() {
    for ty in QuantType::ALL {
        for &(m, k, n) in &[(1, 256, 300), (3, 512, 129), (7, 256, 50), (70, 256, 257)] {
            let x = random_vec(m * k, 3);
            let wb = random_blocks(ty, n, k, 4);
            let w = dequant(ty, &wb, n * k);
            let mut want = vec![0f32; m * n];
            crate::cpu::matmul_transb(&x, &w, &mut want, m, k, n);
            let mut got = vec![0f32; m * n];
            linear(
                &x,
                WeightRef::Quant(ty, &wb),
                &mut got,
                m,
                k,
                n,
                n,
                MatmulMode::Exact,
            );
            check(
                &got,
                &naive(&x, &w, m, k, n),
                1e-5,
                1e-5,
                &format!("{ty} exact m={m} n={n}"),
            );
            if n > 128 && m >= 3 {
                // Tiles of >= 128 rows, from 3 rows up: the `gemm` crate gives
                // each output the same bits whatever the split (1 and 2 rows
                // take other paths, whose bits depend on it).
                assert_eq!(got, want, "{ty} exact m={m} n={n}");
            }
            // Fast mode falls back to the same tiles for types without a kernel.
            let mut fast = vec![0f32; m * n];
            linear(
                &x,
                WeightRef::Quant(ty, &wb),
                &mut fast,
                m,
                k,
                n,
                n,
                MatmulMode::Fast,
            );
            if !ty.has_int8_kernel() {
                assert_eq!(fast, got, "{ty}");
            }
        }
    }
}

#[test]
fn sixteen_bit_weights_convert_exactly_per_tile() {
    for &(m, k, n) in &[(1, 100, 300), (2, 33, 5), (4, 64, 129), (9, 70, 200)] {
        let x = random_vec(m * k, 11);
        let w32 = random_vec(n * k, 12);
        let wb: Vec<half::bf16> = w32.iter().map(|v| half::bf16::from_f32(*v)).collect();
        let wh: Vec<f16> = w32.iter().map(|v| f16::from_f32(*v)).collect();
        let back_b: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
        let back_h: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
        for (wr, back) in [
            (WeightRef::BF16(&wb), &back_b),
            (WeightRef::F16(&wh), &back_h),
        ] {
            let ldo = n + 1;
            let mut got = vec![0f32; m * ldo];
            linear(&x, wr, &mut got, m, k, n, ldo, MatmulMode::Fast);
            let got: Vec<f32> = (0..m * n).map(|e| got[e / n * ldo + e % n]).collect();
            check(
                &got,
                &naive(&x, back, m, k, n),
                1e-5,
                1e-5,
                &format!("16-bit m={m} n={n}"),
            );
        }
    }
}

#[test]
fn quantized_activations_round_trip_within_half_a_step() {
    let x = random_vec(3 * 64, 5);
    let mut q = Q8Rows::default();
    q.quantize(&x, 3, 64);
    for i in 0..3 {
        let r = q.row(i);
        for p in 0..64 {
            let back = r.qs[p] as f32 * r.d[p / 32];
            assert!((back - x[i * 64 + p]).abs() <= r.d[p / 32] * 0.5 + 1e-7);
        }
        for h in 0..4 {
            let s: i32 = r.qs[h * 16..(h + 1) * 16].iter().map(|&v| v as i32).sum();
            assert_eq!(r.sums[h], s);
        }
        for b in 0..2 {
            let want = r.d[b] * (r.sums[2 * b] + r.sums[2 * b + 1]) as f32;
            assert_eq!(r.s[b], want, "block {b}'s d x sum");
        }
    }
    // An all-zero block quantizes to zeros with scale 0, never NaN.
    q.quantize(&[0.0; 32], 1, 32);
    assert_eq!(q.d, vec![0.0]);
    assert!(q.qs.iter().all(|&v| v == 0));
}

#[test]
fn activation_quantization_gives_the_same_bits_on_every_path() {
    // Random rows, rows with exact ties (v / d = n + 0.5 with d = 1:
    // amax 127 makes d exactly 1), a NaN, an all-zero block, -0.0.
    let mut x = random_vec(4 * 96, 21);
    for (p, v) in x[96..192].iter_mut().enumerate() {
        *v = if p % 32 == 0 {
            127.0
        } else {
            (p % 50) as f32 - 24.5
        };
    }
    x[200] = f32::NAN;
    x[288..320].fill(0.0);
    x[320] = -0.0;
    let mut want = Q8Rows::default();
    want.quantize_with(QuantIsa::Scalar, &x, 4, 96);
    // Ties round to even: 0.5 -> 0, 1.5 -> 2, -24.5 -> -24.
    assert_eq!(want.row(1).qs[1..4], [-24, -22, -22]);
    assert_eq!(want.row(2).qs[200 - 192], 0, "NaN quantizes to 0");
    for isa in QuantIsa::ALL.into_iter().filter(|i| supported(*i)) {
        let mut got = Q8Rows::default();
        got.quantize_with(isa, &x, 4, 96);
        let bits =
            |q: &Q8Rows| -> Vec<u32> { q.d.iter().chain(&q.s).map(|v| v.to_bits()).collect() };
        assert_eq!(bits(&got), bits(&want), "{isa:?}: scales");
        assert_eq!(got.qs, want.qs, "{isa:?}: quants");
        assert_eq!(got.sums, want.sums, "{isa:?}: sums");
    }
}
