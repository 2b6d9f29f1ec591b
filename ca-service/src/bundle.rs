//! Credential bundles: the directory a device, operator or station keeps its identity in.
//! Always `key.pem` (0600), `cert.pem` (leaf), `chain.pem` (leaf + issuing CA) and `ca.pem`
//! (trust bundle), each written atomically.

use std::path::{Path, PathBuf};

use crate::fsutil;

/// Private key file name.
pub const KEY_FILE: &str = "key.pem";
/// Leaf certificate file name.
pub const CERT_FILE: &str = "cert.pem";
/// Leaf + issuing CA file name.
pub const CHAIN_FILE: &str = "chain.pem";
/// Trust bundle file name.
pub const CA_FILE: &str = "ca.pem";

/// The four PEM texts of a credential.
#[derive(Clone)]
pub struct CredentialBundle {
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Leaf followed by the issuing CA, PEM.
    pub chain_pem: String,
    /// Trust bundle, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for CredentialBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialBundle").finish_non_exhaustive()
    }
}

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct BundleError {
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

impl CredentialBundle {
    /// Writes the bundle into `dir` as one atomic directory replacement: whoever reads `dir`
    /// (or a crash at any moment) sees the complete old bundle or the complete new one, never a
    /// key that does not belong to its certificate.
    pub fn write(&self, dir: &Path) -> Result<(), BundleError> {
        fsutil::replace_dir_atomically(
            dir,
            &[
                (CA_FILE, self.ca_pem.as_bytes(), 0o644),
                (CHAIN_FILE, self.chain_pem.as_bytes(), 0o644),
                (CERT_FILE, self.cert_pem.as_bytes(), 0o644),
                (KEY_FILE, self.key_pem.as_bytes(), 0o600),
            ],
        )
        .map_err(|source| BundleError {
            path: dir.to_owned(),
            source,
        })
    }

    /// Reads a bundle from `dir`.
    pub fn read(dir: &Path) -> Result<Self, BundleError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| BundleError { path, source })
        };
        Ok(Self {
            key_pem: read(KEY_FILE)?,
            cert_pem: read(CERT_FILE)?,
            chain_pem: read(CHAIN_FILE)?,
            ca_pem: read(CA_FILE)?,
        })
    }
}

/// A fresh P-256 key and a CSR for it (the CSR's subject is informative only: the CA takes
/// names from its registry). Returns `(key PEM, CSR DER)`.
pub fn new_key_and_csr(common_name: &str) -> Result<(String, Vec<u8>), rcgen::Error> {
    let (key, csr) = new_key_pair_and_csr(common_name)?;
    Ok((key.serialize_pem(), csr))
}

/// As [`new_key_and_csr`], for a caller that keeps the key in memory.
pub fn new_key_pair_and_csr(common_name: &str) -> Result<(rcgen::KeyPair, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let csr = params.serialize_request(&key)?.der().to_vec();
    Ok((key, csr))
}

/// The common name (a device id, or a credential name) of the certificate in `cert_pem`.
pub fn certificate_cn(cert_pem: &[u8]) -> Option<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(cert_pem).ok()?;
    let c = p.parse_x509().ok()?;
    let cn = c.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_four_files_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cred");
        let b = CredentialBundle {
            key_pem: "k".into(),
            cert_pem: "c".into(),
            chain_pem: "ch".into(),
            ca_pem: "ca".into(),
        };
        b.write(&out).unwrap();
        let mode = |n: &str| std::fs::metadata(out.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CERT_FILE), 0o644);
        assert_eq!(CredentialBundle::read(&out).unwrap().chain_pem, "ch");
    }
}
