//! Hallmark's Debian package, built for a test from the binaries already built.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo-deb release scripts/test.sh installs.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Builds the client package (`cargo deb -p hallmark-cli`) into `out` (a directory) and returns
/// the `.deb`. It packages the `hallmark` the suite built (`--no-build`, no release build: that
/// would cost minutes), from the same target dir and with the profile that built it; cargo-deb
/// strips a copy. cargo-deb comes from crates.io (scripts/test.sh installs it).
pub fn package(out: &Path) -> PathBuf {
    std::fs::create_dir_all(out).expect("package output dir");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let version = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        version
            .as_ref()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("deb")),
        "cargo-deb is missing: run scripts/test.sh (it installs it), or \
         `cargo install cargo-deb --version {CARGO_DEB_VERSION} --locked`"
    );
    // target/<profile dir>/hallmark; cargo names the dev profile's directory `debug`.
    let binary = crate::bin("hallmark");
    let profile_dir = binary.parent().expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => panic!("unexpected binary path {}", binary.display()),
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = Command::new(&cargo)
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "deb",
            "-p",
            "hallmark-cli",
            "--no-build",
            "--fast",
            "--profile",
        ])
        .arg(&profile)
        .arg("--output")
        .arg(out)
        .output()
        .expect("cargo runs");
    assert!(
        built.status.success(),
        "cargo deb failed (scripts/test.sh installs cargo-deb and builds the binaries): {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("package output dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package expected in {}", out.display());
    debs[0].clone()
}
