//! GGUF (llama.cpp's single-file format) parser: header, metadata key/values,
//! tensor infos, and the memory-mapped data section.
//!
//! Layout (v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count,
//! u64 metadata count, the metadata (string key, u32 type, value), the tensor
//! infos (string name, u32 n_dims, u64 dims[n_dims] fastest-first, u32 ggml
//! type, u64 offset into the data section), then padding to
//! `general.alignment` (default 32) and the data. Every read is bounds-checked
//! so a truncated or corrupt file is an error, never a panic or a huge
//! allocation.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use super::ggml_type::GgmlType;
use super::LoadError;

/// One metadata value. Arrays hold values of a single type.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer type that fits in a u64 (GGUF writers differ in the width
    /// they use for counts and ids).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type that fits in an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any float or integer type, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lies in the file.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml's `ne`: the fastest-varying dimension first (the reverse of the
    /// row-major shape).
    pub dims: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte offset from the start of its file (already absolute).
    pub offset: usize,
    /// Which file of a split model holds it (0 for a single file).
    pub shard: usize,
    /// Byte length; None for a type whose layout this build does not know.
    pub nbytes: Option<usize>,
}

impl GgufTensorInfo {
    /// Row-major shape (dims reversed), as HF and the rest of Pagoda use.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// An opened, parsed, memory-mapped GGUF model: one file, or the shards
/// of a split one (`-00001-of-0000N.gguf`, llama.cpp's `gguf-split`), whose
/// first file holds the metadata and every file some of the tensors.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: usize,
    /// One map per shard, indexed by `GgufTensorInfo::shard`.
    mmaps: Vec<Mmap>,
    shard_paths: Vec<PathBuf>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

const DEFAULT_ALIGNMENT: usize = 32;

impl GgufFile {
    /// Opens one GGUF file (a split model's shards: `gguf_split::open_model`).
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
        // SAFETY: the map is read-only; as with every mmap loader (llama.cpp,
        // safetensors), the file must not be truncated while it is mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?;
        Self::parse(path, mmap)
    }

    /// Takes shard `no`'s tensors (its metadata is only the split keys).
    pub(crate) fn absorb(&mut self, shard: GgufFile, no: usize) -> Result<(), LoadError> {
        let GgufFile {
            tensors,
            mut mmaps,
            mut shard_paths,
            ..
        } = shard;
        let path = shard_paths.remove(0);
        for mut info in tensors {
            info.shard = no;
            if self
                .tensor_index
                .insert(info.name.clone(), self.tensors.len())
                .is_some()
            {
                return Err(LoadError::gguf(
                    &path,
                    format!("tensor {:?}: also in an earlier shard", info.name),
                ));
            }
            self.tensors.push(info);
        }
        self.mmaps.push(mmaps.remove(0));
        self.shard_paths.push(path);
        Ok(())
    }

    /// The files of the model, first to last (one unless it is split).
    pub fn shard_paths(&self) -> &[PathBuf] {
        &self.shard_paths
    }

    /// Header, metadata, tensor infos, then each tensor placed in the data
    /// section; every step bounds-checked against the file.
    fn parse(path: &Path, mmap: Mmap) -> Result<Self, LoadError> {
        let mut r = Reader {
            buf: &mmap,
            pos: 0,
            path,
        };
        let (version, n_tensors, n_kv) = read_header(&mut r)?;
        let (metadata, metadata_index) = read_metadata(&mut r, n_kv)?;
        let alignment = alignment_of(path, &metadata, &metadata_index)?;
        let raw = read_tensor_infos(&mut r, n_tensors)?;
        let data_start = r.pos.div_ceil(alignment) * alignment;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for t in raw {
            let info = t.locate(path, data_start, mmap.len())?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                return Err(LoadError::gguf(
                    path,
                    format!("tensor {:?}: appears twice", info.name),
                ));
            }
            tensors.push(info);
        }

        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            mmaps: vec![mmap],
            shard_paths: vec![path.to_path_buf()],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> usize {
        self.alignment
    }

    pub fn metadata(&self, key: &str) -> Option<&GgufValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All metadata, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &GgufValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// `general.architecture` ("llama", "qwen2", ...).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.metadata(key)?.as_str()
    }

    /// An integer key of any width, if it fits in a u32.
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.metadata(key)?
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.metadata(key)?.as_u64()
    }

    /// A float key (f32 or f64; integers are accepted too).
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.metadata(key)?.as_f64().map(|v| v as f32)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.metadata(key)?.as_bool()
    }

    /// An array of strings (None if absent or if any element is not a string).
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.metadata(key)?
            .as_array()?
            .iter()
            .map(GgufValue::as_str)
            .collect()
    }

    /// An array of integers, each fitting in an i32.
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.metadata(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_i64().and_then(|x| i32::try_from(x).ok()))
            .collect()
    }

    /// An array of numbers, as f32.
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.metadata(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32))
            .collect()
    }

    /// Length of an array key without copying it.
    pub fn array_len(&self, key: &str) -> Option<usize> {
        self.metadata(key)?.as_array().map(<[GgufValue]>::len)
    }

    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor, as stored (quantized blocks).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8], LoadError> {
        let n = info.nbytes.ok_or_else(|| LoadError::UnsupportedQuant {
            path: self.path.clone(),
            tensor: info.name.clone(),
            ggml_type: info.ggml_type.name(),
            supported: super::gguf_dequant::SUPPORTED_TYPES,
        })?;
        // Bounds were checked at open, against the tensor's own shard.
        Ok(&self.mmaps[info.shard][info.offset..info.offset + n])
    }

    /// The tensor dequantized to f32, in ggml order (= row-major of `shape()`).
    pub fn dequantize(&self, info: &GgufTensorInfo) -> Result<Vec<f32>, LoadError> {
        let bytes = self.tensor_bytes(info)?;
        super::gguf_dequant::dequantize(info.ggml_type, bytes, info.numel()).ok_or_else(|| {
            LoadError::UnsupportedQuant {
                path: self.path.clone(),
                tensor: info.name.clone(),
                ggml_type: info.ggml_type.name(),
                supported: super::gguf_dequant::SUPPORTED_TYPES,
            }
        })
    }
}

fn prefix_error(e: LoadError, prefix: &str) -> LoadError {
    match e {
        LoadError::Gguf { path, msg } => LoadError::Gguf {
            path,
            msg: format!("{prefix}{msg}"),
        },
        other => other,
    }
}

/// Magic and version; returns (version, tensor count, metadata count). The
/// counts are checked against the file size: each key/value takes at least
/// 12 bytes and each tensor info 24, so a larger count is corruption, not a
/// reason to reserve gigabytes.
fn read_header(r: &mut Reader<'_>) -> Result<(u32, u64, u64), LoadError> {
    let path = r.path;
    let magic = r.bytes(4, "magic")?;
    if magic != b"GGUF" {
        return Err(LoadError::gguf(
            path,
            format!("bad magic {magic:?}, expected \"GGUF\" (is this a GGUF file?)"),
        ));
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(LoadError::gguf(
                path,
                "big-endian GGUF files are not supported",
            ))
        }
        v => {
            return Err(LoadError::gguf(
                path,
                format!("GGUF version {v} is not supported (2 or 3)"),
            ))
        }
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;
    r.check_count(n_kv, 12, "metadata count")?;
    r.check_count(n_tensors, 24, "tensor count")?;
    Ok((version, n_tensors, n_kv))
}

type Metadata = (Vec<(String, GgufValue)>, HashMap<String, usize>);

/// The metadata key/values in file order, plus an index by key.
fn read_metadata(r: &mut Reader<'_>, n_kv: u64) -> Result<Metadata, LoadError> {
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut metadata_index = HashMap::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let ty = r.u32("metadata value type")?;
        let value = r
            .value(ty, 0)
            .map_err(|e| prefix_error(e, &format!("metadata {key:?}: ")))?;
        metadata_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    Ok((metadata, metadata_index))
}

/// `general.alignment` (default 32): where the data section starts.
fn alignment_of(
    path: &Path,
    metadata: &[(String, GgufValue)],
    index: &HashMap<String, usize>,
) -> Result<usize, LoadError> {
    let Some(&i) = index.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match metadata[i].1.as_u64() {
        Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => Ok(a as usize),
        _ => Err(LoadError::gguf(
            path,
            format!(
                "general.alignment {:?} is not a power of two",
                metadata[i].1
            ),
        )),
    }
}

/// A tensor info as stored: its offset is still relative to the data
/// section, whose start is known only after the last info.
struct RawTensorInfo {
    name: String,
    dims: Vec<usize>,
    ggml_type: GgmlType,
    rel_offset: u64,
}

fn read_tensor_infos(r: &mut Reader<'_>, n_tensors: u64) -> Result<Vec<RawTensorInfo>, LoadError> {
    let path = r.path;
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.string("tensor name")?;
        let n_dims = r.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > 4 {
            return Err(LoadError::gguf(
                path,
                format!("tensor {name:?} has {n_dims} dimensions (1 to 4 allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64("tensor dimension")?;
            dims.push(usize::try_from(d).map_err(|_| {
                LoadError::gguf(path, format!("tensor {name:?} dimension {d} too large"))
            })?);
        }
        let ggml_type = GgmlType::from_id(r.u32("tensor type")?);
        let rel_offset = r.u64("tensor offset")?;
        raw.push(RawTensorInfo {
            name,
            dims,
            ggml_type,
            rel_offset,
        });
    }
    Ok(raw)
}

impl RawTensorInfo {
    /// Places the tensor in the file: its size from the type's block
    /// layout, its absolute offset, and a check that it ends inside the file.
    fn locate(
        self,
        path: &Path,
        data_start: usize,
        file_len: usize,
    ) -> Result<GgufTensorInfo, LoadError> {
        let bad = |msg: String| LoadError::gguf(path, format!("tensor {:?}: {msg}", self.name));
        let numel = self
            .dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("dimensions {:?} overflow", self.dims)))?;
        let nbytes = match self.ggml_type.block_layout() {
            None => None,
            Some((block, type_size)) => {
                if !self.dims[0].is_multiple_of(block) {
                    return Err(bad(format!(
                        "row length {} is not a multiple of the {} block size {block}",
                        self.dims[0],
                        self.ggml_type.name()
                    )));
                }
                Some(
                    (numel / block)
                        .checked_mul(type_size)
                        .ok_or_else(|| bad("size overflows".into()))?,
                )
            }
        };
        let offset = usize::try_from(self.rel_offset)
            .ok()
            .and_then(|o| o.checked_add(data_start))
            .ok_or_else(|| bad(format!("offset {} out of range", self.rel_offset)))?;
        if let Some(n) = nbytes {
            let end = offset.checked_add(n);
            if end.is_none_or(|e| e > file_len) {
                return Err(bad(format!(
                    "data [{offset}, {offset}+{n}) lies past the end of the file ({file_len} \
                     bytes): the file is truncated"
                )));
            }
        }
        Ok(GgufTensorInfo {
            name: self.name,
            dims: self.dims,
            ggml_type: self.ggml_type,
            offset,
            shard: 0,
            nbytes,
        })
    }
}

/// A bounds-checked little-endian cursor over the mapped file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

/// Nested arrays deeper than this are corruption (real files use depth 1).
const MAX_ARRAY_DEPTH: usize = 4;

impl<'a> Reader<'a> {
    fn truncated(&self, what: &str) -> LoadError {
        LoadError::gguf(
            self.path,
            format!(
                "unexpected end of file at byte {} (of {}) while reading {what}",
                self.pos,
                self.buf.len()
            ),
        )
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], LoadError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], LoadError> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, LoadError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, LoadError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Errors when `count` items of at least `min_size` bytes cannot fit in
    /// what is left of the file.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<(), LoadError> {
        let left = (self.buf.len() - self.pos) as u64;
        if count.saturating_mul(min_size) > left {
            return Err(LoadError::gguf(
                self.path,
                format!("{what} {count} cannot fit in the {left} bytes left: truncated or corrupt"),
            ));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, LoadError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).map_err(|_| self.truncated(what))?;
        let b = self.bytes(len, what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            // Some converters wrote invalid UTF-8 in token strings; keep going.
            Err(_) => Ok(String::from_utf8_lossy(b).into_owned()),
        }
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue, LoadError> {
        use GgufValue as V;
        Ok(match ty {
            0 => V::U8(self.array::<1>("u8")?[0]),
            1 => V::I8(self.array::<1>("i8")?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => V::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => V::U32(self.u32("u32")?),
            5 => V::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => V::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => match self.array::<1>("bool")?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => {
                    return Err(LoadError::gguf(
                        self.path,
                        format!("bool value {b} at byte {}", self.pos - 1),
                    ))
                }
            },
            8 => V::String(self.string("string")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(LoadError::gguf(self.path, "arrays nested too deeply"));
                }
                let elem_ty = self.u32("array element type")?;
                let len = self.u64("array length")?;
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => {
                        return Err(LoadError::gguf(
                            self.path,
                            format!("unknown array element type {t}"),
                        ))
                    }
                };
                self.check_count(len, min_size, "array length")?;
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(self.u64("u64")?),
            11 => V::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => V::F64(f64::from_le_bytes(self.array("f64")?)),
            t => {
                return Err(LoadError::gguf(
                    self.path,
                    format!("unknown metadata value type {t}"),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::gguf_writer::encode;
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pagoda-gguf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn sample() -> Vec<u8> {
        let meta = vec![
            ("general.architecture", GgufValue::String("llama".into())),
            ("llama.block_count", GgufValue::U32(2)),
            ("llama.rope.freq_base", GgufValue::F32(1e4)),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Array(vec![
                    GgufValue::String("a".into()),
                    GgufValue::String("b".into()),
                ]),
            ),
            (
                "tokenizer.ggml.token_type",
                GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(3)]),
            ),
            ("flag", GgufValue::Bool(true)),
        ];
        let f32s: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        encode(3, &meta, &[("w".into(), vec![3, 2], 0, f32s)])
    }

    #[test]
    fn parses_metadata_and_tensors() {
        let p = temp_file("ok.gguf", &sample());
        let g = GgufFile::open(&p).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.get_u32("llama.block_count"), Some(2));
        assert_eq!(g.get_f32("llama.rope.freq_base"), Some(1e4));
        assert_eq!(
            g.get_str_array("tokenizer.ggml.tokens"),
            Some(vec!["a", "b"])
        );
        assert_eq!(
            g.get_i32_array("tokenizer.ggml.token_type"),
            Some(vec![1, 3])
        );
        assert_eq!(g.get_bool("flag"), Some(true));
        let keys: Vec<&str> = g.metadata_entries().map(|(k, _)| k).collect();
        assert_eq!(keys[0], "general.architecture");
        let info = g.tensor_info("w").unwrap();
        assert_eq!(info.shape(), vec![2, 3]);
        assert_eq!(
            g.dequantize(info).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let p = temp_file("cut.gguf", &bytes[..cut]);
            let err = GgufFile::open(&p).expect_err(&format!("cut at {cut}"));
            let msg = err.to_string();
            assert!(msg.contains("cut.gguf"), "{msg}");
        }
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let mut bad_magic = sample();
        bad_magic[0] = b'X';
        let mut v1 = sample();
        v1[4] = 1;
        let mut huge_count = sample();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut huge_kv = sample();
        huge_kv[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        for (name, bytes, needle) in [
            ("magic.gguf", bad_magic, "magic"),
            ("v1.gguf", v1, "version 1"),
            ("count.gguf", huge_count, "tensor count"),
            ("kv.gguf", huge_kv, "metadata count"),
        ] {
            let p = temp_file(name, &bytes);
            let msg = GgufFile::open(&p).unwrap_err().to_string();
            assert!(msg.contains(needle) && msg.contains(name), "{msg}");
        }
        let missing = std::env::temp_dir().join("pagoda-no-such-file.gguf");
        let err = GgufFile::open(&missing).unwrap_err();
        assert!(matches!(err, LoadError::NotFound { .. }), "{err}");
    }

    #[test]
    fn unknown_tensor_type_fails_only_when_read() {
        let meta = [("general.architecture", GgufValue::String("llama".into()))];
        let bytes = encode(3, &meta, &[("odd".into(), vec![4], 99, vec![0; 16])]);
        let p = temp_file("odd.gguf", &bytes);
        let g = GgufFile::open(&p).unwrap();
        let err = g.dequantize(g.tensor_info("odd").unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("odd") && msg.contains("unknown type id 99"),
            "{msg}"
        );
        // A known type that cannot be dequantized names the type.
        let bytes = encode(3, &meta, &[("iq".into(), vec![256], 16, vec![0; 66])]);
        let p = temp_file("iq.gguf", &bytes);
        let g = GgufFile::open(&p).unwrap();
        let msg = g
            .dequantize(g.tensor_info("iq").unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("IQ2_XXS") && msg.contains("\"iq\""), "{msg}");
    }

    #[test]
    fn alignment_is_honoured() {
        let meta = [("general.alignment", GgufValue::U32(64))];
        let data: Vec<u8> = [7.0f32; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = encode(
            2,
            &meta,
            &[
                ("a".into(), vec![4], 0, data.clone()),
                ("b".into(), vec![4], 0, data),
            ],
        );
        let p = temp_file("align.gguf", &bytes);
        let g = GgufFile::open(&p).unwrap();
        assert_eq!(g.alignment(), 64);
        for t in g.tensor_infos() {
            assert_eq!(t.offset % 64, 0);
            assert_eq!(g.dequantize(t).unwrap(), vec![7.0; 4]);
        }
    }
}
