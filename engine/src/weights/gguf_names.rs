//! GGUF tensor names <-> HF transformers names, and the undoing of the Q/K
//! row permutation that llama.cpp's `convert_hf_to_gguf.py` applies to llama
//! models.
//!
//! The converter's `LlamaModel.permute` reorders the rows of q_proj / k_proj
//! (weights and biases) so that llama.cpp's rotary embedding, which rotates
//! adjacent pairs (x[2i], x[2i+1]), gives the result HF's `rotate_half` gives
//! on pairs (x[i], x[i + head_dim/2]):
//! `w.reshape(n_head, 2, head_dim/2, ...).swapaxes(1, 2)`: HF row
//! (head h, half s, index i) becomes GGUF row (h, i, s). `unpermute_rows`
//! undoes it, so Pagoda's model always sees HF layout and uses rotate_half.
//! Qwen2/Qwen3 are converted without the permutation.

/// Per-layer tensor stems: (GGUF, HF), under `blk.N.` / `model.layers.N.`.
const LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    // Mixture of experts: the router, experts stacked in 3D (`[E, out, in]`
    // in HF order; Mixtral's `block_sparse_moe.gate` is read as `mlp.gate`),
    // and Qwen2-MoE's shared expert with its gate.
    ("ffn_gate_inp", "mlp.gate"),
    ("ffn_gate_exps", "mlp.experts.gate_proj"),
    ("ffn_up_exps", "mlp.experts.up_proj"),
    ("ffn_down_exps", "mlp.experts.down_proj"),
    ("ffn_gate_shexp", "mlp.shared_expert.gate_proj"),
    ("ffn_up_shexp", "mlp.shared_expert.up_proj"),
    ("ffn_down_shexp", "mlp.shared_expert.down_proj"),
    ("ffn_gate_inp_shexp", "mlp.shared_expert_gate"),
];

/// Gemma 2/3's four norms per layer, which llama.cpp names differently:
/// HF `post_attention_layernorm` is the attention *output* norm there (not
/// the pre-MLP norm it is for llama), `pre_feedforward_layernorm` is
/// `ffn_norm`. Looked up before `LAYER_NAMES` for Gemma files.
const GEMMA_LAYER_NAMES: &[(&str, &str)] = &[
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];

/// Phi-3's fused projections, stored fused by llama.cpp's converter too:
/// `attn_qkv` (q, k, v rows) and `ffn_up` holding gate and up (gate rows
/// first), which llama.cpp splits in half at run time. Looked up before
/// `LAYER_NAMES` for Phi-3 files (where `ffn_up` is not Llama's up_proj).
const PHI3_LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_qkv", "self_attn.qkv_proj"),
    ("ffn_up", "mlp.gate_up_proj"),
];

/// Which layer names a file uses besides `LAYER_NAMES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameTable {
    /// Llama, Qwen and the mixtures of experts.
    #[default]
    Llama,
    /// Gemma 2/3: four norms per layer (`GEMMA_LAYER_NAMES`).
    Gemma,
    /// Phi-3: fused `attn_qkv` and gate+up `ffn_up` (`PHI3_LAYER_NAMES`).
    Phi3,
}

impl NameTable {
    /// The table a model with this config is stored under.
    pub fn of(config: &crate::config::ModelConfig) -> Self {
        if config.variant.gemma_norms {
            NameTable::Gemma
        } else if config.variant.fused_projections {
            NameTable::Phi3
        } else {
            NameTable::Llama
        }
    }

    fn extra(self) -> &'static [(&'static str, &'static str)] {
        match self {
            NameTable::Llama => &[],
            NameTable::Gemma => GEMMA_LAYER_NAMES,
            NameTable::Phi3 => PHI3_LAYER_NAMES,
        }
    }
}

/// Whole-model tensor stems: (GGUF, HF).
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

fn split_suffix(name: &str) -> Option<(&str, &str)> {
    ["weight", "bias"]
        .into_iter()
        .find_map(|s| Some((name.strip_suffix(s)?.strip_suffix('.')?, s)))
}

/// `model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`.
pub fn hf_to_gguf_name(hf: &str) -> Option<String> {
    hf_to_gguf_name_for(hf, NameTable::Llama)
}

/// `blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`.
pub fn gguf_to_hf_name(gguf: &str) -> Option<String> {
    gguf_to_hf_name_for(gguf, NameTable::Llama)
}

/// The layer table for a file: its own names first.
fn layer_names(table: NameTable) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    table.extra().iter().chain(LAYER_NAMES)
}

/// Whether `hf` is a norm weight llama.cpp's converter stored as `1 + w`
/// in a Gemma file (every `*norm.weight`, q/k norms included).
pub fn is_gemma_norm(hf: &str) -> bool {
    hf.ends_with("norm.weight")
}

/// `hf_to_gguf_name` under `table`'s names.
pub fn hf_to_gguf_name_for(hf: &str, table: NameTable) -> Option<String> {
    let (stem, suffix) = split_suffix(hf)?;
    if let Some(&(g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == stem) {
        return Some(format!("{g}.{suffix}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let &(g, _) = layer_names(table).find(|(_, h)| *h == part)?;
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// `gguf_to_hf_name` under `table`'s names.
pub fn gguf_to_hf_name_for(gguf: &str, table: NameTable) -> Option<String> {
    let (stem, suffix) = split_suffix(gguf)?;
    if let Some(&(_, h)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{h}.{suffix}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let &(_, h) = layer_names(table).find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{h}.{suffix}"))
}

/// For a llama-arch GGUF: the number of heads whose rows were permuted in
/// this HF tensor (q_proj: attention heads, k_proj: kv heads), else None.
pub fn permuted_heads(hf: &str, n_head: usize, n_kv_head: usize) -> Option<usize> {
    let stem = split_suffix(hf)?.0;
    if stem.ends_with(".self_attn.q_proj") {
        Some(n_head)
    } else if stem.ends_with(".self_attn.k_proj") {
        Some(n_kv_head)
    } else {
        None
    }
}

/// Undoes `LlamaModel.permute` on a row-major tensor of `rows` rows of `cols`
/// values (cols = 1 for a bias): GGUF row (h, i, s) goes back to HF row
/// (h, s, i), for head h, i < head_dim/2, s in {0, 1}. None when the rows
/// do not split into `n_head` heads of even size.
pub fn unpermute_rows<T: Copy>(data: &[T], rows: usize, n_head: usize) -> Option<Vec<T>> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || !data.len().is_multiple_of(rows.max(1)) {
        return None;
    }
    let cols = data.len() / rows;
    let half = rows / n_head / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_head {
        for s in 0..2 {
            for i in 0..half {
                let src = h * 2 * half + i * 2 + s;
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let pairs = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.0.attn_q.weight",
                "model.layers.0.self_attn.q_proj.weight",
            ),
            (
                "blk.12.attn_k.bias",
                "model.layers.12.self_attn.k_proj.bias",
            ),
            (
                "blk.3.attn_output.weight",
                "model.layers.3.self_attn.o_proj.weight",
            ),
            (
                "blk.3.attn_q_norm.weight",
                "model.layers.3.self_attn.q_norm.weight",
            ),
            (
                "blk.3.attn_k_norm.weight",
                "model.layers.3.self_attn.k_norm.weight",
            ),
            (
                "blk.29.attn_norm.weight",
                "model.layers.29.input_layernorm.weight",
            ),
            (
                "blk.29.ffn_norm.weight",
                "model.layers.29.post_attention_layernorm.weight",
            ),
            (
                "blk.1.ffn_gate.weight",
                "model.layers.1.mlp.gate_proj.weight",
            ),
            ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
            (
                "blk.1.ffn_down.weight",
                "model.layers.1.mlp.down_proj.weight",
            ),
        ];
        for (g, h) in pairs {
            assert_eq!(gguf_to_hf_name(g).as_deref(), Some(h));
            assert_eq!(hf_to_gguf_name(h).as_deref(), Some(g));
        }
        for bad in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.1.attn_q",
            "output",
        ] {
            assert_eq!(gguf_to_hf_name(bad), None, "{bad}");
        }
        assert_eq!(
            hf_to_gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
    }

    #[test]
    fn gemma_norm_names() {
        for (g, h) in [
            (
                "blk.2.post_attention_norm.weight",
                "model.layers.2.post_attention_layernorm.weight",
            ),
            (
                "blk.2.ffn_norm.weight",
                "model.layers.2.pre_feedforward_layernorm.weight",
            ),
            (
                "blk.2.post_ffw_norm.weight",
                "model.layers.2.post_feedforward_layernorm.weight",
            ),
            (
                "blk.0.attn_norm.weight",
                "model.layers.0.input_layernorm.weight",
            ),
            ("output_norm.weight", "model.norm.weight"),
        ] {
            assert_eq!(gguf_to_hf_name_for(g, NameTable::Gemma).as_deref(), Some(h));
            assert_eq!(hf_to_gguf_name_for(h, NameTable::Gemma).as_deref(), Some(g));
            assert!(is_gemma_norm(h));
        }
        // Llama's post_attention_layernorm is still ffn_norm.
        assert_eq!(
            hf_to_gguf_name("model.layers.2.post_attention_layernorm.weight").as_deref(),
            Some("blk.2.ffn_norm.weight")
        );
        assert!(!is_gemma_norm("model.layers.0.self_attn.q_proj.weight"));
    }

    #[test]
    fn phi3_fused_names() {
        let phi3 = NameTable::Phi3;
        for (g, h) in [
            (
                "blk.1.attn_qkv.weight",
                "model.layers.1.self_attn.qkv_proj.weight",
            ),
            (
                "blk.1.ffn_up.weight",
                "model.layers.1.mlp.gate_up_proj.weight",
            ),
            (
                "blk.1.ffn_down.weight",
                "model.layers.1.mlp.down_proj.weight",
            ),
            (
                "blk.1.ffn_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
            ),
        ] {
            assert_eq!(gguf_to_hf_name_for(g, phi3).as_deref(), Some(h));
            assert_eq!(hf_to_gguf_name_for(h, phi3).as_deref(), Some(g));
        }
        // Elsewhere ffn_up is Llama's up_proj, and there is no fused qkv.
        assert_eq!(
            gguf_to_hf_name("blk.1.ffn_up.weight").as_deref(),
            Some("model.layers.1.mlp.up_proj.weight")
        );
        assert_eq!(gguf_to_hf_name("blk.1.attn_qkv.weight"), None);
    }

    /// llama.cpp's permute, written from its definition, for the round trip.
    fn permute<T: Copy>(data: &[T], rows: usize, n_head: usize) -> Vec<T> {
        let cols = data.len() / rows;
        let half = rows / n_head / 2;
        let mut out = vec![data[0]; data.len()];
        for h in 0..n_head {
            for s in 0..2 {
                for i in 0..half {
                    let hf_row = h * 2 * half + s * half + i;
                    let gguf_row = h * 2 * half + i * 2 + s;
                    out[gguf_row * cols..(gguf_row + 1) * cols]
                        .copy_from_slice(&data[hf_row * cols..(hf_row + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_permute() {
        let (n_head, head_dim, cols) = (3, 8, 5);
        let rows = n_head * head_dim;
        let w: Vec<u32> = (0..(rows * cols) as u32).collect();
        let p = permute(&w, rows, n_head);
        assert_ne!(p, w);
        assert_eq!(unpermute_rows(&p, rows, n_head).unwrap(), w);
        let bias: Vec<u32> = (0..rows as u32).collect();
        assert_eq!(
            unpermute_rows(&permute(&bias, rows, n_head), rows, n_head).unwrap(),
            bias
        );
        assert!(unpermute_rows(&w, rows, 5).is_none());
    }

    /// The reason for the permutation: interleaved-pair rotation of GGUF rows
    /// equals rotate_half of the un-permuted (HF) rows.
    #[test]
    fn unpermuted_rows_make_rotate_half_match_llama_cpp_rope() {
        let head_dim = 8;
        let half = head_dim / 2;
        let q_hf: Vec<f64> = (0..head_dim).map(|i| (i as f64 * 0.37).sin()).collect();
        let q_gguf = permute(&q_hf, head_dim, 1);
        let pos = 3.0;
        let theta = |i: usize| pos * 10000f64.powf(-2.0 * i as f64 / head_dim as f64);
        let mut neox = vec![0.0; head_dim];
        let mut interleaved = vec![0.0; head_dim];
        for i in 0..half {
            let (c, s) = (theta(i).cos(), theta(i).sin());
            neox[i] = q_hf[i] * c - q_hf[i + half] * s;
            neox[i + half] = q_hf[i + half] * c + q_hf[i] * s;
            interleaved[2 * i] = q_gguf[2 * i] * c - q_gguf[2 * i + 1] * s;
            interleaved[2 * i + 1] = q_gguf[2 * i + 1] * c + q_gguf[2 * i] * s;
        }
        assert_eq!(unpermute_rows(&interleaved, head_dim, 1).unwrap(), neox);
        assert_eq!(
            permuted_heads("model.layers.0.self_attn.k_proj.bias", 9, 3),
            Some(3)
        );
        assert_eq!(
            permuted_heads("model.layers.0.self_attn.q_proj.weight", 9, 3),
            Some(9)
        );
        assert_eq!(
            permuted_heads("model.layers.0.self_attn.v_proj.weight", 9, 3),
            None
        );
    }
}
