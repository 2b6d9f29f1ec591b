//! The rules of the layers that the module graph alone does not show (see
//! `docs/architecture.md`): the gRPC front-end only authenticates, decodes, calls the service
//! and renders (it checks no CSR, signs nothing and writes nothing to the store), and only the
//! store names sqlx. Reads the sources.

// Test code: helpers panic with the failure (clippy.toml allows that in `#[test]`s only).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// What the front-end may read from the store directly (listings and lookups it renders).
const STORE_READS: &[&str] = &[
    "certificate",
    "list_certificates",
    "device",
    "list_devices",
    "manufacturer_cas",
];

/// Names that check a CSR, sign, or build a CRL: only the service and below call them.
const SIGNING: &[&str] = &[
    "check_csr",
    "sign_leaf",
    "sign_server",
    "sign_plan",
    "build_crl",
    "record_issuance",
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

/// The method names called on `store()` or on a `.store` field in `text` (whitespace between
/// the receiver and the call, as rustfmt splits chains, is allowed).
fn store_calls(text: &str) -> Vec<String> {
    let flat: String = text.split_whitespace().collect();
    let mut calls = Vec::new();
    for receiver in ["store().", ".store."] {
        for (at, _) in flat.match_indices(receiver) {
            let rest = &flat[at + receiver.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if rest[name.len()..].starts_with('(') {
                calls.push(name);
            }
        }
    }
    calls
}

#[test]
fn the_grpc_layer_reads_the_store_but_never_writes_or_signs() {
    let files = sources(&src().join("api"));
    assert!(files.len() >= 5, "api/ not found");
    let mut wrong = Vec::new();
    for (path, text) in &files {
        for call in store_calls(text) {
            if !STORE_READS.contains(&call.as_str()) {
                wrong.push(format!("{}: store.{call}(..)", path.display()));
            }
        }
        for name in SIGNING {
            if text.contains(name) {
                wrong.push(format!("{}: names {name}", path.display()));
            }
        }
        if text.contains("WriteOp") || text.contains("crate::authority::csr") {
            wrong.push(format!("{}: reaches below the service", path.display()));
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
fn the_store_call_scan_sees_split_chains() {
    let text = "let d = self\n    .state\n    .service\n    .store()\n    .device(&id)\n    .await;\n st.store.write(op)";
    assert_eq!(store_calls(text), ["device", "write"]);
}
