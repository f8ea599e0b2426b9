//! Split GGUF models, as llama.cpp's `gguf-split` writes them:
//! `name-00001-of-00003.gguf`, ... The first shard holds the model's
//! metadata; every shard holds `split.no` (0-based), `split.count`,
//! `split.tensors.count` (the total) and its share of the tensors.
//! [`open_model`] on the first shard opens them all; a folder holding only
//! the shards of one model loads as that model.

use std::path::{Path, PathBuf};

use super::gguf::GgufFile;
use super::LoadError;

const KEY_NO: &str = "split.no";
const KEY_COUNT: &str = "split.count";
const KEY_TENSORS: &str = "split.tensors.count";

/// Opens a GGUF model: one file, or from its first shard every shard of a
/// split one, each checked against the first's split keys.
pub fn open_model(path: &Path) -> Result<GgufFile, LoadError> {
    let mut first = GgufFile::open(path)?;
    let Some(split) = SplitInfo::of(&first)? else {
        return Ok(first);
    };
    for (no, shard_path) in split.shard_paths(path)?.into_iter().enumerate().skip(1) {
        let shard = GgufFile::open(&shard_path)?;
        split.check_shard(&shard, no)?;
        first.absorb(shard, no)?;
    }
    split.check_tensor_count(&first)?;
    Ok(first)
}

/// The split keys of a model's first shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SplitInfo {
    count: usize,
    tensors: Option<usize>,
}

impl SplitInfo {
    /// The split of `first`, or None for a single-file model. Opening a
    /// later shard is an error naming the first.
    pub(crate) fn of(first: &GgufFile) -> Result<Option<Self>, LoadError> {
        let count = first.get_u64(KEY_COUNT).unwrap_or(1) as usize;
        if count <= 1 {
            return Ok(None);
        }
        let no = first.get_u64(KEY_NO).unwrap_or(0) as usize;
        if no != 0 {
            let hint = split_name(first.path())
                .map(|(prefix, _, n)| format!(": pass the first, {}", shard_file(&prefix, 1, n)))
                .unwrap_or_default();
            return Err(LoadError::gguf(
                first.path(),
                format!(
                    "this is shard {} of a {count}-file split model{hint}",
                    no + 1
                ),
            ));
        }
        let tensors = first.get_u64(KEY_TENSORS).map(|n| n as usize);
        Ok(Some(SplitInfo { count, tensors }))
    }

    /// Every shard's path, the first's included, from its name.
    pub(crate) fn shard_paths(&self, first: &Path) -> Result<Vec<PathBuf>, LoadError> {
        let (prefix, no, count) = split_name(first).ok_or_else(|| {
            LoadError::gguf(
                first,
                format!(
                    "{KEY_COUNT} is {} but the file name does not end in -00001-of-{:05}.gguf, \
                     so its other shards cannot be found",
                    self.count, self.count
                ),
            )
        })?;
        if no != 1 || count != self.count {
            return Err(LoadError::gguf(
                first,
                format!(
                    "the name says shard {no} of {count}, the metadata shard 1 of {}",
                    self.count
                ),
            ));
        }
        let dir = first.parent().unwrap_or(Path::new(""));
        let paths: Vec<PathBuf> = (1..=count)
            .map(|i| dir.join(shard_file(&prefix, i, count)))
            .collect();
        if let Some(missing) = paths.iter().position(|p| !p.is_file()) {
            return Err(LoadError::NotFound {
                path: paths[missing].clone(),
                what: format!(
                    "shard {} of {count} of {} is missing",
                    missing + 1,
                    first.display()
                ),
            });
        }
        Ok(paths)
    }

    /// Shard `no` carries the same split and its own number.
    pub(crate) fn check_shard(&self, shard: &GgufFile, no: usize) -> Result<(), LoadError> {
        let got = (
            shard.get_u64(KEY_NO).map(|v| v as usize),
            shard.get_u64(KEY_COUNT).map(|v| v as usize),
        );
        if got != (Some(no), Some(self.count)) {
            return Err(LoadError::gguf(
                shard.path(),
                format!(
                    "expected {KEY_NO} {no} and {KEY_COUNT} {}, found {:?} and {:?}",
                    self.count, got.0, got.1
                ),
            ));
        }
        Ok(())
    }

    /// All shards together hold the tensor count the first one announces.
    pub(crate) fn check_tensor_count(&self, model: &GgufFile) -> Result<(), LoadError> {
        let found = model.tensor_infos().len();
        match self.tensors {
            Some(n) if n != found => Err(LoadError::gguf(
                model.path(),
                format!(
                    "{KEY_TENSORS} is {n} but the {} shards hold {found}",
                    self.count
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `prefix-0000k-of-0000n.gguf`.
fn shard_file(prefix: &str, no: usize, count: usize) -> String {
    format!("{prefix}-{no:05}-of-{count:05}.gguf")
}

/// (prefix, shard number from 1, shard count) of a shard's file name.
pub(crate) fn split_name(path: &Path) -> Option<(String, usize, usize)> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".gguf")
        .or_else(|| name.strip_suffix(".GGUF"))?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) {
        return None;
    }
    let (no, count) = (no.parse().ok()?, count.parse().ok()?);
    (no >= 1 && no <= count).then(|| (prefix.to_string(), no, count))
}

/// The first shard when `paths` are exactly the shards of one split model.
pub(crate) fn first_shard_of(paths: &[PathBuf]) -> Option<&PathBuf> {
    let names: Vec<_> = paths.iter().map(|p| split_name(p)).collect::<Option<_>>()?;
    let (prefix, _, count) = names.first()?.clone();
    let mut numbers: Vec<usize> = names
        .iter()
        .filter(|(p, _, c)| *p == prefix && *c == count)
        .map(|&(_, no, _)| no)
        .collect();
    numbers.sort_unstable();
    if numbers.len() != paths.len() || numbers != (1..=count).collect::<Vec<_>>() {
        return None;
    }
    paths
        .iter()
        .zip(&names)
        .find(|(_, n)| n.1 == 1)
        .map(|(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::gguf_writer::encode;
    use crate::weights::GgufValue;

    #[test]
    fn shard_names() {
        let p = Path::new("/m/Qwen3-8B-Q4_K_M-00002-of-00003.gguf");
        assert_eq!(split_name(p), Some(("Qwen3-8B-Q4_K_M".to_string(), 2, 3)));
        for bad in [
            "m.gguf",
            "m-2-of-3.gguf",
            "m-00004-of-00003.gguf",
            "m-00000-of-00003.gguf",
            "m-00001-of-00003.bin",
        ] {
            assert_eq!(split_name(Path::new(bad)), None, "{bad}");
        }
        let shards: Vec<PathBuf> = (1..=3)
            .rev()
            .map(|i| PathBuf::from(shard_file("/m/x", i, 3)))
            .collect();
        assert_eq!(first_shard_of(&shards), Some(&shards[2]));
        assert_eq!(first_shard_of(&shards[..2]), None, "incomplete set");
        let mut mixed = shards.clone();
        mixed.push(PathBuf::from("/m/other.gguf"));
        assert_eq!(first_shard_of(&mixed), None);
    }

    /// Writes `n` shards of a 3-tensor model into a fresh folder; shard
    /// `i` holds tensor `i % 3`s. `edit` may change a shard's metadata.
    fn write_split(
        tag: &str,
        n: usize,
        edit: impl Fn(usize, &mut Vec<(&'static str, GgufValue)>),
    ) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pagoda-split-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let mut meta: Vec<(&str, GgufValue)> = vec![
                (KEY_NO, GgufValue::U16(i as u16)),
                (KEY_COUNT, GgufValue::U16(n as u16)),
                (KEY_TENSORS, GgufValue::I32(3)),
            ];
            if i == 0 {
                meta.push(("general.architecture", GgufValue::String("llama".into())));
            }
            edit(i, &mut meta);
            let tensors: Vec<_> = (0..3)
                .filter(|t| t % n == i)
                .map(|t| {
                    let bytes = (0..4).flat_map(|k| ((t * 4 + k) as f32).to_le_bytes());
                    (format!("t{t}"), vec![4u64], 0u32, bytes.collect())
                })
                .collect();
            let path = dir.join(shard_file("model", i + 1, n));
            std::fs::write(path, encode(3, &meta, &tensors)).unwrap();
        }
        dir
    }

    #[test]
    fn a_split_model_opens_from_its_first_shard() {
        let dir = write_split("ok", 2, |_, _| {});
        let first = dir.join(shard_file("model", 1, 2));
        let f = open_model(&first).unwrap();
        assert_eq!(f.shard_paths().len(), 2);
        assert_eq!(f.architecture(), Some("llama"));
        for t in 0..3 {
            let info = f.tensor_info(&format!("t{t}")).unwrap();
            assert_eq!(info.shard, t % 2);
            let want: Vec<u8> = (0..4)
                .flat_map(|k| ((t * 4 + k) as f32).to_le_bytes())
                .collect();
            assert_eq!(f.tensor_bytes(info).unwrap(), &want[..]);
        }
        let err = open_model(&dir.join(shard_file("model", 2, 2)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shard 2 of a 2-file") && err.contains("model-00001-of-00002.gguf"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn broken_splits_are_named() {
        // Opens the first of `count` shards; the error's text, folder removed.
        let error_of = |dir: std::path::PathBuf, count| {
            let err = open_model(&dir.join(shard_file("model", 1, count)))
                .unwrap_err()
                .to_string();
            std::fs::remove_dir_all(&dir).ok();
            err
        };
        let dir = write_split("missing", 3, |_, _| {});
        std::fs::remove_file(dir.join(shard_file("model", 3, 3))).unwrap();
        let err = error_of(dir, 3);
        assert!(err.contains("model-00003-of-00003.gguf"), "{err}");

        let dir = write_split("count", 2, |i, meta| {
            if i == 0 {
                meta[2].1 = GgufValue::I32(4);
            }
        });
        let err = error_of(dir, 2);
        assert!(err.contains("split.tensors.count is 4"), "{err}");

        let dir = write_split("number", 2, |i, meta| {
            if i == 1 {
                meta[0].1 = GgufValue::U16(0);
            }
        });
        let err = error_of(dir, 2);
        assert!(err.contains("expected split.no 1"), "{err}");
    }
}
