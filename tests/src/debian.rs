//! Hallmark's Debian package, built for a test from the binaries already built.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the client package (`cargo deb -p hallmark-cli`) from the debug binaries into `out`
/// (a directory) and returns the `.deb`. cargo-deb comes from crates.io (scripts/test.sh
/// installs it).
pub fn package(out: &Path) -> PathBuf {
    std::fs::create_dir_all(out).expect("package output dir");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = Command::new("cargo")
        .current_dir(&workspace)
        .args([
            "deb",
            "-p",
            "hallmark-cli",
            "--no-build",
            "--profile",
            "dev",
        ])
        .args(["--no-strip", "--fast", "--output"])
        .arg(out)
        .output()
        .expect("cargo runs");
    assert!(
        built.status.success(),
        "cargo deb failed (scripts/test.sh installs cargo-deb and builds the binaries): {}",
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::read_dir(out)
        .expect("package output dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote a .deb")
}
