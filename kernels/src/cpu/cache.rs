//! reshape_and_cache: write each new token's K and V rows into the paged KV
//! cache, `[num_blocks, block_size, num_kv_heads, head_dim]`, at its slot
//! (`block_id * block_size + offset`). Because that layout puts a slot's heads
//! together, a slot is one contiguous `num_kv_heads * head_dim` row. Rows are
//! rounded to the cache's element type as they are stored.

use super::kv_cache::KvSliceMut;

/// Copies token `t`'s K/V rows to slot `slot_mapping[t]`; a negative slot is
/// padding and is skipped.
///
/// # Panics
/// On shape mismatches and for a slot past the cache.
pub fn reshape_and_cache(
    key: &[f32],
    value: &[f32],
    mut key_cache: KvSliceMut<'_>,
    mut value_cache: KvSliceMut<'_>,
    slot_mapping: &[i64],
    num_kv_heads: usize,
    head_dim: usize,
) {
    let row = num_kv_heads * head_dim;
    let tokens = slot_mapping.len();
    assert_eq!(
        key.len(),
        tokens * row,
        "reshape_and_cache: key is not [tokens, {num_kv_heads}, {head_dim}]"
    );
    assert_eq!(
        value.len(),
        key.len(),
        "reshape_and_cache: value and key differ in length"
    );
    assert_eq!(
        key_cache.len(),
        value_cache.len(),
        "reshape_and_cache: caches differ in length"
    );
    if row == 0 {
        return;
    }
    let slots = key_cache.len() / row;
    for ((k, v), &slot) in key
        .chunks_exact(row)
        .zip(value.chunks_exact(row))
        .zip(slot_mapping)
    {
        if slot < 0 {
            continue;
        }
        let slot = slot as usize;
        assert!(
            slot < slots,
            "reshape_and_cache: slot {slot} >= {slots} slots in the cache"
        );
        key_cache.write_from(slot * row, k);
        value_cache.write_from(slot * row, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kv_cache::{KvBuffer, KvCacheDtype};

    #[test]
    fn writes_each_slot_and_skips_padding() {
        let (kvh, d, bs, blocks) = (2, 3, 4, 3);
        let row = kvh * d;
        let key: Vec<f32> = (0..3 * row).map(|v| v as f32).collect();
        let value: Vec<f32> = key.iter().map(|v| -v).collect();
        let mut kc = vec![0.5; blocks * bs * row];
        let mut vc = kc.clone();
        let slots = [9i64, -1, 4];
        reshape_and_cache(
            &key,
            &value,
            KvSliceMut::F32(&mut kc),
            KvSliceMut::F32(&mut vc),
            &slots,
            kvh,
            d,
        );
        for s in 0..blocks * bs {
            let want: Vec<f32> = match s {
                9 => key[..row].to_vec(),
                4 => key[2 * row..].to_vec(),
                _ => vec![0.5; row],
            };
            assert_eq!(&kc[s * row..(s + 1) * row], &want[..], "key slot {s}");
            let want_v: Vec<f32> = want
                .iter()
                .map(|v| if *v == 0.5 { 0.5 } else { -v })
                .collect();
            assert_eq!(&vc[s * row..(s + 1) * row], &want_v[..], "value slot {s}");
        }
        // Block 2, offset 1 is element ((2 * bs + 1) * kvh + h) * d + i of the 4-d layout.
        assert_eq!(kc[((2 * bs + 1) * kvh + 1) * d + 2], key[row - 1]);
    }

    #[test]
    #[should_panic(expected = "slot 8 >= 8")]
    fn slot_past_the_cache_panics() {
        reshape_and_cache(
            &[1.0; 2],
            &[1.0; 2],
            KvSliceMut::F32(&mut [0.0; 16]),
            KvSliceMut::F32(&mut [0.0; 16]),
            &[8],
            1,
            2,
        );
    }

    #[test]
    fn sixteen_bit_caches_store_rounded_rows() {
        let key = [1.5f32, -0.1, 3.0, 7.0];
        let value = [0.3f32, 2.0, -4.0, 1e-3];
        for dtype in [KvCacheDtype::BF16, KvCacheDtype::F16] {
            let mut kc = KvBuffer::zeroed(dtype, 3 * 4).unwrap();
            let mut vc = KvBuffer::zeroed(dtype, 3 * 4).unwrap();
            reshape_and_cache(
                &key,
                &value,
                kc.as_mut_slice(),
                vc.as_mut_slice(),
                &[2],
                2,
                2,
            );
            let (mut k, mut v) = ([0f32; 12], [0f32; 12]);
            kc.as_slice().read_into(0, &mut k);
            vc.as_slice().read_into(0, &mut v);
            assert!(k[..8].iter().chain(&v[..8]).all(|&x| x == 0.0), "{dtype}");
            for (got, want) in k[8..].iter().chain(&v[8..]).zip(key.iter().chain(&value)) {
                assert!(
                    (got - want).abs() <= want.abs() / 256.0,
                    "{dtype}: {got} vs {want}"
                );
            }
        }
    }
}
