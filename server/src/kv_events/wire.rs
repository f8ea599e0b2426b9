//! KV-cache events in vLLM's wire format: msgpack of msgspec structs with
//! `array_like=True` and `tag=True`, as `vllm/distributed/kv_events.py`
//! writes them in vLLM 0.11 and `vllm-router` (`src/kv_events/decoder.rs`)
//! reads them:
//!
//! ```text
//! batch         [ts: f64, [event, ...], data_parallel_rank: 0]
//! BlockStored   ["BlockStored", [hash: u64, ...], parent: u64 | nil,
//!                [token_id, ...], block_size, lora_id: nil, medium: "GPU",
//!                lora_name: nil]
//! BlockRemoved  ["BlockRemoved", [hash: u64, ...], medium: "GPU"]
//! AllBlocksCleared ["AllBlocksCleared"]
//! ```
//!
//! Hashes go out as 64-bit integers (vLLM's `ExternalBlockHash` may be an
//! int; routers key removals by them and hash token ids themselves): the
//! two halves of the scheduler's 128-bit hash folded by XOR, stable across
//! restarts like the hash itself. `medium` is "GPU", vLLM's name for the
//! engine's own KV cache, whatever the device.

use pagoda_engine::kv_events::{BlockHash, KvCacheEvent, KvEventBatch};
use rmp::encode;

/// vLLM's `MEDIUM_GPU`: the engine's primary KV cache.
const MEDIUM: &str = "GPU";

/// The 64-bit form of a block hash on the wire.
pub fn external_hash(hash: BlockHash) -> u64 {
    (hash.0 as u64) ^ ((hash.0 >> 64) as u64)
}

/// One batch as a msgpack payload.
pub fn encode_batch(batch: &KvEventBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 8 * batch.events.len());
    let w = &mut out;
    // Writing into a Vec cannot fail: the results carry `Infallible`.
    let _ = encode::write_array_len(w, 3);
    let _ = encode::write_f64(w, batch.ts);
    let _ = encode::write_array_len(w, len_u32(batch.events.len()));
    for event in &batch.events {
        encode_event(w, event);
    }
    let _ = encode::write_uint(w, 0);
    out
}

fn encode_event(w: &mut Vec<u8>, event: &KvCacheEvent) {
    match event {
        KvCacheEvent::BlockStored {
            block_hashes,
            parent_block_hash,
            token_ids,
            block_size,
        } => {
            let _ = encode::write_array_len(w, 8);
            let _ = encode::write_str(w, "BlockStored");
            encode_hashes(w, block_hashes);
            match parent_block_hash {
                Some(h) => {
                    let _ = encode::write_uint(w, external_hash(*h));
                }
                None => {
                    let _ = encode::write_nil(w);
                }
            }
            let _ = encode::write_array_len(w, len_u32(token_ids.len()));
            for &t in token_ids {
                let _ = encode::write_uint(w, t.into());
            }
            let _ = encode::write_uint(w, *block_size as u64);
            let _ = encode::write_nil(w); // lora_id
            let _ = encode::write_str(w, MEDIUM);
            let _ = encode::write_nil(w); // lora_name
        }
        KvCacheEvent::BlockRemoved { block_hashes } => {
            let _ = encode::write_array_len(w, 3);
            let _ = encode::write_str(w, "BlockRemoved");
            encode_hashes(w, block_hashes);
            let _ = encode::write_str(w, MEDIUM);
        }
        KvCacheEvent::AllBlocksCleared => {
            let _ = encode::write_array_len(w, 1);
            let _ = encode::write_str(w, "AllBlocksCleared");
        }
    }
}

fn encode_hashes(w: &mut Vec<u8>, hashes: &[BlockHash]) {
    let _ = encode::write_array_len(w, len_u32(hashes.len()));
    for &h in hashes {
        let _ = encode::write_uint(w, external_hash(h));
    }
}

/// msgpack lengths are u32; a step never holds 2^32 events or tokens.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_encodes_as_vllm_s_arrays() {
        let batch = KvEventBatch {
            ts: 1.5,
            events: vec![
                KvCacheEvent::BlockStored {
                    block_hashes: vec![BlockHash(7)],
                    parent_block_hash: None,
                    token_ids: vec![1, 300],
                    block_size: 2,
                },
                KvCacheEvent::BlockRemoved {
                    block_hashes: vec![BlockHash((1 << 64) | 3)],
                },
                KvCacheEvent::AllBlocksCleared,
            ],
        };
        let mut expected = vec![0x93, 0xcb];
        expected.extend_from_slice(&1.5f64.to_be_bytes());
        expected.push(0x93); // three events
        expected.push(0x98); // BlockStored: eight fields
        expected.extend_from_slice(b"\xabBlockStored");
        expected.extend_from_slice(&[0x91, 0x07, 0xc0, 0x92, 0x01, 0xcd, 0x01, 0x2c, 0x02, 0xc0]);
        expected.extend_from_slice(b"\xa3GPU\xc0");
        expected.push(0x93);
        expected.extend_from_slice(b"\xacBlockRemoved");
        expected.extend_from_slice(&[0x91, 0x02]); // 3 ^ 1, folded
        expected.extend_from_slice(b"\xa3GPU");
        expected.push(0x91);
        expected.extend_from_slice(b"\xb0AllBlocksCleared");
        expected.push(0x00); // data_parallel_rank
        assert_eq!(encode_batch(&batch), expected);
    }
}
