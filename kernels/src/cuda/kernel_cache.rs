//! CUBINs from NVRTC kept on disk, so that a restart on the same GPU model
//! loads its kernels instead of compiling them again (seconds at start-up).
//!
//! An entry is two files: `<stem>.cubin` and `<stem>.key`, the key being the
//! whole input of the compile (crate version, architecture, NVRTC version,
//! options, header and source text). An entry is used only when its key file
//! equals the expected key byte for byte, so a hash collision or a stale
//! entry can only cost a compile, never load a wrong kernel. Every cache
//! failure is ignored: the kernels are compiled as if there were no cache.

use std::path::{Path, PathBuf};

use super::nvrtc::{compile_all, compile_options, CompiledUnit};
use super::sources::{CompileUnit, COMMON_HEADER};
use super::CudaError;

pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$PAGODA_KERNEL_CACHE` (empty or `off`: no cache), else
    /// `$PAGODA_HOME/kernels`, else `$HOME/.cache/pagoda/kernels`.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(&|k| std::env::var(k).ok())
    }

    pub fn from_vars(env: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        if let Some(d) = env("PAGODA_KERNEL_CACHE") {
            return (!d.is_empty() && d != "off").then(|| Self::new(d));
        }
        if let Some(h) = env("PAGODA_HOME").filter(|h| !h.is_empty()) {
            return Some(Self::new(Path::new(&h).join("kernels")));
        }
        let home = env("HOME").filter(|h| !h.is_empty())?;
        Some(Self::new(Path::new(&home).join(".cache/pagoda/kernels")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything the CUBIN depends on.
    pub fn key(unit: &CompileUnit, arch: &str, nvrtc: (i32, i32)) -> String {
        format!(
            "pagoda-kernels {}\narch {arch}\nnvrtc {}.{}\noptions {:?}\n--- {}\n{}\n--- {}\n{}",
            env!("CARGO_PKG_VERSION"),
            nvrtc.0,
            nvrtc.1,
            compile_options(unit, arch, None, false),
            COMMON_HEADER.0,
            COMMON_HEADER.1,
            unit.source.file,
            unit.source.code,
        )
    }

    fn stem(unit: &CompileUnit, key: &str) -> String {
        // FNV-1a: the same in every build (only names files; keys decide).
        let h = key.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        format!("{}-{h:016x}", unit.name)
    }

    /// The cached CUBIN of `unit`, when its key matches.
    pub fn load(&self, unit: &CompileUnit, arch: &str, nvrtc: (i32, i32)) -> Option<CompiledUnit> {
        let key = Self::key(unit, arch, nvrtc);
        let stem = Self::stem(unit, &key);
        let stored = std::fs::read(self.dir.join(format!("{stem}.key"))).ok()?;
        if stored != key.as_bytes() {
            return None;
        }
        let cubin = std::fs::read(self.dir.join(format!("{stem}.cubin"))).ok()?;
        (!cubin.is_empty()).then(|| CompiledUnit {
            name: unit.name.clone(),
            cubin,
            log: String::new(),
        })
    }

    /// Stores a CUBIN: each file written aside and renamed into place, the
    /// key last, so a present key always has its complete CUBIN.
    pub fn store(
        &self,
        unit: &CompileUnit,
        arch: &str,
        nvrtc: (i32, i32),
        compiled: &CompiledUnit,
    ) -> std::io::Result<()> {
        let key = Self::key(unit, arch, nvrtc);
        let stem = Self::stem(unit, &key);
        std::fs::create_dir_all(&self.dir)?;
        let pid = std::process::id();
        for (ext, bytes) in [
            ("cubin", compiled.cubin.as_slice()),
            ("key", key.as_bytes()),
        ] {
            let tmp = self.dir.join(format!("{stem}.{ext}.{pid}.tmp"));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, self.dir.join(format!("{stem}.{ext}")))?;
        }
        Ok(())
    }
}

/// `compile_all`, taking what `cache` holds and storing what it compiles.
/// Returns the units in order and how many came from the cache.
pub fn compile_all_cached(
    units: &[CompileUnit],
    arch: &str,
    nvrtc: (i32, i32),
    threads: usize,
    cache: Option<&KernelCache>,
) -> Result<(Vec<CompiledUnit>, usize), CudaError> {
    let mut found: Vec<Option<CompiledUnit>> = units
        .iter()
        .map(|u| cache.and_then(|c| c.load(u, arch, nvrtc)))
        .collect();
    let hits = found.iter().filter(|f| f.is_some()).count();
    let missing: Vec<CompileUnit> = units
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(u, _)| u.clone())
        .collect();
    let mut compiled = compile_all(&missing, arch, threads)?.into_iter();
    for (unit, slot) in units.iter().zip(found.iter_mut()) {
        if slot.is_none() {
            let Some(c) = compiled.next() else {
                return Err(CudaError::invalid(
                    "kernel cache",
                    "a unit was not compiled",
                ));
            };
            if let Some(cache) = cache {
                // A cache that cannot be written only costs the next start.
                let _ = cache.store(unit, arch, nvrtc, &c);
            }
            *slot = Some(c);
        }
    }
    Ok((found.into_iter().flatten().collect(), hits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::sources::compile_units;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pagoda-kcache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keys_change_with_every_input() {
        let units = compile_units(&[64, 128]);
        let (a, b) = (&units[0], &units[1]);
        let k = KernelCache::key(a, "sm_90", (12, 9));
        assert_ne!(k, KernelCache::key(a, "sm_80", (12, 9)));
        assert_ne!(k, KernelCache::key(a, "sm_90", (13, 0)));
        assert_ne!(k, KernelCache::key(b, "sm_90", (12, 9)));
        assert!(k.contains(a.source.code));
    }

    #[test]
    fn stores_and_loads_only_an_exact_key() {
        let dir = temp_dir("roundtrip");
        let cache = KernelCache::new(&dir);
        let unit = &compile_units(&[128])[0];
        assert!(cache.load(unit, "sm_90", (12, 9)).is_none());
        let c = CompiledUnit {
            name: unit.name.clone(),
            cubin: vec![1, 2, 3],
            log: "log".into(),
        };
        cache.store(unit, "sm_90", (12, 9), &c).unwrap();
        assert_eq!(
            cache.load(unit, "sm_90", (12, 9)).unwrap().cubin,
            vec![1, 2, 3]
        );
        assert!(cache.load(unit, "sm_90", (12, 8)).is_none());
        // A key file that differs (a collision, a truncated write) is a miss.
        let key = KernelCache::key(unit, "sm_90", (12, 9));
        let stem = KernelCache::stem(unit, &key);
        std::fs::write(dir.join(format!("{stem}.key")), "other").unwrap();
        assert!(cache.load(unit, "sm_90", (12, 9)).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cache_folder_comes_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let dir = |vars| KernelCache::from_vars(&env(vars)).map(|c| c.dir().to_path_buf());
        assert_eq!(dir(&[("PAGODA_KERNEL_CACHE", "/k")]), Some("/k".into()));
        assert_eq!(dir(&[("PAGODA_KERNEL_CACHE", "off"), ("HOME", "/h")]), None);
        assert_eq!(dir(&[("PAGODA_KERNEL_CACHE", "")]), None);
        assert_eq!(
            dir(&[("PAGODA_HOME", "/p"), ("HOME", "/h")]),
            Some("/p/kernels".into())
        );
        assert_eq!(
            dir(&[("HOME", "/h")]),
            Some("/h/.cache/pagoda/kernels".into())
        );
        assert_eq!(dir(&[]), None);
    }
}
