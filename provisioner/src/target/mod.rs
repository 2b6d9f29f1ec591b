//! Where device identities go. A target obtains a key for a device (inside the device's secure
//! element when it has one), signs the CSR with it, injects the certificate, chain and trust
//! bundle beside that key, and reads back what it holds so the station can check it.
//!
//! Target methods block (file systems, PKCS#11 libraries, serial lines): the station calls
//! them on blocking threads.

pub mod dir;
pub mod pkcs11;
pub mod pkcs12;
pub mod serial;
mod software;

use std::path::PathBuf;

use crate::credential::{CheckError, Credential};
use crate::manifest::DeviceEntry;

/// Why a target step failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target no longer holds the key the certificate was issued for (a software key lost
    /// with an interrupted run): the device must be provisioned afresh.
    #[error("the key for this certificate is no longer at the target")]
    KeyLost,
    /// The device's row lacks what the target needs.
    #[error("{0}")]
    Input(String),
    /// The target failed.
    #[error("{0}")]
    Failed(String),
    /// The read-back check failed.
    #[error("read-back check failed: {0}")]
    Check(#[from] CheckError),
}

/// A target of the station.
pub trait Target: Send + Sync {
    /// The target as given on the command line, for messages and the report.
    fn describe(&self) -> String;

    /// Obtains a key for `device` and returns a CSR (DER) signed with it.
    fn key_and_csr(&self, device: &DeviceEntry) -> Result<Vec<u8>, TargetError>;

    /// Writes the certificate, chain and trust bundle beside the device's key. Fails with
    /// [`TargetError::KeyLost`] when the key for this certificate is not at the target; never
    /// writes a certificate beside a key it does not belong to.
    fn inject(&self, device: &DeviceEntry, credential: &Credential) -> Result<(), TargetError>;

    /// Reads back what the target holds for `device` and checks that it is `credential`, that
    /// the certificate belongs to the key there, and that the chain verifies at `now`.
    fn read_back(
        &self,
        device: &DeviceEntry,
        credential: &Credential,
        now: i64,
    ) -> Result<(), TargetError>;
}

/// Why a target description was refused.
#[derive(Debug, thiserror::Error)]
#[error("target `{given}`: {reason}")]
pub struct TargetSpecError {
    given: String,
    reason: String,
}

/// Parses `dir:PATH[?owner=USER][&group=GROUP][&key-mode=0640]`, `pkcs12:PATH[?password-file=FILE]` or
/// `pkcs11:MODULE[?token=LABEL][&pin-file=FILE]` or `serial:[ADDR]`.
pub fn parse(given: &str) -> Result<Box<dyn Target>, TargetSpecError> {
    let err = |reason: &str| TargetSpecError {
        given: given.to_owned(),
        reason: reason.to_owned(),
    };
    let (kind, rest) = given.split_once(':').ok_or_else(|| {
        err("expected KIND:..., one of dir:PATH, pkcs12:PATH, pkcs11:MODULE, serial:ADDR")
    })?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let options = parse_query(query).map_err(|r| err(&r))?;
    if path.is_empty() && kind != "serial" {
        return Err(err("the path is empty"));
    }
    let known =
        |allowed: &[&str]| match options.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(err(&format!("unknown option `{k}`"))),
            None => Ok(()),
        };
    let read_secret = |name: &str| -> Result<Option<String>, TargetSpecError> {
        match options.iter().find(|(k, _)| k == name) {
            Some((_, f)) => Ok(Some(
                std::fs::read_to_string(f)
                    .map_err(|e| err(&format!("reading {name} {f}: {e}")))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            )),
            None => Ok(None),
        }
    };
    match kind {
        "dir" => {
            known(&["owner", "group", "key-mode"])?;
            let option = |name: &str| {
                options
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let access = hallmark_core::bundle::BundleAccess::resolve(
                option("owner"),
                option("group"),
                option("key-mode"),
            )
            .map_err(|e| err(&e.to_string()))?;
            Ok(Box::new(dir::DirTarget::with_access(
                PathBuf::from(path),
                access,
            )))
        }
        "pkcs12" => {
            known(&["password-file"])?;
            let password = read_secret("password-file")?;
            Ok(Box::new(pkcs12::Pkcs12Target::new(
                PathBuf::from(path),
                password,
            )))
        }
        "pkcs11" => {
            known(&["token", "pin-file"])?;
            let token = options
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone());
            let pin = read_secret("pin-file")?;
            let t = pkcs11::Pkcs11Target::new(std::path::Path::new(path), token, pin)
                .map_err(|r| err(&r))?;
            Ok(Box::new(t))
        }
        "serial" => {
            known(&[])?;
            let address = (!path.is_empty()).then(|| path.to_owned());
            Ok(Box::new(serial::SerialTarget::new(address)))
        }
        other => Err(err(&format!(
            "unknown target kind `{other}`; use dir:PATH, pkcs12:PATH, pkcs11:MODULE or serial:ADDR"
        ))),
    }
}

fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("option `{p}` is not NAME=VALUE"))
        })
        .collect()
}
