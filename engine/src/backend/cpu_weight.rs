//! A weight matrix on the CPU, kept in its checkpoint format: f32, f16/bf16,
//! or GGUF blocks. No f32 copy of it is ever made; the matmul decodes (or
//! multiplies in integers) as it goes, and an embedding lookup decodes the
//! one row it needs.
//!
//! A fused matrix (q/k/v, gate/up) whose parts differ in format (a Q4_K_M
//! file's v_proj is often Q6_K while q/k are Q4_K) is a list of row ranges,
//! each multiplied into its own columns of the output.
//!
//! A Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 segment of whole groups of eight rows is
//! interleaved at load (`quant::repack`: the same bytes, reordered) so the
//! integer kernels put eight weight rows in a vector's lanes.

use half::{bf16, f16};
use pagoda_kernels::cpu::quant::repack::repack_x8;
use pagoda_kernels::cpu::{self, MatmulMode, QuantType, WeightRef};

use crate::weights::{HostTensor, TensorData};

/// The load log's name for an interleaved format.
fn x8_name(ty: QuantType) -> &'static str {
    match ty {
        QuantType::Q4_0 => "Q4_0x8",
        QuantType::Q4_1 => "Q4_1x8",
        QuantType::Q5_0 => "Q5_0x8",
        QuantType::Q5_1 => "Q5_1x8",
        QuantType::Q8_0 => "Q8_0x8",
        _ => ty.name(),
    }
}

/// Rows of one format.
#[derive(Debug)]
enum Storage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    Quant(QuantType, Vec<u8>),
    /// Blocks with rows interleaved eight to a group (`quant::repack`).
    QuantX8(QuantType, Vec<u8>),
}

#[derive(Debug)]
struct Segment {
    rows: usize,
    data: Storage,
}

impl Segment {
    fn as_ref(&self) -> WeightRef<'_> {
        match &self.data {
            Storage::F32(v) => WeightRef::F32(v),
            Storage::F16(v) => WeightRef::F16(v),
            Storage::BF16(v) => WeightRef::BF16(v),
            Storage::Quant(ty, b) => WeightRef::Quant(*ty, b),
            Storage::QuantX8(ty, b) => WeightRef::QuantX8(*ty, b),
        }
    }

    fn format(&self) -> (&'static str, usize) {
        match &self.data {
            Storage::F32(v) => ("F32", 4 * v.len()),
            Storage::F16(v) => ("F16", 2 * v.len()),
            Storage::BF16(v) => ("BF16", 2 * v.len()),
            Storage::Quant(ty, b) => (ty.name(), b.len()),
            Storage::QuantX8(ty, b) => (x8_name(*ty), b.len()),
        }
    }
}

/// `[rows, cols]`, row-major, as segments of rows.
#[derive(Debug)]
pub struct CpuWeight {
    segments: Vec<Segment>,
    cols: usize,
}

impl CpuWeight {
    /// Stacks `parts` (each `[rows_i, cols]`) row-wise; consecutive parts of
    /// one format share a segment.
    pub fn from_parts(parts: Vec<HostTensor>) -> anyhow::Result<Self> {
        anyhow::ensure!(!parts.is_empty(), "a weight matrix needs at least one part");
        let cols: usize = parts[0].shape[1..].iter().product();
        let mut segments: Vec<Segment> = Vec::new();
        for p in parts {
            let p_cols: usize = p.shape[1..].iter().product();
            anyhow::ensure!(
                p_cols == cols && !p.shape.is_empty(),
                "stacked weights differ in width: {:?} vs {cols} columns",
                p.shape
            );
            let rows = p.shape[0];
            let data = match p.data {
                TensorData::F32(v) => Storage::F32(v),
                TensorData::F16(v) => Storage::F16(v),
                TensorData::BF16(v) => Storage::BF16(v),
                TensorData::Quant { ty, bytes } => {
                    anyhow::ensure!(
                        cols.is_multiple_of(ty.block_size())
                            && bytes.len() == rows * ty.row_bytes(cols),
                        "{ty} tensor of shape {:?} is not whole blocks per row",
                        p.shape
                    );
                    Storage::Quant(ty, bytes)
                }
            };
            match (
                segments.last_mut().map(|s| (&mut s.rows, &mut s.data)),
                data,
            ) {
                (Some((r, Storage::F32(a))), Storage::F32(b)) => {
                    a.extend(b);
                    *r += rows;
                }
                (Some((r, Storage::F16(a))), Storage::F16(b)) => {
                    a.extend(b);
                    *r += rows;
                }
                (Some((r, Storage::BF16(a))), Storage::BF16(b)) => {
                    a.extend(b);
                    *r += rows;
                }
                (Some((r, Storage::Quant(ta, a))), Storage::Quant(tb, b)) if *ta == tb => {
                    a.extend(b);
                    *r += rows;
                }
                (_, data) => segments.push(Segment { rows, data }),
            }
        }
        for s in &mut segments {
            if let Storage::Quant(ty, bytes) = &s.data {
                if let Some(packed) = repack_x8(*ty, bytes, s.rows, cols) {
                    s.data = Storage::QuantX8(*ty, packed);
                }
            }
        }
        Ok(CpuWeight { segments, cols })
    }

    pub fn rows(&self) -> usize {
        self.segments.iter().map(|s| s.rows).sum()
    }

    /// (format, bytes) of each segment.
    pub fn formats(&self) -> Vec<(&'static str, usize)> {
        self.segments.iter().map(Segment::format).collect()
    }

    /// `out[m, rows] = x[m, cols] · selfᵀ`.
    pub fn matmul(&self, x: &[f32], out: &mut [f32], m: usize, mode: MatmulMode) {
        let (k, n) = (self.cols, self.rows());
        let mut c0 = 0;
        for s in &self.segments {
            cpu::linear(x, s.as_ref(), &mut out[c0..], m, k, s.rows, n, mode);
            c0 += s.rows;
        }
    }

    /// Row `r` decoded into `out` (`cols` values); false when out of range.
    pub fn decode_row(&self, mut r: usize, out: &mut [f32]) -> bool {
        for s in &self.segments {
            if r < s.rows {
                s.as_ref().decode_rows(r, self.cols, out);
                return true;
            }
            r -= s.rows;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quant_rows(rows: usize, seed: u8) -> HostTensor {
        // Q8_0 blocks: scale 1/16, quants counting up from `seed`.
        let mut bytes = Vec::new();
        for r in 0..rows {
            bytes.extend(half::f16::from_f32(1.0 / 16.0).to_bits().to_le_bytes());
            bytes.extend((0..32).map(|i| (i as u8).wrapping_add(seed).wrapping_add(r as u8)));
        }
        HostTensor {
            shape: vec![rows, 32],
            data: TensorData::Quant {
                ty: QuantType::Q8_0,
                bytes,
            },
        }
    }

    #[test]
    fn mixed_parts_keep_their_formats_and_multiply_like_f32() {
        let a = quant_rows(3, 0);
        let b = HostTensor {
            shape: vec![2, 32],
            data: TensorData::BF16((0..64).map(|i| bf16::from_f32(i as f32 / 8.0)).collect()),
        };
        let c = quant_rows(1, 9);
        let dense: Vec<f32> = [a.clone(), b.clone(), c.clone()]
            .into_iter()
            .flat_map(|t| t.to_f32())
            .collect();
        let w = CpuWeight::from_parts(vec![a, b, c]).unwrap();
        assert_eq!(
            w.formats(),
            vec![("Q8_0", 102), ("BF16", 128), ("Q8_0", 34)]
        );
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut got = vec![0f32; 2 * 6];
        w.matmul(&x, &mut got, 2, MatmulMode::Exact);
        for i in 0..2 {
            for j in 0..6 {
                let want: f32 = (0..32).map(|p| x[i * 32 + p] * dense[j * 32 + p]).sum();
                assert!((got[i * 6 + j] - want).abs() < 1e-4, "{i},{j}");
            }
        }
        let mut row = vec![0f32; 32];
        assert!(w.decode_row(4, &mut row));
        assert_eq!(row, dense[4 * 32..5 * 32]);
        assert!(w.decode_row(5, &mut row));
        assert_eq!(row, dense[5 * 32..]);
        assert!(!w.decode_row(6, &mut row));
    }

    #[test]
    fn whole_groups_of_eight_rows_are_interleaved_and_multiply_the_same() {
        let (a, b) = (quant_rows(16, 3), quant_rows(8, 5));
        let dense: Vec<f32> = [a.clone(), b.clone()]
            .into_iter()
            .flat_map(|t| t.to_f32())
            .collect();
        let w = CpuWeight::from_parts(vec![a, b]).unwrap();
        assert_eq!(w.formats(), vec![("Q8_0x8", 24 * 34)]);
        let x: Vec<f32> = (0..3 * 32).map(|i| (i as f32 * 0.21).cos()).collect();
        for mode in [MatmulMode::Exact, MatmulMode::Fast] {
            let mut got = vec![0f32; 3 * 24];
            w.matmul(&x, &mut got, 3, mode);
            for i in 0..3 {
                for j in 0..24 {
                    let want: f32 = (0..32).map(|p| x[i * 32 + p] * dense[j * 32 + p]).sum();
                    // Fast: activations rounded to 8 bits (|x| <= 1, |w| <= 8).
                    let tol = if mode == MatmulMode::Fast { 0.5 } else { 1e-4 };
                    assert!((got[i * 24 + j] - want).abs() < tol, "{mode:?} {i},{j}");
                }
            }
        }
        let mut row = vec![0f32; 32];
        for r in [0, 7, 13, 23] {
            assert!(w.decode_row(r, &mut row));
            assert_eq!(row, dense[r * 32..(r + 1) * 32], "row {r}");
        }
    }
}
