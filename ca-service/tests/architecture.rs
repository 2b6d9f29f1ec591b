//! The rules of the layers that the module graph alone does not show (see
//! `docs/architecture.md`): the gRPC front-end only authenticates, decodes, calls the service
//! and renders (it checks no CSR, signs nothing and writes nothing to the store: it gets the
//! store only as `service::Reads`, which has no write, so the compiler holds that part too),
//! and only the store names sqlx. Reads the sources.

// Test code: helpers panic with the failure (clippy.toml allows that in `#[test]`s only).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Ways to the store that bypass `service::Reads` (and so could write).
const STORE_HANDLES: &[&str] = &[
    "store()",
    ".store.",
    "dyn Store",
    "store::Store",
    "interface::",
    "WriteOp",
    "SqliteStore",
];

/// Names that check a CSR, sign, or build a CRL: only the service and below call them.
const SIGNING: &[&str] = &[
    "check_csr",
    "sign_leaf",
    "sign_server",
    "sign_plan",
    "issue_plan",
    "issue_with",
    "record_hierarchy",
    "SystemCredential",
    "build_crl",
    "record_issuance",
    "crate::authority::csr",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("source dir readable") {
            let p = e.expect("source dir entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("source file readable");
                out.push((p, text));
            }
        }
    }
    out.sort();
    out
}

/// Whether `text` contains `name` not followed by more of an identifier (`store::Store` is
/// not named by `store::StoreError`).
fn names(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        !name.ends_with(|c: char| c.is_alphanumeric() || c == '_')
            || !text[at + name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn the_grpc_layer_reads_the_store_but_never_writes_or_signs() {
    let files = sources(&src().join("api"));
    assert!(files.len() >= 5, "api/ not found");
    let mut wrong = Vec::new();
    for (path, text) in &files {
        for name in SIGNING.iter().chain(STORE_HANDLES) {
            if names(text, name) {
                wrong.push(format!("{}: names {name}", path.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "api/ does the service's work:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_store_names_sqlx() {
    let store = src().join("store");
    let named: Vec<String> = sources(&src())
        .into_iter()
        .filter(|(p, text)| !p.starts_with(&store) && text.contains("sqlx"))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(named.is_empty(), "sqlx outside store/: {named:?}");
}

#[test]
fn a_name_is_found_whole() {
    assert!(names("use crate::store::Store;", "store::Store"));
    assert!(!names("use crate::store::StoreError;", "store::Store"));
    assert!(names("x.store().create_token(t)", "store()"));
}
