//! Every GGUF dequantizer against vectors made by the `gguf` Python package
//! (llama.cpp's reference dequantization): tests/fixtures/gguf_quants/make.py
//! wrote `<TYPE>.bin` (raw blocks) and `<TYPE>.f32` (expected values).
//! The comparison is bit-exact.

use std::path::PathBuf;
use std::sync::Arc;

use pagoda_engine::config::ModelConfig;
use pagoda_engine::weights::gguf_dequant::dequantize;
use pagoda_engine::weights::gguf_writer::encode;
use pagoda_engine::weights::{GgmlType, GgufFile, GgufValue, GgufWeights, WeightSource};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf_quants")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn expected(name: &str) -> Vec<f32> {
    fixture(&format!("{name}.f32"))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

const TYPES: &[(&str, GgmlType, u32)] = &[
    ("F16", GgmlType::F16, 1),
    ("BF16", GgmlType::BF16, 30),
    ("Q4_0", GgmlType::Q4_0, 2),
    ("Q4_1", GgmlType::Q4_1, 3),
    ("Q5_0", GgmlType::Q5_0, 6),
    ("Q5_1", GgmlType::Q5_1, 7),
    ("Q8_0", GgmlType::Q8_0, 8),
    ("Q2_K", GgmlType::Q2K, 10),
    ("Q3_K", GgmlType::Q3K, 11),
    ("Q4_K", GgmlType::Q4K, 12),
    ("Q5_K", GgmlType::Q5K, 13),
    ("Q6_K", GgmlType::Q6K, 14),
];

#[test]
fn every_type_matches_gguf_py_bit_for_bit() {
    for &(name, ty, id) in TYPES {
        assert_eq!(GgmlType::from_id(id), ty);
        assert_eq!(ty.name(), name);
        let raw = fixture(&format!("{name}.bin"));
        let want = expected(name);
        let got = dequantize(ty, &raw, want.len())
            .unwrap_or_else(|| panic!("{name}: dequantize refused the fixture"));
        let mismatches: Vec<usize> = (0..want.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .collect();
        assert!(
            mismatches.is_empty(),
            "{name}: {} of {} values differ, first at {}: got {} want {}",
            mismatches.len(),
            want.len(),
            mismatches[0],
            got[mismatches[0]],
            want[mismatches[0]]
        );
        // The fixtures are not degenerate: many distinct values.
        let mut distinct: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() > 30,
            "{name}: only {} distinct values",
            distinct.len()
        );
    }
}

/// The same vectors laid out as 2-D tensors in a GGUF file, read through
/// `GgufWeights` under HF names (a qwen2 file: no Q/K permutation).
#[test]
fn quantized_tensors_through_a_gguf_file() {
    for &(name, ty, id) in TYPES {
        let raw = fixture(&format!("{name}.bin"));
        let want = expected(name);
        let (block, _) = ty.block_layout().unwrap();
        let cols = block.max(32) * 2;
        let rows = want.len() / cols;
        let used = rows * cols;
        let nbytes = raw.len() * used / want.len();
        let meta: Vec<(&str, GgufValue)> = vec![
            ("general.architecture", GgufValue::String("qwen2".into())),
            ("qwen2.block_count", GgufValue::U32(1)),
            ("qwen2.context_length", GgufValue::U32(64)),
            ("qwen2.embedding_length", GgufValue::U32(cols as u32)),
            ("qwen2.feed_forward_length", GgufValue::U32(rows as u32)),
            ("qwen2.attention.head_count", GgufValue::U32(2)),
            ("qwen2.vocab_size", GgufValue::U32(8)),
        ];
        let tensors = vec![(
            "blk.0.ffn_up.weight".to_string(),
            vec![cols as u64, rows as u64],
            id,
            raw[..nbytes].to_vec(),
        )];
        let dir = std::env::temp_dir().join(format!("pagoda-dequant-it-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, encode(3, &meta, &tensors)).unwrap();
        let file = Arc::new(GgufFile::open(&path).unwrap());
        let config = ModelConfig::from_gguf(&file).unwrap();
        let w = GgufWeights::new(file, &config);
        let got = w
            .get("model.layers.0.mlp.up_proj.weight", &[rows, cols])
            .unwrap()
            .to_f32();
        assert_eq!(got.len(), used);
        for i in 0..used {
            assert_eq!(got[i].to_bits(), want[i].to_bits(), "{name} value {i}");
        }
    }
}
