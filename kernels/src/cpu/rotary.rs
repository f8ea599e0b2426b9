//! Rotary position embedding, HF `rotate_half` (GPT-NeoX) convention over the
//! whole head: `x1' = x1·cos − x2·sin`, `x2' = x2·cos + x1·sin` for the two
//! halves of each head. The cos/sin table is computed once per model the way
//! HF computes it (f32 angles, scaled by `attention_scaling`).

use rayon::prelude::*;

use super::min_rows_per_task;

/// RoPE frequency variants, as HF transformers' `modeling_rope_utils` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `rope_type: "default"`.
    Default,
    /// `rope_type: "linear"`: every frequency divided by `factor`.
    Linear { factor: f32 },
    /// `rope_type: "llama3"`: long wavelengths divided by `factor`, short ones
    /// kept, a smooth interpolation between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
}

/// Inverse frequencies (`head_dim / 2` of them), bit-for-bit the f32
/// arithmetic of HF's `_compute_*_rope_parameters` (torch f32 ops: a Python
/// scalar operand is cast to f32; `scalar / tensor` is `reciprocal * scalar`).
pub fn rope_inv_freq(head_dim: usize, theta: f32, scaling: &RopeScaling) -> Vec<f32> {
    let dim = head_dim as f32;
    let base = theta as f64;
    // 1 / base^(2i / dim): the power rounded to f32, as torch's f32 pow.
    let inv_freq = (0..head_dim / 2).map(|i| {
        let exponent = (2 * i) as f32 / dim;
        1.0 / (base.powf(exponent as f64) as f32)
    });
    match *scaling {
        RopeScaling::Default => inv_freq.collect(),
        RopeScaling::Linear { factor } => inv_freq.map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old_context_len = original_max_position_embeddings as f64;
            let low_freq_wavelen = (old_context_len / low_freq_factor as f64) as f32;
            let high_freq_wavelen = (old_context_len / high_freq_factor as f64) as f32;
            let two_pi = (2.0 * std::f64::consts::PI) as f32;
            let smooth_den = (high_freq_factor as f64 - low_freq_factor as f64) as f32;
            inv_freq
                .map(|f| {
                    let wavelen = (1.0 / f) * two_pi;
                    let scaled = if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        f
                    };
                    let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    if !is_medium {
                        return scaled;
                    }
                    let smooth =
                        ((1.0 / wavelen) * old_context_len as f32 - low_freq_factor) / smooth_den;
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                })
                .collect()
        }
    }
}

/// The cos/sin table `[max_position, head_dim / 2]` (the two halves of a head
/// share it).
#[derive(Debug, Clone)]
pub struct RotaryCache {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    max_position: usize,
}

impl RotaryCache {
    /// Builds the table for positions `0..max_position`.
    pub fn new(inv_freq: &[f32], max_position: usize, attention_scaling: f32) -> Self {
        let half = inv_freq.len();
        let mut cos = vec![0f32; max_position * half];
        let mut sin = vec![0f32; max_position * half];
        if half > 0 {
            cos.par_chunks_mut(half)
                .zip(sin.par_chunks_mut(half))
                .enumerate()
                .for_each(|(pos, (c, s))| {
                    for ((c, s), f) in c.iter_mut().zip(s.iter_mut()).zip(inv_freq) {
                        // The angle is an f32 product, as HF's; cos/sin correctly rounded.
                        let angle = (pos as f32 * f) as f64;
                        *c = angle.cos() as f32 * attention_scaling;
                        *s = angle.sin() as f32 * attention_scaling;
                    }
                });
        }
        Self {
            cos,
            sin,
            half,
            max_position,
        }
    }

    /// The dims of each head this table rotates (the head size, or less
    /// for partial rotary).
    pub fn rotary_dim(&self) -> usize {
        2 * self.half
    }

    /// Positions the table covers.
    pub fn max_position(&self) -> usize {
        self.max_position
    }

    /// The tables, row-major `[max_position, head_dim / 2]` (for device upload).
    pub fn cos_sin(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }
}

/// Rotates every head of `q` (`[tokens, num_heads, head_dim]`) and `k`
/// (`[tokens, num_kv_heads, head_dim]`) in place by its token's position:
/// the table's leading `rotary_dim` dims of each head, HF's `rotate_half`
/// within them; the rest pass through (partial rotary).
///
/// # Panics
/// On shape mismatches, and for a position outside the table.
pub fn rotary_embedding(
    positions: &[u32],
    q: &mut [f32],
    k: &mut [f32],
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    cache: &RotaryCache,
) {
    let tokens = positions.len();
    assert!(
        num_heads > 0 && num_kv_heads > 0,
        "rotary_embedding: zero heads"
    );
    assert!(
        cache.rotary_dim() <= head_dim,
        "rotary_embedding: the table rotates {} dims of a {head_dim}-dim head",
        cache.rotary_dim()
    );
    assert_eq!(
        q.len(),
        tokens * num_heads * head_dim,
        "rotary_embedding: q shape"
    );
    assert_eq!(
        k.len(),
        tokens * num_kv_heads * head_dim,
        "rotary_embedding: k shape"
    );
    if let Some(&p) = positions
        .iter()
        .find(|&&p| p as usize >= cache.max_position)
    {
        panic!(
            "rotary_embedding: position {p} >= max_position {}",
            cache.max_position
        );
    }
    if tokens == 0 || head_dim == 0 {
        return;
    }
    let half = cache.half;
    let row = (num_heads + num_kv_heads) * head_dim;
    let rotate = |((q, k), &pos): ((&mut [f32], &mut [f32]), &u32)| {
        let c = &cache.cos[pos as usize * half..][..half];
        let s = &cache.sin[pos as usize * half..][..half];
        for head in q
            .chunks_exact_mut(head_dim)
            .chain(k.chunks_exact_mut(head_dim))
        {
            let (x1, x2) = head[..2 * half].split_at_mut(half);
            for (((a, b), c), s) in x1.iter_mut().zip(x2.iter_mut()).zip(c).zip(s) {
                // Separate products and one add each, as torch's eager f32 ops.
                let (x1v, x2v) = (*a, *b);
                *a = x1v * c - x2v * s;
                *b = x2v * c + x1v * s;
            }
        }
    };
    q.par_chunks_mut(num_heads * head_dim)
        .zip(k.par_chunks_mut(num_kv_heads * head_dim))
        .zip(positions.par_iter())
        .with_min_len(min_rows_per_task(row))
        .for_each(rotate);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_util::{assert_close, random_vec};

    /// Inverse frequencies from HF transformers 5.x's own functions (f32 bits).
    const HF_DEFAULT_64_1E5: [u32; 4] = [0x3f800000, 0x3f32a506, 0x3ef953cf, 0x37706b6d];
    const HF_LINEAR2_64_1E4: [u32; 4] = [0x3f000000, 0x3ebff911, 0x3e8ff59a, 0x388bd472];
    /// Llama 3.1 (128, 5e5, factor 32): indices 0, 27..=35 cover all three bands.
    const HF_LLAMA3_128: [u32; 10] = [
        0x3f800000, 0x3b812e35, 0x3b527720, 0x3b0ad4f8, 0x3aa9279b, 0x3a47e547, 0x39e13620,
        0x39699599, 0x38cb98f7, 0x37c86886,
    ];
    const HF_LLAMA3_80_1E6: [u32; 6] = [
        0x3f800000, 0x3c02248b, 0x3bb8449c, 0x3b8273a6, 0x3b272ce7, 0x343d9668,
    ];

    fn bits(v: &[f32], idx: &[usize]) -> Vec<u32> {
        idx.iter().map(|&i| v[i].to_bits()).collect()
    }

    #[test]
    fn inv_freq_equals_hf_bit_for_bit() {
        let d = rope_inv_freq(64, 100000.0, &RopeScaling::Default);
        assert_eq!(d.len(), 32);
        assert_eq!(bits(&d, &[0, 1, 2, 31]), HF_DEFAULT_64_1E5);
        let l = rope_inv_freq(64, 10000.0, &RopeScaling::Linear { factor: 2.0 });
        assert_eq!(bits(&l, &[0, 1, 2, 31]), HF_LINEAR2_64_1E4);
        let llama3 = |factor, orig| RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: orig,
        };
        let l3 = rope_inv_freq(128, 500000.0, &llama3(32.0, 8192));
        let idx: Vec<usize> = std::iter::once(0).chain(27..=35).collect();
        assert_eq!(bits(&l3, &idx), HF_LLAMA3_128);
        let l3b = rope_inv_freq(80, 1000000.0, &llama3(8.0, 8192));
        assert_eq!(bits(&l3b, &[0, 14, 15, 16, 17, 39]), HF_LLAMA3_80_1E6);
    }

    #[test]
    fn cache_shape_and_scaling() {
        let inv = rope_inv_freq(8, 10000.0, &RopeScaling::Default);
        let c = RotaryCache::new(&inv, 5, 0.5);
        assert_eq!((c.rotary_dim(), c.max_position()), (8, 5));
        let (cos, sin) = c.cos_sin();
        assert_eq!((cos.len(), sin.len()), (20, 20));
        assert_eq!((cos[0], sin[0]), (0.5, 0.0));
        assert!(
            (cos[4] - 0.5 * 1f32.cos()).abs() < 1e-7 && (sin[4] - 0.5 * 1f32.sin()).abs() < 1e-7
        );
    }

    /// HF's rotation of the leading `2 * inv.len()` dims of each head, in
    /// f64; the other dims pass through.
    fn naive(x: &[f32], positions: &[u32], heads: usize, d: usize, inv: &[f32]) -> Vec<f64> {
        let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let half = inv.len();
        for (t, &p) in positions.iter().enumerate() {
            for h in 0..heads {
                let base = (t * heads + h) * d;
                for i in 0..half {
                    let angle = (p as f32 * inv[i]) as f64;
                    let (x1, x2) = (x[base + i] as f64, x[base + half + i] as f64);
                    out[base + i] = x1 * angle.cos() - x2 * angle.sin();
                    out[base + half + i] = x2 * angle.cos() + x1 * angle.sin();
                }
            }
        }
        out
    }

    #[test]
    fn rotation_matches_f64() {
        // (.., rotary dims): the last two are partial (Phi-4-mini's 96 of 128).
        for (tokens, heads, kv_heads, d, rot) in [
            (1, 1, 1, 2, 2),
            (3, 9, 3, 64, 64),
            (70, 4, 1, 128, 128),
            (600, 2, 2, 80, 80),
            (9, 4, 2, 128, 96),
            (5, 3, 1, 64, 16),
        ] {
            let inv = rope_inv_freq(rot, 10000.0, &RopeScaling::Default);
            let cache = RotaryCache::new(&inv, 4096, 1.0);
            let positions: Vec<u32> = (0..tokens as u32).map(|t| (t * 37 + 5) % 4096).collect();
            let q0 = random_vec(tokens * heads * d, 1);
            let k0 = random_vec(tokens * kv_heads * d, 2);
            let (mut q, mut k) = (q0.clone(), k0.clone());
            rotary_embedding(&positions, &mut q, &mut k, heads, kv_heads, d, &cache);
            let what = format!("t={tokens} h={heads}/{kv_heads} d={d} rot={rot}");
            assert_close(
                &q,
                &naive(&q0, &positions, heads, d, &inv),
                1e-5,
                1e-6,
                &what,
            );
            assert_close(
                &k,
                &naive(&k0, &positions, kv_heads, d, &inv),
                1e-5,
                1e-6,
                &what,
            );
        }
    }

    #[test]
    #[should_panic(expected = "max_position")]
    fn position_past_the_table_panics() {
        let cache = RotaryCache::new(&[1.0], 4, 1.0);
        rotary_embedding(&[4], &mut [0.0; 2], &mut [0.0; 2], 1, 1, 2, &cache);
    }
}
