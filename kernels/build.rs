//! With the `emu` feature (on for this crate's own tests, through its
//! dev-dependency on itself), compiles the CUDA sources for the host
//! emulator: g++ with -DPAGODA_EMU, one object per `.cu` source plus the
//! runtime, linked whole so every kernel's registration runs.

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
    }
}
