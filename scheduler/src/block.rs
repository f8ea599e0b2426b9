//! One KV-cache block's metadata. The KV data itself lives on the device at
//! `block_id * block_size ..`; the scheduler only tracks who uses it.

use crate::block_hash::BlockHash;

#[derive(Debug, Clone, Default)]
pub struct KvCacheBlock {
    /// Number of block tables holding this block. 0 = in the free queue.
    pub(crate) ref_cnt: u32,
    /// Set once the block is full and registered in the prefix cache; kept
    /// after the block is freed (so it can still be hit) until the block is
    /// popped for reuse.
    pub(crate) block_hash: Option<BlockHash>,
    /// The KV-cache group whose layers hold this block's KV (meaningful
    /// with a hash: the prefix cache is keyed by (hash, group)).
    pub(crate) group: u32,
}

impl KvCacheBlock {
    pub fn ref_cnt(&self) -> u32 {
        self.ref_cnt
    }

    pub fn block_hash(&self) -> Option<BlockHash> {
        self.block_hash
    }
}
