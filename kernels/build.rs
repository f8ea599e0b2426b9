//! With the `emu` feature (on for this crate's own tests, through its
//! dev-dependency on itself), compiles the CUDA sources for the host
//! emulator: g++ with -DPAGODA_EMU, one object per `.cu` source plus the
//! runtime, linked whole so every kernel's registration runs; and the same
//! sources again as a shared library under AddressSanitizer and UBSan
//! (`cuda::emu::sanitized`), when the compiler has them.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "emu")]
    emu::build();
}

#[cfg(feature = "emu")]
mod emu {
    const DIR: &str = "src/cuda/emu";

    pub fn build() {
        for dir in [DIR, "src/cuda/cu"] {
            println!("cargo:rerun-if-changed={dir}");
            for entry in std::fs::read_dir(dir).expect("kernel sources") {
                println!(
                    "cargo:rerun-if-changed={}",
                    entry.expect("entry").path().display()
                );
            }
        }
        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++17")
            // Kernels at -O0 would make the emulated suite several times slower.
            .opt_level(2)
            .debug(false)
            .define("PAGODA_EMU", None)
            // IEEE single operations, never contracted into FMAs behind the kernels' back.
            .flag("-ffp-contract=off")
            .flag("-fno-strict-aliasing")
            .flag("-U_FORTIFY_SOURCE")
            .flag_if_supported("-Wno-unknown-pragmas")
            .warnings(true)
            .extra_warnings(false)
            // Each kernel registers itself from a static initializer: keep every object.
            .link_lib_modifier("+whole-archive");
        for entry in std::fs::read_dir(DIR).expect("emulator sources") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "cpp") {
                b.file(path);
            }
        }
        b.compile("pagoda_emu");
        sanitized(&b);
    }

    /// `libpagoda_emu_sanitized.so`: every emulator source under
    /// `-fsanitize=address,undefined`, compiled in parallel. Stack
    /// instrumentation is off (`asan-stack=0`): the fibers switch stacks
    /// with longjmp, which ASan cannot follow; the buffers a kernel reads
    /// and writes are heap memory, and those are what this checks.
    fn sanitized(b: &cc::Build) {
        let compiler = b.get_compiler();
        let asan = match compiler
            .to_command()
            .arg("-print-file-name=libasan.so")
            .output()
        {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => String::new(),
        };
        if !std::path::Path::new(&asan).is_absolute() || !std::path::Path::new(&asan).exists() {
            println!("cargo:warning=no libasan.so beside the C++ compiler: the sanitized emulator is not built");
            return;
        }
        let out =
            std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("sanitized");
        std::fs::create_dir_all(&out).expect("sanitized build folder");
        let flags = [
            "-std=c++17",
            "-O1",
            "-g",
            "-fPIC",
            "-DPAGODA_EMU",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "--param=asan-stack=0",
            "-fno-omit-frame-pointer",
            "-ffp-contract=off",
            "-fno-strict-aliasing",
            "-U_FORTIFY_SOURCE",
            "-Wno-unknown-pragmas",
        ];
        let mut objects = Vec::new();
        let mut jobs = Vec::new();
        for entry in std::fs::read_dir(DIR).expect("emulator sources") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "cpp") {
                continue;
            }
            let obj = out
                .join(path.file_stem().expect("stem"))
                .with_extension("o");
            let child = compiler
                .to_command()
                .args(flags)
                .arg("-c")
                .arg(&path)
                .arg("-o")
                .arg(&obj)
                .spawn()
                .expect("the C++ compiler");
            jobs.push((path, child));
            objects.push(obj);
        }
        for (path, mut child) in jobs {
            let ok = child.wait().is_ok_and(|s| s.success());
            assert!(ok, "sanitized build of {} failed", path.display());
        }
        let lib = out.join("libpagoda_emu_sanitized.so");
        let ok = compiler
            .to_command()
            .args(["-shared", "-fsanitize=address,undefined", "-o"])
            .arg(&lib)
            .args(&objects)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "linking {} failed", lib.display());
        println!("cargo:rustc-env=PAGODA_EMU_SANITIZED_LIB={}", lib.display());
        println!("cargo:rustc-env=PAGODA_EMU_ASAN_RUNTIME={asan}");
    }
}
