//! Finding the CUDA shared libraries without letting cudarc panic.
//!
//! cudarc (dynamic loading) `dlopen`s libraries by bare name only:
//! `libnvrtc.so`, …, `libnvrtc.so.{its CUDA major}`, `libnvrtc.so.12`,
//! `.so.11`, … (see `cudarc::get_lib_name_candidates`), so it finds what the
//! loader path (LD_LIBRARY_PATH, ld.so.cache, RUNPATH) holds, and panics if
//! nothing is there. Here we first ask cudarc's `is_culib_present()`; when
//! that fails we look in the usual folders ($PAGODA_*_LIB, $CUDA_HOME,
//! /usr/local/cuda, the pip `nvidia/*/lib` folders next to
//! $CUDA_INCLUDE_DIR), `dlopen` the file found by its full path and keep it
//! loaded: the loader then answers cudarc's bare-name `dlopen` with it (an
//! already loaded object matches by SONAME), and `is_culib_present()` is
//! asked again to confirm.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::CudaError;

/// A CUDA library cudarc loads by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaLibrary {
    Nvrtc,
    Cublas,
}

impl CudaLibrary {
    /// cudarc's base name (`lib{name}.so…`).
    pub fn base_name(self) -> &'static str {
        match self {
            CudaLibrary::Nvrtc => "nvrtc",
            CudaLibrary::Cublas => "cublas",
        }
    }

    /// Environment variable naming the library file or its folder.
    pub fn env_var(self) -> &'static str {
        match self {
            CudaLibrary::Nvrtc => "PAGODA_NVRTC_LIB",
            CudaLibrary::Cublas => "PAGODA_CUBLAS_LIB",
        }
    }

    /// The pip wheel folder (`site-packages/nvidia/<dir>/lib`).
    fn pip_dir(self) -> &'static str {
        match self {
            CudaLibrary::Nvrtc => "cuda_nvrtc",
            CudaLibrary::Cublas => "cublas",
        }
    }

    fn present(self) -> bool {
        // SAFETY: only probes dlopen with cudarc's candidate names.
        unsafe {
            match self {
                CudaLibrary::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                CudaLibrary::Cublas => cudarc::cublas::sys::is_culib_present(),
            }
        }
    }
}

/// The file names cudarc tries for `base` (e.g. `libnvrtc.so.13`, `libnvrtc.so.12`).
pub fn file_names(base: &str) -> Vec<String> {
    cudarc::get_lib_name_candidates(base)
}

/// Folders to search, in order, from the environment as given.
pub fn search_dirs(lib: CudaLibrary, env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(v) = env(lib.env_var()) {
        let p = PathBuf::from(v);
        dirs.push(if p.is_file() {
            p.parent().map(Path::to_path_buf).unwrap_or(p)
        } else {
            p
        });
    }
    if let Some(inc) = env("CUDA_INCLUDE_DIR") {
        // pip layout: nvidia/cuda_runtime/include -> nvidia/<lib>/lib (and CUDA 13's nvidia/cu13/lib)
        let inc = PathBuf::from(inc);
        if let Some(nvidia) = inc.parent().and_then(Path::parent) {
            dirs.push(nvidia.join(lib.pip_dir()).join("lib"));
            dirs.push(nvidia.join("cu13").join("lib"));
        }
        if let Some(root) = inc.parent() {
            dirs.push(root.join("lib64"));
            dirs.push(root.join("lib"));
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(root) = env(var) {
            dirs.push(PathBuf::from(&root).join("lib64"));
            dirs.push(PathBuf::from(&root).join("lib"));
        }
    }
    if let Some(ld) = env("LD_LIBRARY_PATH") {
        dirs.extend(ld.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs.push(PathBuf::from("/usr/local/cuda/targets/x86_64-linux/lib"));
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let new = !seen.contains(d);
        seen.push(d.clone());
        new
    });
    dirs
}

/// The first existing file among `dirs` × cudarc's names for `base`.
pub fn find_file(base: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let names = file_names(base);
    dirs.iter()
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// Libraries loaded by full path; never unloaded (cudarc keeps using them).
static PRELOADED: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());

fn preload(path: &Path) -> bool {
    // SAFETY: loading a CUDA library runs its initializers, which are benign.
    match unsafe { libloading::Library::new(path) } {
        Ok(lib) => {
            if let Ok(mut v) = PRELOADED.lock() {
                v.push(lib);
            }
            true
        }
        Err(_) => false,
    }
}

/// How a library was made available to cudarc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// cudarc's own bare-name `dlopen` found it (LD_LIBRARY_PATH, ld.so.cache).
    LoaderPath,
    /// Loaded from this file by full path first.
    Preloaded(PathBuf),
}

/// Makes `lib` loadable by cudarc, or says where it looked.
pub fn ensure_loaded(lib: CudaLibrary) -> Result<Found, CudaError> {
    static NVRTC: OnceLock<Result<Found, String>> = OnceLock::new();
    static CUBLAS: OnceLock<Result<Found, String>> = OnceLock::new();
    let cell = match lib {
        CudaLibrary::Nvrtc => &NVRTC,
        CudaLibrary::Cublas => &CUBLAS,
    };
    let result = cell.get_or_init(|| {
        if lib.present() {
            return Ok(Found::LoaderPath);
        }
        let dirs = search_dirs(lib, &|k| std::env::var(k).ok());
        if let Some(path) = find_file(lib.base_name(), &dirs) {
            if lib == CudaLibrary::Cublas {
                // libcublas needs libcublasLt: load it from the same folder first.
                if let Some(lt) = path
                    .parent()
                    .and_then(|d| find_file("cublasLt", &[d.to_path_buf()]))
                {
                    preload(&lt);
                }
            }
            if preload(&path) && lib.present() {
                return Ok(Found::Preloaded(path));
            }
        }
        Err(dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "))
    });
    result
        .clone()
        .map_err(|searched| CudaError::LibraryNotFound {
            library: match lib {
                CudaLibrary::Nvrtc => "libnvrtc (NVRTC)",
                CudaLibrary::Cublas => "libcublas (cuBLAS)",
            },
            env: lib.env_var(),
            searched,
        })
}

/// Whether the CUDA driver library can be loaded (never panics).
pub fn driver_present() -> bool {
    // SAFETY: only probes dlopen with cudarc's candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn cudarc_tries_the_cuda13_name_before_the_cuda12_one() {
        let names = file_names("nvrtc");
        let p13 = names
            .iter()
            .position(|n| n == "libnvrtc.so.13")
            .expect("so.13 tried");
        let p12 = names
            .iter()
            .position(|n| n == "libnvrtc.so.12")
            .expect("so.12 tried");
        assert!(p13 < p12, "{names:?}");
    }

    #[test]
    fn search_order_follows_the_environment() {
        let env = env_of(&[
            ("PAGODA_NVRTC_LIB", "/opt/x/lib"),
            ("CUDA_INCLUDE_DIR", "/py/nvidia/cuda_runtime/include"),
            ("CUDA_HOME", "/cuda"),
            ("LD_LIBRARY_PATH", "/a::/b"),
        ]);
        let dirs = search_dirs(CudaLibrary::Nvrtc, &env);
        let s: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(s[0], "/opt/x/lib");
        assert_eq!(s[1], "/py/nvidia/cuda_nvrtc/lib");
        assert!(s.contains(&"/cuda/lib64".to_string()));
        let a = s.iter().position(|d| d == "/a").unwrap();
        assert!(
            s.contains(&"/b".to_string())
                && a < s.iter().position(|d| d == "/usr/local/cuda/lib64").unwrap()
        );
        let cublas = search_dirs(CudaLibrary::Cublas, &env);
        assert_eq!(
            cublas[0],
            PathBuf::from("/py/nvidia/cublas/lib"),
            "PAGODA_NVRTC_LIB is not cuBLAS's"
        );
    }

    #[test]
    fn search_dirs_are_unique() {
        let env = env_of(&[
            ("CUDA_HOME", "/usr/local/cuda"),
            ("LD_LIBRARY_PATH", "/usr/local/cuda/lib64"),
        ]);
        let dirs = search_dirs(CudaLibrary::Nvrtc, &env);
        let n = dirs
            .iter()
            .filter(|d| d.as_path() == Path::new("/usr/local/cuda/lib64"))
            .count();
        assert_eq!(n, 1);
    }

    #[test]
    fn find_file_picks_a_real_file_by_cudarc_name() {
        let dir = std::env::temp_dir().join(format!("pagoda-libtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(find_file("nvrtc", std::slice::from_ref(&dir)), None);
        std::fs::write(dir.join("libnvrtc.so.12"), b"").unwrap();
        assert_eq!(
            find_file("nvrtc", &[PathBuf::from("/nonexistent"), dir.clone()]),
            Some(dir.join("libnvrtc.so.12"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
