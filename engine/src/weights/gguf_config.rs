//! `ModelConfig::from_gguf`: the model config from GGUF metadata, reading the
//! keys llama.cpp's converter writes (and HF transformers' GGUF loader reads,
//! see transformers/integrations/ggml.py).
//!
//! Llama 3 rope scaling has no metadata key in GGUF: the converter stores the
//! per-frequency divisors as a `rope_freqs.weight` tensor. They are fitted
//! back to `RopeScaling::Llama3` parameters here, and checked: the fitted
//! parameters must reproduce the tensor, or loading fails.

use super::gguf::GgufFile;
use super::LoadError;
use crate::config::{Architecture, DType, ModelConfig, RopeScaling};

const SUPPORTED_GGUF_ARCHITECTURES: &str =
    "llama, qwen2, qwen3, qwen2moe, qwen3moe, gemma2, gemma3, phi3";

impl ModelConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, LoadError> {
        let path = g.path();
        let arch = g.architecture().ok_or_else(|| {
            LoadError::config(path, "no general.architecture key in the GGUF metadata")
        })?;
        let architecture = match super::gguf_moe::moe_architecture(g, arch) {
            Some(moe) => moe,
            None => match arch {
                "llama" => Architecture::Llama,
                "qwen2" => Architecture::Qwen2,
                "qwen3" => Architecture::Qwen3,
                "gemma2" => Architecture::Gemma2,
                "gemma3" => Architecture::Gemma3,
                "phi3" => Architecture::Phi3,
                other => {
                    return Err(LoadError::UnsupportedArchitecture {
                        path: path.to_path_buf(),
                        arch: other.to_string(),
                        supported: SUPPORTED_GGUF_ARCHITECTURES,
                    })
                }
            },
        };
        let key = |k: &str| format!("{arch}.{k}");
        let need = |k: &str| -> Result<usize, LoadError> {
            let full = key(k);
            g.get_u64(&full)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| LoadError::config(path, format!("missing integer key {full:?}")))
        };

        let hidden_size = need("embedding_length")?;
        let num_attention_heads = need("attention.head_count")?;
        let num_key_value_heads = match g.get_u64(&key("attention.head_count_kv")) {
            Some(v) => v as usize,
            None => num_attention_heads,
        };
        // key_length is the true head dim (Qwen3 may differ from hidden/heads);
        // llama writes rope.dimension_count, which equals it for full rotary
        // (Phi-3's may be partial: its heads are hidden/heads).
        let rotary_dims = match architecture {
            Architecture::Phi3 => None,
            _ => g.get_u64(&key("rope.dimension_count")),
        };
        let head_dim = match (g.get_u64(&key("attention.key_length")), rotary_dims) {
            (Some(d), _) | (None, Some(d)) => d as usize,
            (None, None) => hidden_size / num_attention_heads.max(1),
        };
        let vocab_size = match g.get_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => match (
                g.array_len("tokenizer.ggml.tokens"),
                g.tensor_info("token_embd.weight"),
            ) {
                (Some(n), _) => n,
                (None, Some(t)) if t.dims.len() == 2 => t.dims[1],
                _ => return Err(LoadError::config(path, "cannot tell the vocabulary size")),
            },
        };
        let rope_theta = g.get_f32(&key("rope.freq_base")).unwrap_or(10000.0);
        let max_position_embeddings = need("context_length")?;

        let has = |t: &str| g.tensor_info(t).is_some();
        let attention_bias = match architecture {
            Architecture::Qwen2 | Architecture::Qwen2Moe => true,
            _ => has("blk.0.attn_q.bias"),
        };
        let o_proj_bias = attention_bias && has("blk.0.attn_output.bias");

        let mut eos_token_ids = Vec::new();
        for k in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = g.get_u32(k) {
                if !eos_token_ids.contains(&id) {
                    eos_token_ids.push(id);
                }
            }
        }

        let dtype = match g.get_u32("general.file_type") {
            Some(1) => DType::F16,
            Some(32) => DType::BF16,
            // F32, and every quantized file: dequantized weights are f32.
            _ => DType::F32,
        };

        let intermediate_size = need("feed_forward_length")?;
        let num_hidden_layers = need("block_count")?;
        let (sliding_window, variant) = match architecture {
            Architecture::Gemma2 | Architecture::Gemma3 => super::gguf_gemma::gemma_variant(
                g,
                arch,
                architecture,
                (
                    hidden_size,
                    num_attention_heads,
                    head_dim,
                    num_hidden_layers,
                ),
            )?,
            Architecture::Phi3 => super::gguf_phi3::phi3_variant(
                g,
                arch,
                head_dim,
                rope_theta,
                max_position_embeddings,
            )?,
            _ => (None, Default::default()),
        };
        let config = ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: g
                .get_f32(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-6),
            rope_theta,
            rope_scaling: rope_scaling(g, arch, rope_theta, head_dim)?,
            max_position_embeddings,
            tie_word_embeddings: !has("output.weight"),
            attention_bias,
            o_proj_bias,
            qk_norm: matches!(
                architecture,
                Architecture::Qwen3 | Architecture::Qwen3Moe | Architecture::Gemma3
            ),
            dtype,
            bos_token_id: g.get_u32("tokenizer.ggml.bos_token_id"),
            eos_token_ids,
            sliding_window,
            variant,
            moe: super::gguf_moe::moe_config(
                g,
                arch,
                architecture,
                num_hidden_layers,
                intermediate_size,
            )?,
        };
        config.validate(path)?;
        Ok(config)
    }
}

fn rope_scaling(
    g: &GgufFile,
    arch: &str,
    theta: f32,
    head_dim: usize,
) -> Result<RopeScaling, LoadError> {
    let path = g.path();
    let key = |k: &str| format!("{arch}.rope.{k}");
    let scaling_type = g.get_str(&key("scaling.type"));
    let factor = g
        .get_f32(&key("scaling.factor"))
        .or_else(|| g.get_f32(&key("scale_linear")));
    let from_metadata = match (scaling_type, factor) {
        (Some("none"), _) | (None, None) => RopeScaling::Default,
        (Some("linear") | None, Some(1.0)) => RopeScaling::Default,
        (Some("linear") | None, Some(f)) if f.is_finite() && f > 0.0 => {
            RopeScaling::Linear { factor: f }
        }
        (Some("linear") | None, f) => {
            return Err(LoadError::config(
                path,
                format!("linear rope scaling needs a positive factor, found {f:?}"),
            ))
        }
        (Some(t), _) => {
            return Err(LoadError::config(
                path,
                format!("rope scaling type {t:?} is not supported (none, linear)"),
            ))
        }
    };
    let Some(info) = g.tensor_info("rope_freqs.weight") else {
        return Ok(from_metadata);
    };
    if !matches!(from_metadata, RopeScaling::Default) {
        return Err(LoadError::config(
            path,
            "both rope scaling metadata and a rope_freqs tensor: not supported",
        ));
    }
    let divisors = g.dequantize(info)?;
    let original = g
        .get_u64(&key("scaling.original_context_length"))
        .map(|v| v as usize)
        .unwrap_or(8192);
    fit_llama3(&divisors, theta, head_dim, original).ok_or_else(|| {
        LoadError::config(
            path,
            "tensor \"rope_freqs.weight\" is not a Llama 3 rope scaling (the only kind of \
             rope frequency factors supported)",
        )
    })
}

/// The rope divisor of frequency `i` under Llama 3 scaling, as the converter
/// computes it (in f64).
fn llama3_divisor(i: usize, theta: f64, head_dim: usize, p: (f64, f64, f64, f64)) -> f64 {
    let (factor, low, high, original) = p;
    let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < original / high {
        1.0
    } else if wavelen > original / low {
        factor
    } else {
        let smooth = (original / wavelen - low) / (high - low);
        1.0 / ((1.0 - smooth) / factor + smooth)
    }
}

/// Recovers (factor, low_freq_factor, high_freq_factor) from the divisors.
/// Within the smooth band the divisor depends only on original/(high-low)
/// and low/(high-low), so `original` is kept as given and the two factors
/// are solved from two points of the band; with fewer than two points the
/// standard Llama 3 values (1, 4) are tried. The result is verified.
fn fit_llama3(
    divisors: &[f32],
    theta: f32,
    head_dim: usize,
    original: usize,
) -> Option<RopeScaling> {
    if divisors.len() != head_dim / 2 || divisors.is_empty() {
        return None;
    }
    let theta = theta as f64;
    let orig = original as f64;
    let d: Vec<f64> = divisors.iter().map(|&v| v as f64).collect();
    let factor = d.iter().cloned().fold(f64::MIN, f64::max);
    if !(factor.is_finite() && factor >= 1.0) {
        return None;
    }
    let inv_wavelen = |i: usize| {
        let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
        freq / (2.0 * std::f64::consts::PI)
    };
    let tol = 1e-4 * factor;
    let band: Vec<usize> = (0..d.len())
        .filter(|&i| d[i] > 1.0 + tol && d[i] < factor - tol)
        .collect();
    let (low, high) = if band.len() >= 2 {
        // smooth = a / wavelen + b, with a = orig/(high-low), b = -low/(high-low)
        let smooth = |i: usize| (1.0 / d[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
        let (i, j) = (band[0], band[band.len() - 1]);
        let a = (smooth(i) - smooth(j)) / (inv_wavelen(i) - inv_wavelen(j));
        let b = smooth(i) - a * inv_wavelen(i);
        let width = orig / a;
        let low = -b * width;
        let snap = |v: f64| {
            let r = (v * 1000.0).round() / 1000.0;
            if (r - v).abs() < 1e-4 * v.abs().max(1.0) {
                r
            } else {
                v
            }
        };
        (snap(low), snap(low + width))
    } else {
        (1.0, 4.0)
    };
    if !(low > 0.0 && high > low) {
        return None;
    }
    let params = (factor, low, high, orig);
    let matches = (0..d.len()).all(|i| {
        let want = llama3_divisor(i, theta, head_dim, params);
        (want - d[i]).abs() <= 1e-4 * want
    });
    if !matches {
        return None;
    }
    if factor == 1.0 {
        return Some(RopeScaling::Default);
    }
    Some(RopeScaling::Llama3 {
        factor: factor as f32,
        low_freq_factor: low as f32,
        high_freq_factor: high as f32,
        original_max_position_embeddings: original,
    })
}

#[cfg(test)]
mod tests {
    use super::super::gguf::GgufValue;
    use super::super::gguf_writer::encode;
    use super::*;

    fn write(
        name: &str,
        meta: &[(&str, GgufValue)],
        tensors: &[super::super::gguf_writer::RawTensor],
    ) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pagoda-gguf-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, encode(3, meta, tensors)).unwrap();
        p
    }

    fn base_meta(arch: &str) -> Vec<(String, GgufValue)> {
        use GgufValue::*;
        let k = |s: &str| format!("{arch}.{s}");
        vec![
            ("general.architecture".into(), String(arch.into())),
            (k("block_count"), U32(2)),
            (k("context_length"), U32(4096)),
            (k("embedding_length"), U32(64)),
            (k("feed_forward_length"), U32(128)),
            (k("attention.head_count"), U32(4)),
            (k("attention.head_count_kv"), U32(2)),
            (k("attention.layer_norm_rms_epsilon"), F32(1e-5)),
            (k("rope.freq_base"), F32(500000.0)),
            (
                "tokenizer.ggml.tokens".into(),
                Array((0..100).map(|i| String(format!("t{i}"))).collect()),
            ),
            ("tokenizer.ggml.bos_token_id".into(), U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), U32(2)),
            ("tokenizer.ggml.eot_token_id".into(), U32(7)),
        ]
    }

    fn as_refs(m: &[(String, GgufValue)]) -> Vec<(&str, GgufValue)> {
        m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
    }

    #[test]
    fn llama_config_from_metadata() {
        let m = base_meta("llama");
        let p = write("llama.gguf", &as_refs(&m), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
            (64, 128, 2)
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (4, 2, 16)
        );
        assert_eq!((c.vocab_size, c.max_position_embeddings), (100, 4096));
        assert_eq!((c.rope_theta, c.rms_norm_eps), (500000.0, 1e-5));
        assert!(c.tie_word_embeddings && !c.attention_bias && !c.qk_norm);
        assert_eq!((c.bos_token_id, c.eos_token_ids), (Some(1), vec![2, 7]));
        assert!(matches!(c.rope_scaling, RopeScaling::Default));
    }

    #[test]
    fn qwen3_key_length_and_unknown_arch() {
        let mut m = base_meta("qwen3");
        m.push(("qwen3.attention.key_length".into(), GgufValue::U32(32)));
        let p = write("qwen3.gguf", &as_refs(&m), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert_eq!(
            (c.architecture, c.head_dim, c.qk_norm),
            (Architecture::Qwen3, 32, true)
        );
        let p = write("rwkv.gguf", &as_refs(&base_meta("rwkv6")), &[]);
        let err = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("rwkv6") && msg.contains("rwkv.gguf") && msg.contains("phi3"),
            "{msg}"
        );
        let mut m = base_meta("qwen2");
        m.retain(|(k, _)| k != "qwen2.block_count");
        let p = write("qwen2.gguf", &as_refs(&m), &[]);
        let msg = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("qwen2.block_count"), "{msg}");
    }

    #[test]
    fn gemma2_follows_llama_cpp() {
        let mut m = base_meta("gemma2");
        m.push(("gemma2.attention.key_length".into(), GgufValue::U32(32)));
        m.push(("gemma2.attn_logit_softcapping".into(), GgufValue::F32(0.0)));
        m.push(("gemma2.attention.sliding_window".into(), GgufValue::U32(12)));
        let p = write("gemma2.gguf", &as_refs(&m), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert_eq!(c.architecture, Architecture::Gemma2);
        let v = &c.variant;
        assert!(v.gemma_norms && v.scale_embeddings);
        assert_eq!(v.query_pre_attn_scalar, Some(32.0));
        // 0 turns a cap off; an absent one takes llama.cpp's default.
        assert_eq!(
            (v.attn_logit_softcapping, v.final_logit_softcapping),
            (None, Some(30.0))
        );
        assert_eq!((c.layer_window(0), c.layer_window(1)), (Some(12), None));
        m.push((
            "gemma2.final_logit_softcapping".into(),
            GgufValue::F32(-1.0),
        ));
        let p = write("gemma2_bad.gguf", &as_refs(&m), &[]);
        let msg = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("gemma2.final_logit_softcapping"), "{msg}");
    }

    #[test]
    fn gemma3_pattern_local_rope_and_caps() {
        let mut m = base_meta("gemma3");
        m[1].1 = GgufValue::U32(12); // block_count
        m.push(("gemma3.attention.key_length".into(), GgufValue::U32(32)));
        m.push((
            "gemma3.attention.sliding_window".into(),
            GgufValue::U32(512),
        ));
        m.push((
            "gemma3.rope.scaling.type".into(),
            GgufValue::String("linear".into()),
        ));
        m.push(("gemma3.rope.scaling.factor".into(), GgufValue::F32(8.0)));
        let p = write("gemma3.gguf", &as_refs(&m), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert!(c.qk_norm && c.variant.gemma_norms && c.variant.scale_embeddings);
        // llama.cpp's pattern: five local layers, then a global one.
        let windows: Vec<_> = (0..12).map(|i| c.layer_window(i)).collect();
        for (i, w) in windows.iter().enumerate() {
            let want = if i % 6 == 5 { None } else { Some(512) };
            assert_eq!(*w, want, "layer {i}");
        }
        let v = &c.variant;
        assert_eq!(
            (v.attn_logit_softcapping, v.final_logit_softcapping),
            (None, None)
        );
        assert_eq!(v.query_pre_attn_scalar, Some(32.0));
        // Scaling is the global layers'; local layers run base 10000 plain.
        assert!(matches!(c.rope_scaling, RopeScaling::Linear { factor } if factor == 8.0));
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(v.local_rope, Some((t, RopeScaling::Default)) if t == 10000.0));

        // A per-layer pattern, a local base and a final cap when written.
        let mut m = base_meta("gemma3");
        m.push(("gemma3.attention.sliding_window".into(), GgufValue::U32(8)));
        m.push((
            "gemma3.attention.sliding_window_pattern".into(),
            GgufValue::Array(vec![GgufValue::Bool(false), GgufValue::Bool(true)]),
        ));
        m.push(("gemma3.rope.freq_base_swa".into(), GgufValue::F32(2000.0)));
        m.push(("gemma3.final_logit_softcapping".into(), GgufValue::F32(8.0)));
        let p = write("gemma3_pattern.gguf", &as_refs(&m), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert_eq!((c.layer_window(0), c.layer_window(1)), (None, Some(8)));
        assert_eq!(c.variant.final_logit_softcapping, Some(8.0));
        assert!(matches!(c.variant.local_rope, Some((t, _)) if t == 2000.0));

        // No window written: every layer global.
        let p = write("gemma3_nowin.gguf", &as_refs(&base_meta("gemma3")), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert!(!c.has_sliding_window());

        // A pattern of the wrong length is refused by name.
        let pattern = "gemma3.attention.sliding_window_pattern";
        m.retain(|(k, _)| k != pattern);
        m.push((
            pattern.into(),
            GgufValue::Array(vec![GgufValue::Bool(true)]),
        ));
        let p = write("gemma3_bad.gguf", &as_refs(&m), &[]);
        let msg = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("sliding_window_pattern"), "{msg}");
    }

    fn f32_tensor(name: &str, v: &[f32]) -> super::super::gguf_writer::RawTensor {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        (name.to_string(), vec![v.len() as u64], 0, bytes)
    }

    #[test]
    fn phi3_longrope_window_and_partial_rotary() {
        let mut m = base_meta("phi3");
        m.push(("phi3.rope.dimension_count".into(), GgufValue::U32(16)));
        m.push(("phi3.attention.sliding_window".into(), GgufValue::U32(2047)));
        m.push((
            "phi3.rope.scaling.original_context_length".into(),
            GgufValue::U32(1024),
        ));
        let short = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7];
        let long = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let t = vec![
            f32_tensor("rope_factors_short.weight", &short),
            f32_tensor("rope_factors_long.weight", &long),
        ];
        let p = write("phi3.gguf", &as_refs(&m), &t);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert_eq!(c.architecture, Architecture::Phi3);
        assert!(c.variant.fused_projections);
        assert_eq!((c.head_dim, c.layer_window(1)), (16, Some(2047)));
        let lr = c.variant.long_rope.as_ref().unwrap();
        assert_eq!(
            (lr.short_factor.as_slice(), lr.long_factor.as_slice()),
            (&short[..], &long[..])
        );
        assert_eq!(
            (lr.original_max_position_embeddings, lr.theta),
            (1024, 500000.0)
        );
        // No attn_factor key: transformers' sqrt(1 + ln(4096/1024) / ln(1024)).
        let want = (1.0 + 4f64.ln() / 1024f64.ln()).sqrt() as f32;
        assert_eq!(lr.attention_factor, want);
        assert!(matches!(c.rope_scaling, RopeScaling::Default));

        // Phi-4's zero window is none; only one factor tensor is refused.
        m.retain(|(k, _)| k != "phi3.attention.sliding_window");
        m.push(("phi3.attention.sliding_window".into(), GgufValue::U32(0)));
        let p = write("phi3_one.gguf", &as_refs(&m), &t[..1]);
        let msg = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("rope_factors_long.weight"), "{msg}");
        let p = write("phi4.gguf", &as_refs(&m), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert!(!c.has_sliding_window() && c.variant.long_rope.is_none());

        // Phi-4-mini's partial rotary: the leading 12 of 16 dims.
        m.retain(|(k, _)| k != "phi3.rope.dimension_count");
        m.push(("phi3.rope.dimension_count".into(), GgufValue::U32(12)));
        let p = write("phi4_mini.gguf", &as_refs(&m), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert_eq!((c.rotary_dim(), c.head_dim), (12, 16));
        m.retain(|(k, _)| k != "phi3.rope.dimension_count");
        m.push(("phi3.rope.dimension_count".into(), GgufValue::U32(13)));
        let p = write("phi4_odd.gguf", &as_refs(&m), &[]);
        let msg = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("phi3.rope.dimension_count") && msg.contains("even"),
            "{msg}"
        );
    }

    #[test]
    fn linear_and_unsupported_rope_scaling() {
        let mut m = base_meta("llama");
        m.push((
            "llama.rope.scaling.type".into(),
            GgufValue::String("linear".into()),
        ));
        m.push(("llama.rope.scaling.factor".into(), GgufValue::F32(4.0)));
        let p = write("linear.gguf", &as_refs(&m), &[]);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert!(matches!(c.rope_scaling, RopeScaling::Linear { factor } if factor == 4.0));
        let mut m = base_meta("llama");
        m.push((
            "llama.rope.scaling.type".into(),
            GgufValue::String("yarn".into()),
        ));
        let p = write("yarn.gguf", &as_refs(&m), &[]);
        let msg = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("yarn"), "{msg}");
    }

    fn llama3_freqs(theta: f64, head_dim: usize, p: (f64, f64, f64, f64)) -> Vec<f32> {
        (0..head_dim / 2)
            .map(|i| llama3_divisor(i, theta, head_dim, p) as f32)
            .collect()
    }

    #[test]
    fn llama3_rope_freqs_are_fitted_back() {
        for (factor, low, high, orig, head_dim) in [
            (8.0, 1.0, 4.0, 8192.0, 128),  // Llama 3.1
            (32.0, 1.0, 4.0, 8192.0, 64),  // Llama 3.2 1B
            (16.0, 2.0, 8.0, 4096.0, 128), // something else
        ] {
            let f = llama3_freqs(500000.0, head_dim, (factor, low, high, orig));
            let fitted = fit_llama3(&f, 500000.0, head_dim, orig as usize).unwrap();
            match fitted {
                RopeScaling::Llama3 {
                    factor: fa,
                    low_freq_factor: lo,
                    high_freq_factor: hi,
                    original_max_position_embeddings: o,
                } => {
                    assert_eq!(
                        (fa as f64, lo as f64, hi as f64, o),
                        (factor, low, high, orig as usize)
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let mut f = llama3_freqs(500000.0, 128, (8.0, 1.0, 4.0, 8192.0));
        f[3] *= 1.5;
        assert!(fit_llama3(&f, 500000.0, 128, 8192).is_none());
        assert!(fit_llama3(&f[..10], 500000.0, 128, 8192).is_none());
    }

    #[test]
    fn rope_freqs_tensor_in_a_file() {
        let mut m = base_meta("llama");
        m.push(("llama.rope.dimension_count".into(), GgufValue::U32(16)));
        let f = llama3_freqs(500000.0, 16, (8.0, 1.0, 4.0, 8192.0));
        let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = vec![("rope_freqs.weight".to_string(), vec![8u64], 0u32, bytes)];
        let p = write("rope_freqs.gguf", &as_refs(&m), &t);
        let c = ModelConfig::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert!(
            matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0),
            "{:?}",
            c.rope_scaling
        );
    }
}
