//! Compiling the embedded sources with NVRTC, to a CUBIN for the GPU found
//! (the NVRTC on the running machine, so its output suits that machine's
//! driver). The sources include no CUDA header, so no include path is
//! needed; a CUDA include folder, when one is found, is passed anyway so that
//! local experiments may include toolkit headers.

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::sys::{self, nvrtcProgram, nvrtcResult};

use super::libraries::{ensure_loaded, CudaLibrary};
use super::sources::{CompileUnit, COMMON_HEADER};
use super::CudaError;

/// What NVRTC produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledUnit {
    pub name: String,
    /// `sm_XY` CUBIN (machine code, loaded without a driver JIT).
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings; ptxas statistics when asked).
    pub log: String,
}

/// The `--gpu-architecture` value for a compute capability.
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
}

/// The NVRTC options for one unit.
pub fn compile_options(
    unit: &CompileUnit,
    arch: &str,
    include_dir: Option<&Path>,
    verbose: bool,
) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "--generate-line-info".to_string(),
        "-DNDEBUG".to_string(),
    ];
    for (k, v) in &unit.defines {
        o.push(format!("-D{k}={v}"));
    }
    if let Some(dir) = include_dir {
        o.push(format!("--include-path={}", dir.display()));
    }
    if verbose {
        o.push("--ptxas-options=-v".to_string());
    }
    o
}

/// A CUDA include folder (holding cuda_fp16.h): $CUDA_INCLUDE_DIR,
/// $CUDA_HOME/include, $CUDA_PATH/include, /usr/local/cuda/include.
pub fn find_include_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(d) = env("CUDA_INCLUDE_DIR") {
        cands.push(d.into());
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(r) = env(var) {
            cands.push(PathBuf::from(r).join("include"));
        }
    }
    cands.push("/usr/local/cuda/include".into());
    cands.into_iter().find(|d| d.join("cuda_fp16.h").is_file())
}

/// `(major, minor)` of the NVRTC in use.
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    ensure_loaded(CudaLibrary::Nvrtc)?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); plain out-parameters.
    check(
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) },
        "nvrtcVersion",
        "",
    )?;
    Ok((major, minor))
}

fn check(r: nvrtcResult, what: &str, unit: &str) -> Result<(), CudaError> {
    if r == nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Compile {
            unit: unit.to_string(),
            message: format!("{what} returned {r:?}"),
        })
    }
}

/// Destroys the program on every path out of `compile_unit`.
struct Program(nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a program created by nvrtcCreateProgram, destroyed once.
            unsafe {
                sys::nvrtcDestroyProgram(&mut self.0);
            }
        }
    }
}

fn c_string(s: &str, unit: &str) -> Result<CString, CudaError> {
    CString::new(s).map_err(|_| CudaError::Compile {
        unit: unit.into(),
        message: "NUL byte in input".into(),
    })
}

/// Compiles one unit to a CUBIN for `arch` (e.g. `sm_90`).
pub fn compile_unit(
    unit: &CompileUnit,
    arch: &str,
    verbose: bool,
) -> Result<CompiledUnit, CudaError> {
    ensure_loaded(CudaLibrary::Nvrtc)?;
    let include = find_include_dir(&|k| std::env::var(k).ok());
    let name = unit.name.as_str();
    let src = c_string(unit.source.code, name)?;
    let file = c_string(unit.source.file, name)?;
    let header = c_string(COMMON_HEADER.1, name)?;
    let header_name = c_string(COMMON_HEADER.0, name)?;
    let headers = [header.as_ptr()];
    let header_names = [header_name.as_ptr()];
    let mut prog = Program(std::ptr::null_mut());
    // SAFETY: all strings outlive the call; one header with its include name.
    check(
        unsafe {
            sys::nvrtcCreateProgram(
                &mut prog.0,
                src.as_ptr(),
                file.as_ptr(),
                1,
                headers.as_ptr(),
                header_names.as_ptr(),
            )
        },
        "nvrtcCreateProgram",
        name,
    )?;
    let opts = compile_options(unit, arch, include.as_deref(), verbose);
    let opts_c: Vec<CString> = opts
        .iter()
        .map(|o| c_string(o, name))
        .collect::<Result<_, _>>()?;
    let opt_ptrs: Vec<*const c_char> = opts_c.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: a valid program and option array.
    let compiled =
        unsafe { sys::nvrtcCompileProgram(prog.0, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
    let log = program_log(prog.0);
    if compiled != nvrtcResult::NVRTC_SUCCESS {
        return Err(CudaError::Compile {
            unit: name.to_string(),
            message: format!("{compiled:?} with options {opts:?}:\n{log}"),
        });
    }
    let mut size = 0usize;
    // SAFETY: the program compiled; size out-parameter.
    check(
        unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) },
        "nvrtcGetCUBINSize",
        name,
    )?;
    let mut cubin = vec![0u8; size];
    // SAFETY: the buffer holds `size` bytes.
    check(
        unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut c_char) },
        "nvrtcGetCUBIN",
        name,
    )?;
    if cubin.is_empty() {
        return Err(CudaError::Compile {
            unit: name.to_string(),
            message: format!("empty CUBIN for {arch}"),
        });
    }
    Ok(CompiledUnit {
        name: name.to_string(),
        cubin,
        log,
    })
}

fn program_log(prog: nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: valid program; size out-parameter.
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut size) } != nvrtcResult::NVRTC_SUCCESS
        || size == 0
    {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    // SAFETY: the buffer holds `size` bytes, NUL included.
    if unsafe { sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) }
        != nvrtcResult::NVRTC_SUCCESS
    {
        return String::new();
    }
    String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .trim()
        .to_string()
}

/// Compiles every unit, `threads` at a time (NVRTC programs are independent).
pub fn compile_all(
    units: &[CompileUnit],
    arch: &str,
    threads: usize,
) -> Result<Vec<CompiledUnit>, CudaError> {
    let threads = threads.clamp(1, units.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<CompiledUnit, CudaError>>> =
        (0..units.len()).map(|_| None).collect();
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= units.len() {
                    break;
                }
                let r = compile_unit(&units[i], arch, false);
                if let Ok(mut v) = slots.lock() {
                    v[i] = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .zip(units)
        .map(|(r, u)| {
            r.unwrap_or_else(|| {
                Err(CudaError::Compile {
                    unit: u.name.clone(),
                    message: "not compiled".into(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::sources::compile_units;

    #[test]
    fn options_name_the_arch_and_the_head_dim() {
        let unit = compile_units(&[96]).remove(0);
        let o = compile_options(&unit, "sm_90", Some(Path::new("/inc")), false);
        assert!(o.contains(&"--gpu-architecture=sm_90".to_string()));
        assert!(o.contains(&"-DPAGODA_HEAD_DIM=96".to_string()));
        assert!(o.contains(&"--include-path=/inc".to_string()));
        assert!(!o.iter().any(|x| x.contains("ptxas")));
        assert_eq!(arch_for(9, 0), "sm_90");
        assert_eq!(arch_for(8, 6), "sm_86");
    }

    #[test]
    fn include_dir_needs_the_headers() {
        let none = find_include_dir(&|k| {
            (k == "CUDA_INCLUDE_DIR").then(|| "/nonexistent/include".to_string())
        });
        assert!(none.is_none() || none == Some(PathBuf::from("/usr/local/cuda/include")));
    }
}
