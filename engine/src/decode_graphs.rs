//! Decode steps at fixed batch sizes (vLLM's CUDA-graph buckets): a pure
//! decode step of `n` sequences runs as the smallest size `>= n`, padded,
//! replaying that size's recorded graph. Launch shapes of a padded step
//! depend on its size only: block tables are `max_blocks_per_seq` wide and
//! the decode grid is sized for `max_seq_len`.

use crate::backend::Backend;

pub struct DecodeGraphs<B: Backend> {
    /// Ascending.
    sizes: Vec<usize>,
    /// `graphs[i]` was recorded for `sizes[i]`; `None` runs the padded step
    /// eagerly.
    graphs: Vec<Option<B::Graph>>,
    pub max_blocks_per_seq: usize,
    pub max_seq_len: usize,
}

impl<B: Backend> DecodeGraphs<B> {
    pub fn new(
        sizes: Vec<usize>,
        graphs: Vec<Option<B::Graph>>,
        max_blocks_per_seq: usize,
        max_seq_len: usize,
    ) -> Self {
        debug_assert_eq!(sizes.len(), graphs.len());
        debug_assert!(sizes.windows(2).all(|w| w[0] < w[1]));
        Self {
            sizes,
            graphs,
            max_blocks_per_seq,
            max_seq_len,
        }
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The index of the size a decode step of `num_seqs` sequences, whose
    /// block tables are `blocks_per_seq` wide, runs as; `None`: eager.
    pub fn bucket(&self, num_seqs: usize, blocks_per_seq: usize) -> Option<usize> {
        if num_seqs == 0 || blocks_per_seq > self.max_blocks_per_seq {
            return None;
        }
        let i = self.sizes.partition_point(|&s| s < num_seqs);
        (i < self.sizes.len()).then_some(i)
    }

    pub fn graph(&self, i: usize) -> Option<&B::Graph> {
        self.graphs.get(i).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    #[test]
    fn steps_take_the_smallest_size_that_holds_them() {
        let g = DecodeGraphs::<CpuBackend>::new(vec![1, 2, 4, 8], vec![None; 4], 16, 256);
        assert_eq!(g.bucket(1, 1), Some(0));
        assert_eq!(g.bucket(3, 16), Some(2));
        assert_eq!(g.bucket(8, 2), Some(3));
        assert_eq!(g.bucket(9, 2), None);
        assert_eq!(g.bucket(0, 2), None);
        assert_eq!(g.bucket(2, 17), None, "wider block tables than recorded");
        assert!(g.graph(0).is_none());
    }
}
