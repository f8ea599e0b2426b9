//! `WeightSource` over a GGUF file: HF names in, HF-layout tensors out.
//! Every tensor keeps its format: F32/F16/BF16 as values, block types as
//! their blocks (copied once out of the map). For llama-arch files the Q/K row permutation is undone (see
//! `gguf_names`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::gguf::{GgmlType, GgufFile};
use super::gguf_names::{
    gguf_to_hf_name_for, hf_to_gguf_name_for, is_gemma_norm, permuted_heads, unpermute_rows,
    NameTable,
};
use super::{check_shape, HostTensor, LoadError, TensorData, WeightSource};
use crate::config::ModelConfig;

pub struct GgufWeights {
    file: Arc<GgufFile>,
    /// (attention heads, kv heads) when Q/K rows must be un-permuted.
    unpermute: Option<(usize, usize)>,
    /// The file's layer names. Gemma files also store norms as `1 + w`
    /// (llama.cpp's converter adds 1), given back as `w`.
    names: NameTable,
}

impl GgufWeights {
    pub fn new(file: Arc<GgufFile>, config: &ModelConfig) -> Self {
        let unpermute = (file.architecture() == Some("llama"))
            .then_some((config.num_attention_heads, config.num_key_value_heads));
        GgufWeights {
            file,
            unpermute,
            names: NameTable::of(config),
        }
    }

    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }
}

fn le_u16s(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

impl WeightSource for GgufWeights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor, LoadError> {
        let path = self.file.path();
        let missing = |tensor: String| LoadError::MissingTensor {
            path: path.to_path_buf(),
            tensor,
        };
        let gguf_name = hf_to_gguf_name_for(name, self.names)
            .ok_or_else(|| missing(format!("{name} (no GGUF name for it)")))?;
        let label = format!("{name} (GGUF {gguf_name})");
        let info = self
            .file
            .tensor_info(&gguf_name)
            .ok_or_else(|| missing(label.clone()))?;
        // llama.cpp stores Qwen2-MoE's `[1, hidden]` shared-expert gate as
        // `[hidden]`: a shape equal but for leading 1s is the same tensor.
        let found = info.shape();
        let squeeze =
            |s: &[usize]| -> Vec<usize> { s.iter().copied().skip_while(|&d| d == 1).collect() };
        if squeeze(&found) != squeeze(shape) {
            check_shape(path, &label, shape, &found)?;
        }

        let bytes = self.file.tensor_bytes(info)?;
        let data = match info.ggml_type {
            GgmlType::F16 => TensorData::F16(le_u16s(bytes).map(half::f16::from_bits).collect()),
            GgmlType::BF16 => TensorData::BF16(le_u16s(bytes).map(half::bf16::from_bits).collect()),
            other => match other.quant_type() {
                // Rows must be whole blocks (always so for linear weights);
                // anything else is dequantized to f32.
                // (3D: llama.cpp's stacked experts, `[E, rows, cols]`.)
                Some(ty)
                    if (shape.len() == 2 || shape.len() == 3)
                        && shape[shape.len() - 1].is_multiple_of(ty.block_size()) =>
                {
                    TensorData::Quant {
                        ty,
                        bytes: bytes.to_vec(),
                    }
                }
                _ => TensorData::F32(self.file.dequantize(info)?),
            },
        };

        let data = match self
            .unpermute
            .and_then(|(nh, nkv)| permuted_heads(name, nh, nkv))
        {
            None => data,
            Some(heads) => {
                let rows = shape[0];
                let bad = || {
                    LoadError::config(
                        path,
                        format!("tensor {label}: {rows} rows do not split into {heads} heads"),
                    )
                };
                match data {
                    TensorData::F32(v) => {
                        TensorData::F32(unpermute_rows(&v, rows, heads).ok_or_else(bad)?)
                    }
                    TensorData::F16(v) => {
                        TensorData::F16(unpermute_rows(&v, rows, heads).ok_or_else(bad)?)
                    }
                    TensorData::BF16(v) => {
                        TensorData::BF16(unpermute_rows(&v, rows, heads).ok_or_else(bad)?)
                    }
                    // Rows of whole blocks move as byte rows.
                    TensorData::Quant { ty, bytes } => TensorData::Quant {
                        ty,
                        bytes: unpermute_rows(&bytes, rows, heads).ok_or_else(bad)?,
                    },
                }
            }
        };
        let tensor = HostTensor {
            shape: shape.to_vec(),
            data,
        };
        if !(self.names == NameTable::Gemma && is_gemma_norm(name)) {
            return Ok(tensor);
        }
        let w = tensor.to_f32().into_iter().map(|v| v - 1.0).collect();
        Ok(HostTensor {
            shape: shape.to_vec(),
            data: TensorData::F32(w),
        })
    }

    fn contains(&self, name: &str) -> bool {
        hf_to_gguf_name_for(name, self.names).is_some_and(|g| self.file.tensor_info(&g).is_some())
    }

    fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .file
            .tensor_infos()
            .iter()
            .filter_map(|t| gguf_to_hf_name_for(&t.name, self.names))
            .collect();
        names.sort();
        names
    }

    fn describe(&self) -> String {
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        for t in self.file.tensor_infos() {
            *types.entry(t.ggml_type.name()).or_default() += 1;
        }
        let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} x{n}")).collect();
        format!(
            "GGUF v{} {} ({} tensors: {})",
            self.file.version(),
            self.file.path().display(),
            self.file.tensor_infos().len(),
            types.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::gguf::GgufValue;
    use super::super::gguf_writer::encode;
    use super::*;

    fn meta(arch: &str) -> Vec<(String, GgufValue)> {
        use GgufValue::*;
        let k = |s: &str| format!("{arch}.{s}");
        vec![
            ("general.architecture".into(), String(arch.into())),
            (k("block_count"), U32(1)),
            (k("context_length"), U32(128)),
            (k("embedding_length"), U32(8)),
            (k("feed_forward_length"), U32(16)),
            (k("attention.head_count"), U32(2)),
            (k("attention.head_count_kv"), U32(1)),
            (k("vocab_size"), U32(32)),
        ]
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn open(arch: &str, name: &str) -> (GgufWeights, Vec<f32>) {
        let m = meta(arch);
        let refs: Vec<(&str, GgufValue)> = m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        // q_proj: [8 out, 8 in]; k_proj: [4 out, 8 in] (1 kv head of dim 4).
        let q: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let k: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let f16s: Vec<u8> = (0..32)
            .flat_map(|i| half::f16::from_f32(i as f32).to_bits().to_le_bytes())
            .collect();
        let tensors = vec![
            (
                "blk.0.attn_q.weight".to_string(),
                vec![8u64, 8],
                0u32,
                f32_bytes(&q),
            ),
            ("blk.0.attn_k.weight".to_string(), vec![8u64, 4], 1u32, f16s),
            (
                "blk.0.attn_v.weight".to_string(),
                vec![8u64, 4],
                0u32,
                f32_bytes(&k),
            ),
        ];
        let dir = std::env::temp_dir().join(format!("pagoda-gguf-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, encode(3, &refs, &tensors)).unwrap();
        let file = Arc::new(GgufFile::open(&p).unwrap());
        let config = ModelConfig::from_gguf(&file).unwrap();
        (GgufWeights::new(file, &config), q)
    }

    #[test]
    fn llama_q_and_k_are_unpermuted_other_tensors_not() {
        let (w, q) = open("llama", "llama.gguf");
        let got = w
            .get("model.layers.0.self_attn.q_proj.weight", &[8, 8])
            .unwrap()
            .to_f32();
        // 2 heads of dim 4: GGUF rows (h, i, s) -> HF rows (h, s, i).
        let order = [0, 2, 1, 3, 4, 6, 5, 7];
        let want: Vec<f32> = order
            .iter()
            .flat_map(|&r| q[r * 8..r * 8 + 8].to_vec())
            .collect();
        assert_eq!(got, want);
        let k = w
            .get("model.layers.0.self_attn.k_proj.weight", &[4, 8])
            .unwrap();
        assert!(matches!(k.data, TensorData::F16(_)));
        let k = k.to_f32();
        assert_eq!(
            &k[8..16],
            &(16..24).map(|i| i as f32).collect::<Vec<_>>()[..]
        );
        let v = w
            .get("model.layers.0.self_attn.v_proj.weight", &[4, 8])
            .unwrap()
            .to_f32();
        assert_eq!(v, (0..32).map(|i| i as f32).collect::<Vec<_>>());
        assert!(w.contains("model.layers.0.self_attn.q_proj.weight"));
        assert!(!w.contains("lm_head.weight"));
        assert_eq!(w.tensor_names().len(), 3);
        assert!(w.describe().contains("F16 x1, F32 x2"), "{}", w.describe());
    }

    /// A Qwen2-MoE GGUF: MoE metadata read, layer 0 sparse (it has a
    /// router) and layer 1 dense, Q8_0 experts kept as blocks in 3D, the
    /// 1D `ffn_gate_inp_shexp` read as HF's `[1, hidden]`.
    #[test]
    fn qwen2moe_experts_stay_blocks_and_layers_follow_their_router() {
        use GgufValue::*;
        let mut m = meta("qwen2moe");
        m.extend([
            ("qwen2moe.block_count".to_string(), U32(2)),
            ("qwen2moe.embedding_length".to_string(), U32(32)),
            ("qwen2moe.expert_count".to_string(), U32(4)),
            ("qwen2moe.expert_used_count".to_string(), U32(2)),
            ("qwen2moe.expert_feed_forward_length".to_string(), U32(8)),
            (
                "qwen2moe.expert_shared_feed_forward_length".to_string(),
                U32(16),
            ),
        ]);
        // Later entries win in the file's index: drop the base ones replaced above.
        let replaced = ["qwen2moe.block_count", "qwen2moe.embedding_length"];
        let mut seen = std::collections::HashSet::new();
        m.reverse();
        m.retain(|(k, _)| !replaced.contains(&k.as_str()) || seen.insert(k.clone()));
        m.reverse();
        let refs: Vec<(&str, GgufValue)> = m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        // 4 experts x 8 rows of one Q8_0 block (32 values): scale 1/4, quants e*8+r.
        let mut q8 = Vec::new();
        for e in 0..4u8 {
            for r in 0..8u8 {
                q8.extend(half::f16::from_f32(0.25).to_bits().to_le_bytes());
                q8.extend(std::iter::repeat_n(e * 8 + r, 32));
            }
        }
        let tensors = vec![
            (
                "blk.0.ffn_gate_inp.weight".to_string(),
                vec![32u64, 4],
                0u32,
                f32_bytes(&[0.5; 128]),
            ),
            (
                "blk.0.ffn_gate_exps.weight".to_string(),
                vec![32u64, 8, 4],
                8u32,
                q8,
            ),
            (
                "blk.0.ffn_gate_inp_shexp.weight".to_string(),
                vec![32u64],
                0u32,
                f32_bytes(&[1.5; 32]),
            ),
        ];
        let dir = std::env::temp_dir().join(format!("pagoda-gguf-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("qwen2moe.gguf");
        std::fs::write(&p, encode(3, &refs, &tensors)).unwrap();
        let file = Arc::new(GgufFile::open(&p).unwrap());
        let config = ModelConfig::from_gguf(&file).unwrap();
        assert_eq!(config.architecture, crate::config::Architecture::Qwen2Moe);
        let moe = config.moe.clone().unwrap();
        assert_eq!(
            (moe.num_experts, moe.top_k, moe.expert_intermediate_size),
            (4, 2, 8)
        );
        assert_eq!(moe.shared_expert_intermediate_size, Some(16));
        assert!(!moe.renormalize, "qwen2moe does not renormalize by default");
        assert_eq!(moe.sparse_layers, vec![true, false]);
        assert!(config.attention_bias);
        let w = GgufWeights::new(file, &config);
        let gate = w
            .get("model.layers.0.mlp.experts.gate_proj.weight", &[4, 8, 32])
            .unwrap();
        assert!(
            matches!(gate.data, TensorData::Quant { .. }),
            "{:?}",
            gate.shape
        );
        let values = gate.to_f32();
        // Expert 2, row 3: quant 19 x 0.25.
        assert_eq!(values[(2 * 8 + 3) * 32], 19.0 * 0.25);
        let sg = w
            .get("model.layers.0.mlp.shared_expert_gate.weight", &[1, 32])
            .unwrap();
        assert_eq!(sg.shape, vec![1, 32]);
        assert!(w
            .get("model.layers.0.mlp.shared_expert_gate.weight", &[2, 16])
            .is_err());
    }

    #[test]
    fn qwen2_is_not_unpermuted() {
        let (w, q) = open("qwen2", "qwen2.gguf");
        let got = w
            .get("model.layers.0.self_attn.q_proj.weight", &[8, 8])
            .unwrap()
            .to_f32();
        assert_eq!(got, q);
    }

    #[test]
    fn missing_and_mismatched_tensors_name_file_and_tensor() {
        let (w, _) = open("llama", "errors.gguf");
        let msg = w
            .get("model.layers.0.self_attn.q_proj.weight", &[8, 9])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("errors.gguf")
                && msg.contains("q_proj")
                && msg.contains("[8, 9]")
                && msg.contains("[8, 8]"),
            "{msg}"
        );
        let msg = w
            .get("model.layers.0.mlp.up_proj.weight", &[16, 8])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("blk.0.ffn_up.weight") && msg.contains("not found"),
            "{msg}"
        );
        let msg = w
            .get("model.rotary.inv_freq", &[4])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no GGUF name"), "{msg}");
    }
}
