//! Compiles `bpf/*.bpf.c` with clang (CO-RE against the committed `bpf/vmlinux.h`) into
//! `$OUT_DIR/NAME.bpf.o`, embedded by the loader with `include_bytes!`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let bpf_dir = manifest.join("bpf");
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=TETHER_CLANG");
    let clang = std::env::var("TETHER_CLANG").unwrap_or_else(|_| "clang".to_string());
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        return Err(
            "/usr/include/bpf/bpf_helpers.h not found: install the Debian package `libbpf-dev`"
                .into(),
        );
    }
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&bpf_dir)
        .map_err(|e| format!("cannot read {}: {e}", bpf_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        let file = src
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = file.trim_end_matches(".bpf.c");
        let obj = out.join(format!("{stem}.bpf.o"));
        let output = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-D__TARGET_ARCH_x86"])
            .arg("-I")
            .arg(&bpf_dir)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .map_err(|e| {
                format!("cannot run `{clang}` ({e}): install the Debian packages `clang` and `llvm` (or set TETHER_CLANG)")
            })?;
        if !output.status.success() {
            return Err(format!(
                "clang failed on {}:\n{}",
                src.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}
