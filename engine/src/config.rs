//! Model configuration: what the model code needs to know about a checkpoint,
//! read from an HF `config.json` (+ `generation_config.json`) or from GGUF
//! metadata (`ModelConfig::from_gguf`, in `weights/gguf_config.rs`).
//!
//! Defaults follow the HF transformers config classes of each architecture, so
//! that a config.json that omits a key means what it means to transformers.

use std::path::Path;

use serde_json::{Map, Value};

pub use pagoda_kernels::cpu::RopeScaling;

use crate::weights::error::LoadError;
use Architecture::{
    Gemma2, Gemma3, Llama, Mistral, Mixtral, Phi3, Qwen2, Qwen2Moe, Qwen3, Qwen3Moe,
};

mod long_rope;
mod moe;
mod variant;
pub(crate) use long_rope::default_attention_factor;
pub use long_rope::LongRope;
pub use moe::{ExpertNames, MoeConfig};
pub use variant::{DecoderVariant, HiddenAct};

/// The model families Pagoda runs; they share one forward pass and differ in
/// biases, q/k norms and defaults (Gemma: see [`DecoderVariant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma2,
    /// Gemma 3's text model (`Gemma3ForCausalLM`).
    Gemma3,
    /// Phi-3 (fused projections in the checkpoint, LongRoPE).
    Phi3,
    /// Mixtral: Mistral's attention, every MLP a mixture of experts.
    Mixtral,
    /// Qwen2's attention; sparse layers with a gated shared expert.
    Qwen2Moe,
    /// Qwen3's attention (q/k norm); sparse layers without a shared expert.
    Qwen3Moe,
}

const SUPPORTED_ARCHITECTURES: &str = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, \
     Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, \
     MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM";

impl Architecture {
    /// From an entry of config.json's `"architectures"`.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" => Some(Self::Llama),
            "MistralForCausalLM" => Some(Self::Mistral),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            "Qwen3ForCausalLM" => Some(Self::Qwen3),
            "Gemma2ForCausalLM" => Some(Self::Gemma2),
            "Gemma3ForCausalLM" => Some(Self::Gemma3),
            "Phi3ForCausalLM" => Some(Self::Phi3),
            "MixtralForCausalLM" => Some(Self::Mixtral),
            "Qwen2MoeForCausalLM" => Some(Self::Qwen2Moe),
            "Qwen3MoeForCausalLM" => Some(Self::Qwen3Moe),
            _ => None,
        }
    }

    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Gemma2 => "Gemma2ForCausalLM",
            Self::Gemma3 => "Gemma3ForCausalLM",
            Self::Phi3 => "Phi3ForCausalLM",
            Self::Mixtral => "MixtralForCausalLM",
            Self::Qwen2Moe => "Qwen2MoeForCausalLM",
            Self::Qwen3Moe => "Qwen3MoeForCausalLM",
        }
    }
}

/// The dtype the checkpoint was saved in (`torch_dtype` / `dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// From a torch dtype name as config.json writes it ("bfloat16", "float16", ...).
    pub fn from_torch_name(name: &str) -> Option<Self> {
        match name.trim_start_matches("torch.") {
            "float32" | "float" => Some(Self::F32),
            "float16" | "half" => Some(Self::F16),
            "bfloat16" => Some(Self::BF16),
            _ => None,
        }
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections have a bias (Qwen2 always; Llama/Qwen3 `attention_bias`).
    pub attention_bias: bool,
    /// o_proj has a bias: HF Llama and Qwen3 put `attention_bias` on o_proj
    /// too; Qwen2's o_proj never has one.
    pub o_proj_bias: bool,
    /// Per-head RMSNorm on q and k before rotary (Qwen3).
    pub qk_norm: bool,
    pub dtype: DType,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The window of the layers that have one (`layer_window`).
    pub sliding_window: Option<usize>,
    /// Per-layer windows; Gemma's norms, soft-capping, activation, local
    /// rope; Phi-3's fused projections and LongRoPE.
    pub variant: DecoderVariant,
    /// Mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE); None when dense.
    pub moe: Option<MoeConfig>,
}

impl ModelConfig {
    /// Parses the text of an HF `config.json`.
    pub fn from_hf_json_str(s: &str) -> Result<Self, LoadError> {
        Self::from_hf_json_str_at(s, Path::new("config.json"))
    }

    /// Reads `dir/config.json` and merges the eos ids of `dir/generation_config.json`
    /// (when present) after the config's own.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, LoadError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| LoadError::io(&path, e))?;
        let mut config = Self::from_hf_json_str_at(&text, &path)?;

        let gen_path = dir.join("generation_config.json");
        if gen_path.is_file() {
            let text =
                std::fs::read_to_string(&gen_path).map_err(|e| LoadError::io(&gen_path, e))?;
            let value: Value = serde_json::from_str(&text).map_err(|source| LoadError::Json {
                path: gen_path.clone(),
                source,
            })?;
            let obj = value
                .as_object()
                .ok_or_else(|| LoadError::config(&gen_path, "not a JSON object"))?;
            let keys = Keys {
                obj,
                path: &gen_path,
            };
            for id in keys.token_ids("eos_token_id")? {
                if !config.eos_token_ids.contains(&id) {
                    config.eos_token_ids.push(id);
                }
            }
            if config.bos_token_id.is_none() {
                config.bos_token_id = keys.token_ids("bos_token_id")?.first().copied();
            }
        }
        Ok(config)
    }

    /// `from_hf_json_str`, with `path` named in errors.
    pub fn from_hf_json_str_at(s: &str, path: &Path) -> Result<Self, LoadError> {
        let value: Value = serde_json::from_str(s).map_err(|source| LoadError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let obj = value
            .as_object()
            .ok_or_else(|| LoadError::config(path, "not a JSON object"))?;
        parse_hf_config(Keys { obj, path })
    }

    /// Every weight the model has, with its HF name and shape ([out, in] for
    /// linear layers), in checkpoint order. `lm_head.weight` only when untied.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, hd) = (self.hidden_size, self.head_dim);
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for i in 0..self.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut push = |name: &str, shape: Vec<usize>| out.push((format!("{p}.{name}"), shape));
            push("input_layernorm.weight", vec![h]);
            if self.variant.fused_projections {
                push("self_attn.qkv_proj.weight", vec![q + 2 * kv, h]);
            } else {
                push("self_attn.q_proj.weight", vec![q, h]);
                push("self_attn.k_proj.weight", vec![kv, h]);
                push("self_attn.v_proj.weight", vec![kv, h]);
            }
            if self.attention_bias {
                push("self_attn.q_proj.bias", vec![q]);
                push("self_attn.k_proj.bias", vec![kv]);
                push("self_attn.v_proj.bias", vec![kv]);
            }
            if self.qk_norm {
                push("self_attn.q_norm.weight", vec![hd]);
                push("self_attn.k_norm.weight", vec![hd]);
            }
            push("self_attn.o_proj.weight", vec![h, q]);
            if self.o_proj_bias {
                push("self_attn.o_proj.bias", vec![h]);
            }
            push("post_attention_layernorm.weight", vec![h]);
            if self.variant.gemma_norms {
                push("pre_feedforward_layernorm.weight", vec![h]);
                push("post_feedforward_layernorm.weight", vec![h]);
            }
            match self.moe.as_ref().filter(|m| m.is_sparse(i)) {
                Some(m) => m.push_layer_shapes(self.architecture, h, &mut push),
                None if self.variant.fused_projections => {
                    push(
                        "mlp.gate_up_proj.weight",
                        vec![2 * self.intermediate_size, h],
                    );
                    push("mlp.down_proj.weight", vec![h, self.intermediate_size]);
                }
                None => {
                    push("mlp.gate_proj.weight", vec![self.intermediate_size, h]);
                    push("mlp.up_proj.weight", vec![self.intermediate_size, h]);
                    push("mlp.down_proj.weight", vec![h, self.intermediate_size]);
                }
            }
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        out
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_params(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Checks the invariants the model code relies on (head counts divide, head
    /// dim even, nothing zero). Every constructor calls it.
    pub fn validate(&self, path: &Path) -> Result<(), LoadError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(LoadError::config(path, format!("{name} must be positive")));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(LoadError::config(
                path,
                format!(
                    "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(LoadError::config(
                path,
                format!(
                    "head_dim ({}) must be even for rotary embeddings",
                    self.head_dim
                ),
            ));
        }
        let finite_positive = |v: f32| v.is_finite() && v > 0.0;
        if !finite_positive(self.rms_norm_eps) || !finite_positive(self.rope_theta) {
            return Err(LoadError::config(
                path,
                format!(
                    "rms_norm_eps ({}) and rope_theta ({}) must be positive",
                    self.rms_norm_eps, self.rope_theta
                ),
            ));
        }
        Ok(())
    }
}

fn parse_hf_config(k: Keys) -> Result<ModelConfig, LoadError> {
    let architecture = architecture_of(&k)?;
    check_supported_features(&k, architecture)?;
    let hidden_size = k.required_usize("hidden_size")?;
    let num_attention_heads = k.required_usize("num_attention_heads")?;
    let (num_key_value_heads, head_dim) =
        attention_shape(&k, architecture, hidden_size, num_attention_heads)?;
    let max_position_embeddings =
        k.usize("max_position_embeddings")?
            .unwrap_or(match architecture {
                Llama => 2048,
                Mistral | Mixtral => 4096 * 32,
                Qwen2 | Qwen3 | Qwen2Moe | Qwen3Moe => 32768,
                Gemma2 => variant::GEMMA_DEFAULTS.max_position_embeddings,
                Gemma3 => variant::GEMMA3_MAX_POSITION_EMBEDDINGS,
                Phi3 => 4096,
            });
    let partial_rotary_dim = partial_rotary_dim(&k, architecture, head_dim)?;
    let rotary_dim = partial_rotary_dim.unwrap_or(head_dim);
    let long_rope = match architecture {
        Phi3 => long_rope::long_rope(&k, max_position_embeddings, rotary_dim)?,
        _ => None,
    };
    let (rope_theta, rope_scaling) = match (architecture, &long_rope) {
        (Gemma3, _) => variant::gemma3_ropes(&k, max_position_embeddings)?.0,
        (_, Some(lr)) => (lr.theta, RopeScaling::Default),
        _ => parse_rope(&k, max_position_embeddings)?,
    };
    let attention_bias = match architecture {
        Qwen2 => true,
        Qwen2Moe => k.bool("qkv_bias")?.unwrap_or(true),
        Mistral | Mixtral | Phi3 => false,
        Llama | Qwen3 | Qwen3Moe | Gemma2 | Gemma3 => k.bool("attention_bias")?.unwrap_or(false),
    };
    let num_hidden_layers = k.required_usize("num_hidden_layers")?;
    let (sliding_window, sliding_layers) =
        variant::sliding_window_of(&k, architecture, num_hidden_layers)?;
    let mut variant = DecoderVariant {
        sliding_layers,
        fused_projections: architecture == Phi3,
        long_rope,
        partial_rotary_dim,
        ..DecoderVariant::default()
    };
    if matches!(architecture, Gemma2 | Gemma3) {
        variant::parse_gemma(&k, architecture, &mut variant, max_position_embeddings)?;
    }
    let (bos_token_id, eos_token_ids) = special_token_ids(&k, architecture)?;
    let num_hidden_layers = k.required_usize("num_hidden_layers")?;
    let intermediate_size = k.required_usize("intermediate_size")?;
    let config = ModelConfig {
        architecture,
        vocab_size: k.required_usize("vocab_size")?,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: k
            .f64("rms_norm_eps")?
            .unwrap_or(if architecture == Mixtral { 1e-5 } else { 1e-6 })
            as f32,
        rope_theta,
        rope_scaling,
        max_position_embeddings,
        tie_word_embeddings: k
            .bool("tie_word_embeddings")?
            .unwrap_or(matches!(architecture, Gemma2 | Gemma3)),
        attention_bias,
        o_proj_bias: attention_bias
            && matches!(architecture, Llama | Qwen3 | Qwen3Moe | Gemma2 | Gemma3),
        qk_norm: matches!(architecture, Qwen3 | Qwen3Moe | Gemma3),
        dtype: dtype_of(&k)?,
        bos_token_id,
        eos_token_ids,
        sliding_window,
        variant,
        moe: moe::parse_moe(&k, architecture, num_hidden_layers, intermediate_size)?,
    };
    config.validate(k.path)?;
    Ok(config)
}

/// The first entry of `architectures` this build implements.
fn architecture_of(k: &Keys) -> Result<Architecture, LoadError> {
    let archs = k.obj.get("architectures").and_then(Value::as_array);
    let names: Vec<&str> = archs
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    names
        .iter()
        .find_map(|n| Architecture::from_hf_name(n))
        .ok_or_else(|| LoadError::UnsupportedArchitecture {
            path: k.path.to_path_buf(),
            arch: if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            },
            supported: SUPPORTED_ARCHITECTURES,
        })
}

/// Options that would change the math: refused rather than run wrong.
fn check_supported_features(k: &Keys, architecture: Architecture) -> Result<(), LoadError> {
    // Gemma's activation is `hidden_activation` (variant.rs).
    let gemma = matches!(architecture, Gemma2 | Gemma3);
    if let Some(act) = k.string("hidden_act")?.filter(|_| !gemma) {
        if act != "silu" {
            return Err(k.error(format!("hidden_act {act:?} is not supported (only silu)")));
        }
    }
    if k.bool("mlp_bias")?.unwrap_or(false) {
        return Err(k.error("mlp_bias = true is not supported"));
    }
    Ok(())
}

/// The partial rotary dim of a config (`partial_rotary_factor` at the top
/// level or, in transformers 5's layout, in `rope_parameters`): transformers'
/// `int(head_dim * factor)`. Only Phi-3 (Phi-4-mini) applies it; elsewhere a
/// factor other than 1 is refused by name.
fn partial_rotary_dim(
    k: &Keys,
    architecture: Architecture,
    head_dim: usize,
) -> Result<Option<usize>, LoadError> {
    let mut factor = k.f64("partial_rotary_factor")?;
    for key in ["rope_parameters", "rope_scaling"] {
        if let Some(Value::Object(obj)) = k.get(key) {
            let p = Keys { obj, path: k.path };
            factor = factor.or(p.f64("partial_rotary_factor")?);
        }
    }
    let Some(f) = factor.filter(|&f| f != 1.0) else {
        return Ok(None);
    };
    let dim = (head_dim as f64 * f) as usize;
    if architecture != Phi3 {
        return Err(k.error(format!(
            "partial_rotary_factor {f} is not supported for {architecture:?}"
        )));
    }
    if !(f > 0.0 && f < 1.0) || dim == 0 || dim % 2 == 1 {
        return Err(k.error(format!(
            "partial_rotary_factor {f} gives {dim} rotary dims of head_dim {head_dim}: \
             it must be in (0, 1) and give an even count"
        )));
    }
    Ok(Some(dim))
}

/// (num_key_value_heads, head_dim), with each config class's defaults.
fn attention_shape(
    k: &Keys,
    architecture: Architecture,
    hidden_size: usize,
    num_attention_heads: usize,
) -> Result<(usize, usize), LoadError> {
    // A missing key takes the config class default; an explicit null means MHA.
    let num_key_value_heads = match (k.obj.contains_key("num_key_value_heads"), architecture) {
        (true, _) => k
            .usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads),
        (false, Llama | Phi3) => num_attention_heads,
        (false, Mistral | Mixtral) => 8,
        (false, Qwen2 | Qwen3) => 32,
        (false, Qwen2Moe) => 16,
        (false, Qwen3Moe) => 4,
        (false, Gemma2 | Gemma3) => variant::GEMMA_DEFAULTS.num_key_value_heads,
    };
    let head_dim = match (k.usize("head_dim")?, architecture) {
        (Some(d), _) => d,
        (None, Qwen3) if !k.obj.contains_key("head_dim") => 128,
        (None, Gemma2 | Gemma3) if !k.obj.contains_key("head_dim") => {
            variant::GEMMA_DEFAULTS.head_dim
        }
        (None, _) => {
            if num_attention_heads == 0 || !hidden_size.is_multiple_of(num_attention_heads) {
                return Err(k.error(format!(
                    "no head_dim, and hidden_size ({hidden_size}) is not a multiple of \
                     num_attention_heads ({num_attention_heads})"
                )));
            }
            hidden_size / num_attention_heads
        }
    };
    Ok((num_key_value_heads, head_dim))
}

/// `dtype` (newer transformers) or `torch_dtype`; float32 when absent.
fn dtype_of(k: &Keys) -> Result<DType, LoadError> {
    match k.string("dtype")?.or(k.string("torch_dtype")?) {
        None => Ok(DType::F32),
        Some(name) => DType::from_torch_name(name).ok_or_else(|| {
            k.error(format!(
                "dtype {name:?} is not supported (float32, float16, bfloat16)"
            ))
        }),
    }
}

/// (bos, eos ids): the config's, else the config class defaults.
fn special_token_ids(
    k: &Keys,
    architecture: Architecture,
) -> Result<(Option<u32>, Vec<u32>), LoadError> {
    let (default_bos, default_eos) = match architecture {
        Llama | Mistral | Mixtral => (Some(1), vec![2]),
        Qwen2 | Qwen3 | Qwen2Moe | Qwen3Moe => (None, vec![]),
        Gemma2 | Gemma3 => (Some(2), vec![1]),
        Phi3 => (Some(1), vec![32000]),
    };
    let bos_token_id = if k.obj.contains_key("bos_token_id") {
        k.token_ids("bos_token_id")?.first().copied()
    } else {
        default_bos
    };
    let eos_token_ids = if k.obj.contains_key("eos_token_id") {
        k.token_ids("eos_token_id")?
    } else {
        default_eos
    };
    Ok((bos_token_id, eos_token_ids))
}

/// Rope theta and scaling from the newer `rope_parameters` or the older
/// top-level `rope_theta` + `rope_scaling` (transformers gives `rope_scaling`
/// priority when both are there).
fn parse_rope(k: &Keys, max_position_embeddings: usize) -> Result<(f32, RopeScaling), LoadError> {
    let params = match (k.obj.get("rope_scaling"), k.obj.get("rope_parameters")) {
        (Some(Value::Object(m)), _) => Some(m),
        (_, Some(Value::Object(m))) => Some(m),
        (Some(Value::Null) | None, Some(Value::Null) | None) => None,
        _ => return Err(k.error("rope_scaling / rope_parameters must be an object or null")),
    };
    let Some(params) = params else {
        return Ok((
            k.f64("rope_theta")?.unwrap_or(10000.0) as f32,
            RopeScaling::Default,
        ));
    };
    let p = Keys {
        obj: params,
        path: k.path,
    };
    if params.values().all(Value::is_object) && !params.is_empty() {
        return Err(k.error("per-layer-type rope_parameters are not supported"));
    }
    let theta = match p.f64("rope_theta")? {
        Some(t) => t,
        None => k.f64("rope_theta")?.unwrap_or(10000.0),
    } as f32;
    let rope_type = match p.string("rope_type")? {
        Some(t) => t,
        None => p.string("type")?.unwrap_or("default"),
    };
    let factor = |p: &Keys| -> Result<f32, LoadError> {
        let f = p
            .f64("factor")?
            .ok_or_else(|| p.error(format!("rope type {rope_type:?} needs a \"factor\"")))?;
        if !(f.is_finite() && f > 0.0) {
            return Err(p.error(format!("rope scaling factor {f} must be positive")));
        }
        Ok(f as f32)
    };
    let scaling = match rope_type {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: factor(&p)?,
        },
        "llama3" => {
            let need = |key: &str| {
                p.f64(key)?
                    .ok_or_else(|| p.error(format!("rope type \"llama3\" needs {key:?}")))
            };
            let low = need("low_freq_factor")? as f32;
            let high = need("high_freq_factor")? as f32;
            if !(low > 0.0 && high > low) {
                return Err(p.error(format!(
                    "llama3 rope needs 0 < low_freq_factor ({low}) < high_freq_factor ({high})"
                )));
            }
            let original = match p.usize("original_max_position_embeddings")? {
                Some(v) => v,
                None => k
                    .usize("original_max_position_embeddings")?
                    .unwrap_or(max_position_embeddings),
            };
            RopeScaling::Llama3 {
                factor: factor(&p)?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: original,
            }
        }
        other => {
            return Err(p.error(format!(
                "rope scaling type {other:?} is not supported (default, linear, llama3)"
            )))
        }
    };
    Ok((theta, scaling))
}

/// Typed access to one JSON object, with errors that name the file and key.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl<'a> Keys<'a> {
    fn error(&self, msg: impl Into<String>) -> LoadError {
        LoadError::config(self.path, msg)
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> LoadError {
        self.error(format!("key {key:?} must be {want}, found {v}"))
    }

    /// None when the key is missing or null.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
            })
            .transpose()
    }

    fn required_usize(&self, key: &str) -> Result<usize, LoadError> {
        self.usize(key)?
            .ok_or_else(|| self.error(format!("missing key {key:?}")))
    }

    fn f64(&self, key: &str) -> Result<Option<f64>, LoadError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong(key, "a number", v)))
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.wrong(key, "true or false", v))
            })
            .transpose()
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, LoadError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.wrong(key, "a string", v)))
            .transpose()
    }

    /// A token id or a list of them (`eos_token_id` is either); null is none.
    fn token_ids(&self, key: &str) -> Result<Vec<u32>, LoadError> {
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.wrong(key, "a token id or a list of token ids", v))
        };
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576, "intermediate_size": 1536,
        "max_position_embeddings": 8192, "mlp_bias": false, "model_type": "llama",
        "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
        "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 49152
    }"#;

    fn with(base: &str, patch: &str) -> Result<ModelConfig, LoadError> {
        let mut v: Value = serde_json::from_str(base).unwrap();
        let p: Value = serde_json::from_str(patch).unwrap();
        for (key, val) in p.as_object().unwrap() {
            if val == &Value::String("<delete>".into()) {
                v.as_object_mut().unwrap().remove(key);
            } else {
                v[key] = val.clone();
            }
        }
        ModelConfig::from_hf_json_str(&v.to_string())
    }

    #[test]
    fn smollm2_config() {
        let c = ModelConfig::from_hf_json_str(SMOLLM2).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(
            (c.hidden_size, c.num_attention_heads, c.num_key_value_heads),
            (576, 9, 3)
        );
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.rope_theta, 100000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Default));
        assert_eq!(c.dtype, DType::BF16);
        assert!(c.tie_word_embeddings && !c.attention_bias && !c.qk_norm);
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(1), vec![2])
        );
        assert_eq!(c.rms_norm_eps, 1e-5);
        // 134,515,008 is SmolLM2-135M's parameter count as HF reports it.
        assert_eq!(c.num_params(), 134_515_008);
        assert!(!c.tensor_shapes().iter().any(|(n, _)| n == "lm_head.weight"));
    }

    #[test]
    fn rope_scaling_old_and_new_keys() {
        let llama3 = r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}, "rope_theta": 500000.0}"#;
        let c = with(SMOLLM2, llama3).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        match c.rope_scaling {
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                assert_eq!((factor, low_freq_factor, high_freq_factor), (8.0, 1.0, 4.0));
                assert_eq!(original_max_position_embeddings, 8192);
            }
            other => panic!("{other:?}"),
        }
        let newer = r#"{"rope_scaling": "<delete>", "rope_theta": "<delete>",
            "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}}"#;
        let c = with(SMOLLM2, newer).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Linear { factor } if factor == 2.0));
        let old_type_key = r#"{"rope_scaling": {"type": "linear", "factor": 4}}"#;
        let c = with(SMOLLM2, old_type_key).unwrap();
        assert!(matches!(c.rope_scaling, RopeScaling::Linear { factor } if factor == 4.0));
        let default = r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}"#;
        let c = with(SMOLLM2, default).unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert!(matches!(c.rope_scaling, RopeScaling::Default));
        let no_theta = r#"{"rope_theta": "<delete>"}"#;
        assert_eq!(with(SMOLLM2, no_theta).unwrap().rope_theta, 10000.0);
    }

    #[test]
    fn unsupported_values_are_clear_errors() {
        let cases = [
            (
                r#"{"architectures": ["GPT2LMHeadModel"]}"#,
                "GPT2LMHeadModel",
            ),
            (r#"{"architectures": "<delete>"}"#, "architecture \"none\""),
            (
                r#"{"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#,
                "yarn",
            ),
            (
                r#"{"rope_scaling": {"type": "dynamic", "factor": 2.0}}"#,
                "dynamic",
            ),
            (r#"{"rope_scaling": {"rope_type": "linear"}}"#, "factor"),
            (r#"{"torch_dtype": "float8_e4m3fn"}"#, "float8_e4m3fn"),
            (r#"{"hidden_size": "<delete>"}"#, "hidden_size"),
            (r#"{"hidden_size": -3}"#, "hidden_size"),
            (r#"{"num_key_value_heads": 4}"#, "multiple"),
            (r#"{"hidden_act": "gelu"}"#, "gelu"),
            (r#"{"eos_token_id": "x"}"#, "eos_token_id"),
            // Partial rotary is Phi-3's (Phi-4-mini) only.
            (
                r#"{"partial_rotary_factor": 0.5}"#,
                "partial_rotary_factor 0.5",
            ),
            (
                r#"{"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}}"#,
                "partial_rotary_factor 0.5",
            ),
        ];
        for (patch, needle) in cases {
            let err = with(SMOLLM2, patch).unwrap_err().to_string();
            assert!(err.contains(needle), "{patch}: {err}");
            assert!(err.contains("config.json"), "{patch}: {err}");
        }
        let err = ModelConfig::from_hf_json_str("{not json").unwrap_err();
        assert!(matches!(err, LoadError::Json { .. }), "{err}");
    }

    #[test]
    fn defaults_and_variants() {
        let c = with(
            SMOLLM2,
            r#"{"num_key_value_heads": null, "head_dim": null}"#,
        )
        .unwrap();
        assert_eq!((c.num_key_value_heads, c.head_dim), (9, 64));
        let c = with(SMOLLM2, r#"{"eos_token_id": [2, 7], "dtype": "float16"}"#).unwrap();
        assert_eq!(c.eos_token_ids, vec![2, 7]);
        assert_eq!(c.dtype, DType::F16);
        let qwen2 = r#"{"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": false,
            "sliding_window": 32768, "bos_token_id": null}"#;
        let c = with(SMOLLM2, qwen2).unwrap();
        assert!(c.attention_bias && !c.o_proj_bias && !c.qk_norm);
        assert_eq!((c.sliding_window, c.bos_token_id), (None, None));
        assert!(c
            .tensor_shapes()
            .iter()
            .any(|(n, s)| n == "model.layers.0.self_attn.k_proj.bias" && s == &vec![192]));
        let qwen3 = r#"{"architectures": ["Qwen3ForCausalLM"], "head_dim": 128}"#;
        let c = with(SMOLLM2, qwen3).unwrap();
        assert!(c.qk_norm && !c.attention_bias);
        assert_eq!(c.head_dim, 128);
        let shapes = c.tensor_shapes();
        let q = shapes
            .iter()
            .find(|(n, _)| n == "model.layers.0.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!(q.1, vec![9 * 128, 576]);
        let mistral = r#"{"architectures": ["MistralForCausalLM"], "sliding_window": 4096}"#;
        assert_eq!(with(SMOLLM2, mistral).unwrap().sliding_window, Some(4096));
        let llama_bias = r#"{"attention_bias": true}"#;
        let c = with(SMOLLM2, llama_bias).unwrap();
        assert!(c.attention_bias && c.o_proj_bias);
        let qwen_swa = r#"{"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": true,
            "sliding_window": 64, "max_window_layers": 20}"#;
        let c = with(SMOLLM2, qwen_swa).unwrap();
        assert_eq!((c.layer_window(19), c.layer_window(20)), (None, Some(64)));
    }

    /// Written by transformers 5.24 `to_json_string` (the newer key layout).
    #[test]
    fn transformers_v5_configs() {
        let llama = r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false,
            "bos_token_id": 1, "dtype": null, "eos_token_id": 2, "head_dim": 16,
            "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128,
            "max_position_embeddings": 2048, "mlp_bias": false, "model_type": "llama",
            "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
            "pad_token_id": null, "pretraining_tp": 1, "rms_norm_eps": 1e-06,
            "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
              "original_max_position_embeddings": 8192, "rope_theta": 500000.0,
              "rope_type": "llama3"},
            "tie_word_embeddings": false, "transformers_version": "5.24.0", "vocab_size": 100}"#;
        let c = ModelConfig::from_hf_json_str(llama).unwrap();
        assert_eq!(
            (c.rope_theta, c.dtype, c.head_dim),
            (500000.0, DType::F32, 16)
        );
        assert_eq!(
            c.rope_scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192
            }
        );
        let qwen3 = r#"{"architectures": ["Qwen3ForCausalLM"], "attention_bias": false,
            "bos_token_id": null, "eos_token_id": null, "head_dim": 32, "hidden_act": "silu",
            "hidden_size": 64, "intermediate_size": 128,
            "layer_types": ["full_attention", "full_attention"],
            "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen3",
            "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
            "sliding_window": null, "tie_word_embeddings": false, "use_sliding_window": false,
            "vocab_size": 100}"#;
        let c = ModelConfig::from_hf_json_str(qwen3).unwrap();
        assert_eq!((c.head_dim, c.qk_norm, c.sliding_window), (32, true, None));
        assert_eq!((c.bos_token_id, c.eos_token_ids.len()), (None, 0));
        assert_eq!(c.rope_scaling, RopeScaling::Default);
    }

    #[test]
    fn from_hf_dir_merges_generation_config() {
        let dir = std::env::temp_dir().join(format!("pagoda-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), SMOLLM2).unwrap();
        std::fs::write(
            dir.join("generation_config.json"),
            r#"{"bos_token_id": 1, "eos_token_id": [2, 0]}"#,
        )
        .unwrap();
        let c = ModelConfig::from_hf_dir(&dir).unwrap();
        assert_eq!(c.eos_token_ids, vec![2, 0]);
        std::fs::write(dir.join("generation_config.json"), "{").unwrap();
        let err = ModelConfig::from_hf_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("generation_config.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = ModelConfig::from_hf_dir(&dir).unwrap_err();
        assert!(matches!(err, LoadError::NotFound { .. }), "{err}");
    }
}
