//! Writes an HF mixture-of-experts fixture as a GGUF file the way
//! llama.cpp's `convert_hf_to_gguf.py` lays it out (experts stacked into
//! `ffn_{gate,up,down}_exps`, the router as `ffn_gate_inp`, Qwen2-MoE's
//! shared expert as `ffn_*_shexp` with a 1D `ffn_gate_inp_shexp`, Mixtral as
//! arch `llama` with `expert_count` and Q/K rows permuted), through the
//! engine's GGUF writer. Weights keep their stored type (F32 or BF16), so
//! the GGUF must give HF's tokens exactly as the folder does.

mod gemma;
mod phi3;
pub use gemma::convert_gemma_fixture;
pub use phi3::convert_phi3_fixture;

use std::collections::BTreeMap;
use std::path::Path;

use pagoda_engine::config::{Architecture, ModelConfig};
use pagoda_engine::weights::gguf::GgufFile;
use pagoda_engine::weights::gguf_names::hf_to_gguf_name;
use pagoda_engine::weights::gguf_writer::{encode, RawTensor};
use pagoda_engine::weights::{GgufValue, SafetensorsWeights, TensorData, WeightSource};

/// (ggml type id, little-endian bytes) of a tensor in its stored type.
fn raw(data: TensorData) -> (u32, Vec<u8>) {
    match data {
        TensorData::F32(v) => (0, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::F16(v) => (
            1,
            v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        ),
        TensorData::BF16(v) => (
            30,
            v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        ),
        TensorData::Quant { .. } => panic!("fixtures are not quantized"),
    }
}

/// The keys every converter writes: architecture, sizes, norm epsilon,
/// vocabulary size and the special tokens.
fn common_meta(arch: &str, config: &ModelConfig) -> Vec<(String, GgufValue)> {
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut meta = vec![
        (
            "general.architecture".into(),
            GgufValue::String(arch.into()),
        ),
        (k("block_count"), u(config.num_hidden_layers)),
        (k("context_length"), u(config.max_position_embeddings)),
        (k("embedding_length"), u(config.hidden_size)),
        (k("feed_forward_length"), u(config.intermediate_size)),
        (k("attention.head_count"), u(config.num_attention_heads)),
        (k("attention.head_count_kv"), u(config.num_key_value_heads)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(config.rms_norm_eps),
        ),
        (k("vocab_size"), u(config.vocab_size)),
    ];
    if let Some(bos) = config.bos_token_id {
        meta.push(("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(bos)));
    }
    if let Some(&eos) = config.eos_token_ids.first() {
        meta.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(eos)));
    }
    meta
}

/// Writes `meta` and `tensors` as a GGUF v3 file.
fn write_gguf(out: &Path, meta: &[(String, GgufValue)], tensors: &[RawTensor]) {
    let refs: Vec<(&str, GgufValue)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    std::fs::write(out, encode(3, &refs, tensors)).unwrap();
}

/// Rewrites the GGUF file `single` as `n` shards in `dir`, as llama.cpp's
/// `gguf-split --split-max-tensors` lays them out: `{stem}-0000k-of-0000n.gguf`,
/// the model's metadata in the first, `split.no` / `split.count` /
/// `split.tensors.count` in each, the tensors dealt out in file order.
/// Returns the first shard's path.
pub fn split_gguf(single: &Path, dir: &Path, n: usize) -> std::path::PathBuf {
    let file = GgufFile::open(single).unwrap();
    let infos = file.tensor_infos();
    let per = infos.len().div_ceil(n);
    let stem = single.file_stem().unwrap().to_string_lossy();
    let mut first = None;
    for (i, chunk) in infos.chunks(per).enumerate() {
        let mut meta: Vec<(String, GgufValue)> = if i == 0 {
            file.metadata_entries()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        } else {
            Vec::new()
        };
        meta.extend([
            ("split.no".to_string(), GgufValue::U16(i as u16)),
            ("split.count".to_string(), GgufValue::U16(n as u16)),
            (
                "split.tensors.count".to_string(),
                GgufValue::I32(infos.len() as i32),
            ),
        ]);
        let tensors: Vec<RawTensor> = chunk
            .iter()
            .map(|t| {
                let dims = t.dims.iter().map(|&d| d as u64).collect();
                let bytes = file.tensor_bytes(t).unwrap().to_vec();
                (t.name.clone(), dims, t.ggml_type.id(), bytes)
            })
            .collect();
        let out = dir.join(format!("{stem}-{:05}-of-{n:05}.gguf", i + 1));
        write_gguf(&out, &meta, &tensors);
        first.get_or_insert(out);
    }
    assert_eq!(
        infos.len().div_ceil(per),
        n,
        "{n} shards of {} tensors",
        infos.len()
    );
    first.unwrap()
}

/// llama.cpp's `LlamaModel.permute` of q/k rows: HF row (h, s, i) to GGUF row (h, i, s).
fn permute(bytes: &[u8], rows: usize, n_head: usize) -> Vec<u8> {
    let row_bytes = bytes.len() / rows;
    let half = rows / n_head / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..n_head {
        for s in 0..2 {
            for i in 0..half {
                let hf = h * 2 * half + s * half + i;
                let gg = h * 2 * half + i * 2 + s;
                out[gg * row_bytes..(gg + 1) * row_bytes]
                    .copy_from_slice(&bytes[hf * row_bytes..(hf + 1) * row_bytes]);
            }
        }
    }
    out
}

/// `model.layers.{i}.{block}.experts.{j}.{proj}.weight` -> (i, j, gate|up|down).
fn expert_of(name: &str) -> Option<(usize, usize, &'static str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let rest = rest.split_once(".experts.")?.1;
    let (j, proj) = rest.split_once('.')?;
    let kind = match proj {
        "w1.weight" | "gate_proj.weight" => "gate",
        "w3.weight" | "up_proj.weight" => "up",
        "w2.weight" | "down_proj.weight" => "down",
        _ => return None,
    };
    Some((layer.parse().ok()?, j.parse().ok()?, kind))
}

/// Experts of one (layer, projection) being stacked: one expert's shape,
/// the ggml type, the bytes of experts 0..E in order.
type Stacked = (Vec<usize>, u32, Vec<u8>);

/// Converts the HF folder `dir` into the GGUF file `out`.
pub fn convert_moe_fixture(dir: &Path, out: &Path) {
    let config = ModelConfig::from_hf_dir(dir).unwrap();
    let moe = config.moe.clone().expect("a MoE fixture");
    let weights = SafetensorsWeights::open_dir(dir).unwrap();
    let arch = match config.architecture {
        Architecture::Mixtral => "llama",
        Architecture::Qwen2Moe => "qwen2moe",
        Architecture::Qwen3Moe => "qwen3moe",
        other => panic!("{other:?} is not a MoE architecture"),
    };
    let mut tensors: Vec<RawTensor> = Vec::new();
    let mut stacked: BTreeMap<(usize, &str), Stacked> = BTreeMap::new();
    for (name, shape) in config.tensor_shapes() {
        let t = weights.get(&name, &shape).unwrap();
        let (ty, mut bytes) = raw(t.data);
        if let Some((layer, _, kind)) = expert_of(&name) {
            let e = stacked
                .entry((layer, kind))
                .or_insert((shape.clone(), ty, vec![]));
            e.2.extend(bytes);
            continue;
        }
        let hf = name.replace(".block_sparse_moe.gate.", ".mlp.gate.");
        let gguf = hf_to_gguf_name(&hf).unwrap_or_else(|| panic!("no GGUF name for {name}"));
        if arch == "llama" && hf.ends_with("self_attn.q_proj.weight") {
            bytes = permute(&bytes, shape[0], config.num_attention_heads);
        } else if arch == "llama" && hf.ends_with("self_attn.k_proj.weight") {
            bytes = permute(&bytes, shape[0], config.num_key_value_heads);
        }
        let mut dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        if hf.ends_with("shared_expert_gate.weight") {
            dims.truncate(1); // llama.cpp's `{n_embd}`
        }
        tensors.push((gguf, dims, ty, bytes));
    }
    for ((layer, kind), (shape, ty, bytes)) in stacked {
        let dims = vec![shape[1] as u64, shape[0] as u64, moe.num_experts as u64];
        tensors.push((
            format!("blk.{layer}.ffn_{kind}_exps.weight"),
            dims,
            ty,
            bytes,
        ));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut meta = common_meta(arch, &config);
    meta.extend([
        (k("attention.key_length"), u(config.head_dim)),
        (k("attention.value_length"), u(config.head_dim)),
        (k("rope.dimension_count"), u(config.head_dim)),
        (k("rope.freq_base"), GgufValue::F32(config.rope_theta)),
        (k("expert_count"), u(moe.num_experts)),
        (k("expert_used_count"), u(moe.top_k)),
        (k("expert_weights_norm"), GgufValue::Bool(moe.renormalize)),
    ]);
    if arch != "llama" {
        meta.push((
            k("expert_feed_forward_length"),
            u(moe.expert_intermediate_size),
        ));
    }
    if let Some(s) = moe.shared_expert_intermediate_size {
        meta.push((k("expert_shared_feed_forward_length"), u(s)));
    }
    write_gguf(out, &meta, &tensors);
}
