//! How the layers share the paged KV cache: vLLM's KV-cache groups
//! (`kv_cache_utils.get_kv_cache_groups` with uniform page size).
//!
//! Layers are grouped by attention type (full, or one window size). Every
//! group has the same number of layers, `group_size` (the smallest type's
//! count; a type's last group may be short), and the cache holds
//! `group_size` K and V tensors: layer `j` of every group uses tensor `j`.
//! A block id belongs to one group at a time (the scheduler's pool hands it
//! out per group), so a block is `group_size` layers' KV of one group, and
//! a windowed group's blocks go back to the pool as its window moves on
//! while the full group keeps its own. A plain model is one full group of
//! every layer: the layout Pagoda always had.

use crate::config::ModelConfig;
use pagoda_scheduler::KvCacheSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCacheLayout {
    /// One spec per KV-cache group, full attention first.
    pub specs: Vec<KvCacheSpec>,
    /// Per layer: (its group, its tensor).
    pub layers: Vec<(usize, usize)>,
    /// K and V tensors of the cache (the layers of one group at most).
    pub group_size: usize,
}

impl KvCacheLayout {
    /// One full-attention group of `num_layers` layers.
    pub fn full(num_layers: usize) -> Self {
        Self {
            specs: vec![KvCacheSpec::FullAttention],
            layers: (0..num_layers).map(|i| (0, i)).collect(),
            group_size: num_layers.max(1),
        }
    }

    /// The model's groups. A window no sequence outgrows (`>= max_model_len`)
    /// frees nothing, so its layers count as full attention.
    pub fn new(config: &ModelConfig, max_model_len: usize) -> Self {
        let num_layers = config.num_hidden_layers;
        let spec_of = |i: usize| match config.layer_window(i) {
            Some(window) if window < max_model_len => KvCacheSpec::SlidingWindow { window },
            _ => KvCacheSpec::FullAttention,
        };
        // Layers of each type, full attention first (KV-cache events
        // describe group 0: the prefix a router can route on).
        let mut types: Vec<(KvCacheSpec, Vec<usize>)> = Vec::new();
        for i in 0..num_layers {
            let spec = spec_of(i);
            match types.iter_mut().find(|(s, _)| *s == spec) {
                Some((_, layers)) => layers.push(i),
                None => types.push((spec, vec![i])),
            }
        }
        types.sort_by_key(|(s, _)| *s != KvCacheSpec::FullAttention);
        if types.len() <= 1 {
            let mut layout = Self::full(num_layers);
            layout.specs = vec![types.first().map_or(KvCacheSpec::FullAttention, |t| t.0)];
            return layout;
        }
        let group_size = types.iter().map(|(_, l)| l.len()).min().unwrap_or(1);
        let mut specs = Vec::new();
        let mut layers = vec![(0, 0); num_layers];
        for (spec, type_layers) in &types {
            for chunk in type_layers.chunks(group_size) {
                for (tensor, &layer) in chunk.iter().enumerate() {
                    layers[layer] = (specs.len(), tensor);
                }
                specs.push(*spec);
            }
        }
        Self {
            specs,
            layers,
            group_size,
        }
    }

    /// Whether this is one full-attention group (what the CUDA backend runs).
    pub fn is_single_full_group(&self) -> bool {
        self.specs == [KvCacheSpec::FullAttention]
    }

    pub fn num_groups(&self) -> usize {
        self.specs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ModelConfig {
        ModelConfig::from_hf_json_str(json).unwrap()
    }

    const DIMS: &str = r#""hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 4, "head_dim": 16, "vocab_size": 100"#;

    #[test]
    fn plain_and_all_windowed_models_are_one_group() {
        let llama = config(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 3, {DIMS}}}"#
        ));
        let layout = KvCacheLayout::new(&llama, 4096);
        assert_eq!(layout, KvCacheLayout::full(3));
        assert!(layout.is_single_full_group());

        let mistral = config(&format!(
            r#"{{"architectures": ["MistralForCausalLM"], "num_hidden_layers": 3,
                "sliding_window": 32, {DIMS}}}"#
        ));
        let layout = KvCacheLayout::new(&mistral, 4096);
        assert_eq!(
            layout.specs,
            vec![KvCacheSpec::SlidingWindow { window: 32 }]
        );
        assert_eq!(layout.layers, vec![(0, 0), (0, 1), (0, 2)]);
        // A window no sequence outgrows is full attention.
        assert!(KvCacheLayout::new(&mistral, 32).is_single_full_group());
    }

    #[test]
    fn gemma_layers_split_into_equal_groups() {
        // Gemma 2: even layers windowed, odd layers global.
        let gemma2 = config(&format!(
            r#"{{"architectures": ["Gemma2ForCausalLM"], "num_hidden_layers": 4,
                "sliding_window": 16, {DIMS}}}"#
        ));
        let layout = KvCacheLayout::new(&gemma2, 4096);
        assert_eq!(
            layout.specs,
            vec![
                KvCacheSpec::FullAttention,
                KvCacheSpec::SlidingWindow { window: 16 }
            ]
        );
        assert_eq!(layout.group_size, 2);
        assert_eq!(layout.layers, vec![(1, 0), (0, 0), (1, 1), (0, 1)]);

        // Gemma 3's 5 local : 1 global over 7 layers: global layer 5 alone,
        // the 6 local layers in 6 groups of one.
        let gemma3 = config(&format!(
            r#"{{"architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 7,
                "sliding_window": 16, "sliding_window_pattern": 6, {DIMS}}}"#
        ));
        let layout = KvCacheLayout::new(&gemma3, 4096);
        assert_eq!(layout.group_size, 1);
        assert_eq!(layout.num_groups(), 7);
        assert_eq!(layout.layers[5], (0, 0));
        assert_eq!(layout.specs[0], KvCacheSpec::FullAttention);
        assert!(layout.specs[1..]
            .iter()
            .all(|s| *s == KvCacheSpec::SlidingWindow { window: 16 }));
    }
}
