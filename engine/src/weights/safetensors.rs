//! `WeightSource` over HF safetensors: `model.safetensors`, or the shards
//! listed in `model.safetensors.index.json`. Files are memory-mapped and their
//! headers parsed at open (by the `safetensors` crate, which validates the
//! offsets against the file size); tensors are copied out on `get`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use super::{check_shape, HostTensor, LoadError, TensorData, WeightSource};

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the shard file.
    start: usize,
    end: usize,
}

pub struct SafetensorsWeights {
    shards: Vec<Shard>,
    tensors: HashMap<String, Entry>,
}

impl std::fmt::Debug for SafetensorsWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const SINGLE_FILE: &str = "model.safetensors";

impl SafetensorsWeights {
    /// Opens the weights of an HF folder: the index's shards when there is an
    /// index, else `model.safetensors`, else the folder's only `*.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self, LoadError> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(&index);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| LoadError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        found.sort();
        if found.len() == 1 {
            return Self::open_files(&found);
        }
        let what = if dir.join("pytorch_model.bin").exists() {
            "only pytorch_model.bin found; Pagoda reads safetensors only"
        } else if found.is_empty() {
            "no model.safetensors or model.safetensors.index.json in the folder"
        } else {
            "several .safetensors files but no model.safetensors.index.json"
        };
        Err(LoadError::NotFound {
            path: single,
            what: what.into(),
        })
    }

    /// Opens the shards named by an index file's `weight_map`, and checks
    /// that each shard holds the tensors the index puts there.
    pub fn open_index(index: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(index).map_err(|e| LoadError::io(index, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LoadError::Json {
                path: index.to_path_buf(),
                source,
            })?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| LoadError::config(index, "no \"weight_map\" object"))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<String> = Vec::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                LoadError::config(index, format!("weight_map[{tensor:?}] is not a file name"))
            })?;
            if !files.iter().any(|f| f == file) {
                files.push(file.to_string());
            }
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let weights = Self::open_files(&paths)?;
        for (tensor, file) in map {
            let shard = weights
                .tensors
                .get(tensor)
                .map(|e| &weights.shards[e.shard].path);
            if shard != Some(&dir.join(file.as_str().unwrap_or_default())) {
                return Err(LoadError::MissingTensor {
                    path: dir.join(file.as_str().unwrap_or_default()),
                    tensor: format!("{tensor} (listed there by {INDEX_FILE})"),
                });
            }
        }
        Ok(weights)
    }

    /// Opens and indexes the given safetensors files.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self, LoadError> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut tensors: HashMap<String, Entry> = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
            // SAFETY: read-only map; the file must not be truncated while mapped.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&mmap).map_err(|e| LoadError::Safetensors {
                    path: path.clone(),
                    msg: e.to_string(),
                })?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                let (s, e) = info.data_offsets;
                let entry = Entry {
                    shard: i,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + s,
                    end: data_start + e,
                };
                if let Some(prev) = tensors.insert(name.clone(), entry) {
                    return Err(LoadError::config(
                        path,
                        format!(
                            "tensor {name:?} is also in {}",
                            shards
                                .get(prev.shard)
                                .map(|s: &Shard| s.path.display().to_string())
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
            shards.push(Shard {
                path: path.clone(),
                mmap,
            });
        }
        Ok(SafetensorsWeights { shards, tensors })
    }
}

fn decode<T: Send, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .par_chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

impl WeightSource for SafetensorsWeights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor, LoadError> {
        let Some(e) = self.tensors.get(name) else {
            let path = match self.shards.as_slice() {
                [one] => one.path.clone(),
                _ => self
                    .shards
                    .first()
                    .and_then(|s| s.path.parent())
                    .map(|d| d.join(INDEX_FILE))
                    .unwrap_or_default(),
            };
            return Err(LoadError::MissingTensor {
                path,
                tensor: name.to_string(),
            });
        };
        let shard = &self.shards[e.shard];
        check_shape(&shard.path, name, shape, &e.shape)?;
        // Range validated against the file size by read_metadata.
        let bytes = &shard.mmap[e.start..e.end];
        let data = match e.dtype {
            Dtype::F32 => TensorData::F32(decode(bytes, f32::from_le_bytes)),
            Dtype::F16 => TensorData::F16(decode(bytes, half::f16::from_le_bytes)),
            Dtype::BF16 => TensorData::BF16(decode(bytes, half::bf16::from_le_bytes)),
            other => {
                return Err(LoadError::UnsupportedDType {
                    path: shard.path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(HostTensor {
            shape: shape.to_vec(),
            data,
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().cloned().collect();
        names.sort();
        names
    }

    fn describe(&self) -> String {
        let first = self
            .shards
            .first()
            .map(|s| s.path.display().to_string())
            .unwrap_or_default();
        format!(
            "safetensors {first}{} ({} tensors)",
            match self.shards.len() {
                1 => String::new(),
                n => format!(" and {} more shards", n - 1),
            },
            self.tensors.len()
        )
    }
}

/// Writes a safetensors file, for tests: (name, dtype name, shape, raw bytes).
#[doc(hidden)]
pub fn write_for_tests(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    for (_, _, _, data) in tensors {
        out.extend(data);
    }
    std::fs::write(path, out).expect("write test safetensors");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pagoda-st-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn single_file_all_dtypes() {
        let d = temp_dir("single");
        let bf: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let hf: Vec<u8> = [0.25f32, 3.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        write_for_tests(
            &d.join(SINGLE_FILE),
            &[
                ("a", "F32", vec![2, 2], f32s(&[1.0, 2.0, 3.0, 4.0])),
                ("b", "BF16", vec![2], bf),
                ("c", "F16", vec![2], hf),
                ("i", "I64", vec![1], vec![0; 8]),
            ],
        );
        let w = SafetensorsWeights::open_dir(&d).unwrap();
        assert_eq!(
            w.get("a", &[2, 2]).unwrap().to_f32(),
            vec![1.0, 2.0, 3.0, 4.0]
        );
        let b = w.get("b", &[2]).unwrap();
        assert!(matches!(b.data, TensorData::BF16(_)));
        assert_eq!(b.to_f32(), vec![1.5, -2.0]);
        assert_eq!(w.get("c", &[2]).unwrap().to_f32(), vec![0.25, 3.0]);
        let msg = w.get("i", &[1]).unwrap_err().to_string();
        assert!(
            msg.contains("\"i\"") && msg.contains("I64") && msg.contains(SINGLE_FILE),
            "{msg}"
        );
        let msg = w.get("a", &[4]).unwrap_err().to_string();
        assert!(
            msg.contains("[2, 2]") && msg.contains("[4]") && msg.contains("\"a\""),
            "{msg}"
        );
        let msg = w.get("zzz", &[4]).unwrap_err().to_string();
        assert!(msg.contains("zzz") && msg.contains(SINGLE_FILE), "{msg}");
        assert_eq!(w.tensor_names(), vec!["a", "b", "c", "i"]);
        assert!(w.contains("a") && !w.contains("zzz"));
    }

    #[test]
    fn sharded_with_index() {
        let d = temp_dir("sharded");
        write_for_tests(
            &d.join("s1.safetensors"),
            &[("x", "F32", vec![1], f32s(&[1.0]))],
        );
        write_for_tests(
            &d.join("s2.safetensors"),
            &[("y", "F32", vec![1], f32s(&[2.0]))],
        );
        std::fs::write(
            d.join(INDEX_FILE),
            r#"{"metadata": {}, "weight_map": {"x": "s1.safetensors", "y": "s2.safetensors"}}"#,
        )
        .unwrap();
        let w = SafetensorsWeights::open_dir(&d).unwrap();
        assert_eq!(w.get("y", &[1]).unwrap().to_f32(), vec![2.0]);
        assert!(w.describe().contains("1 more shards"), "{}", w.describe());

        std::fs::write(
            d.join(INDEX_FILE),
            r#"{"weight_map": {"x": "s1.safetensors", "y": "s1.safetensors"}}"#,
        )
        .unwrap();
        let msg = SafetensorsWeights::open_dir(&d).unwrap_err().to_string();
        assert!(
            msg.contains("\"y") && msg.contains("s1.safetensors"),
            "{msg}"
        );

        std::fs::write(
            d.join(INDEX_FILE),
            r#"{"weight_map": {"x": "gone.safetensors"}}"#,
        )
        .unwrap();
        let msg = SafetensorsWeights::open_dir(&d).unwrap_err().to_string();
        assert!(
            msg.contains("gone.safetensors") && msg.contains("not found"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let d = temp_dir("corrupt");
        let p = d.join(SINGLE_FILE);
        write_for_tests(&p, &[("a", "F32", vec![4], f32s(&[1.0, 2.0, 3.0, 4.0]))]);
        let full = std::fs::read(&p).unwrap();
        for cut in [0, 4, 8, 20, full.len() - 1] {
            std::fs::write(&p, &full[..cut]).unwrap();
            let msg = match SafetensorsWeights::open_dir(&d) {
                Ok(_) => panic!("cut at {cut} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(msg.contains(SINGLE_FILE), "{msg}");
        }
        std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
        assert!(SafetensorsWeights::open_dir(&d).is_err());
        std::fs::remove_file(&p).unwrap();
        let msg = SafetensorsWeights::open_dir(&d).unwrap_err().to_string();
        assert!(msg.contains("no model.safetensors"), "{msg}");
    }
}
