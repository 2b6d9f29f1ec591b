//! PKCS#8 key files: `ENCRYPTED PRIVATE KEY` (PBES2: PBKDF2-SHA256 + AES-256-CBC, readable by
//! `openssl pkey`) when a passphrase is given, else `PRIVATE KEY` with mode 0600.

use std::path::{Path, PathBuf};

use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo, SecretDocument};
use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

use super::{CaKey, SignError, Signer};
use crate::fsutil;

/// Environment variable holding the CA key passphrase.
pub const PASSPHRASE_ENV: &str = "HALLMARK_CA_PASSPHRASE";

/// PBKDF2 iterations for new encrypted keys (OWASP 2023 figure for PBKDF2-HMAC-SHA256).
const PBKDF2_ITERATIONS: u32 = 600_000;

/// A passphrase protecting CA key files. Never logged (no `Debug` of the content).
#[derive(Clone)]
pub struct Passphrase(Vec<u8>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// Reads a passphrase file; a trailing newline is not part of the passphrase.
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        let bytes = std::fs::read(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let trimmed = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(&bytes);
        Self::new(trimmed.to_vec(), &path.display().to_string())
    }

    /// Takes the passphrase from `HALLMARK_CA_PASSPHRASE`, if set.
    pub fn from_env() -> Result<Option<Self>, KeyFileError> {
        match std::env::var_os(PASSPHRASE_ENV) {
            None => Ok(None),
            Some(v) => Self::new(v.into_encoded_bytes(), PASSPHRASE_ENV).map(Some),
        }
    }

    fn new(bytes: Vec<u8>, source: &str) -> Result<Self, KeyFileError> {
        if bytes.len() < 8 {
            return Err(KeyFileError::WeakPassphrase(source.to_owned()));
        }
        Ok(Self(bytes))
    }
}

/// A PKCS#8 key held in memory (aws-lc-rs): read from a key file, or generated to be written
/// to one. Signing is fast: it runs inline, also on the async runtime.
#[derive(Debug)]
pub struct FileKey(KeyPair);

impl FileKey {
    /// Generates a new ECDSA P-256 key.
    pub fn generate_p256() -> Result<Self, rcgen::Error> {
        Ok(Self(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?))
    }
}

impl Signer for FileKey {
    fn public_key_der(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        PublicKeyData::algorithm(&self.0)
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(SigningKey::sign(&self.0, msg)?)
    }
}

// rcgen signs with it directly too: a new CA certificate is made with its new key before the
// key becomes a [`CaKey`].
impl PublicKeyData for FileKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        PublicKeyData::algorithm(&self.0)
    }
}

impl SigningKey for FileKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// File system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The key is encrypted and no passphrase was given.
    #[error(
        "{} is encrypted; give its passphrase with --passphrase-file FILE or the {PASSPHRASE_ENV} variable",
        path.display()
    )]
    PassphraseNeeded {
        /// The file.
        path: PathBuf,
    },
    /// Decryption failed.
    #[error("{}: cannot decrypt the key (wrong passphrase?)", path.display())]
    Decrypt {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a PKCS#8 key rcgen can use.
    #[error("{}: not a usable PKCS#8 EC key: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The passphrase is too short.
    #[error("the passphrase from {0} is shorter than 8 bytes")]
    WeakPassphrase(String),
}

/// Writes `key` to `path` (mode 0600), encrypted when `passphrase` is given.
pub fn write_key(
    path: &Path,
    key: &FileKey,
    passphrase: Option<&Passphrase>,
) -> Result<(), KeyFileError> {
    let FileKey(key) = key;
    let format = |reason: String| KeyFileError::Format {
        path: path.to_owned(),
        reason,
    };
    let pem = match passphrase {
        None => key.serialize_pem(),
        Some(pass) => {
            let der = key.serialize_der();
            let info =
                PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| format(e.to_string()))?;
            let mut salt = [0u8; 16];
            let mut iv = [0u8; 16];
            aws_lc_rs::rand::fill(&mut salt).map_err(|_| format("no randomness".into()))?;
            aws_lc_rs::rand::fill(&mut iv).map_err(|_| format("no randomness".into()))?;
            let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(
                PBKDF2_ITERATIONS,
                &salt,
                &iv,
            )
            .map_err(|e| format(e.to_string()))?;
            let doc = info
                .encrypt_with_params(params, &pass.0)
                .map_err(|e| format(e.to_string()))?;
            doc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
                .map_err(|e| format(e.to_string()))?
                .to_string()
        }
    };
    fsutil::write_atomic(path, pem.as_bytes(), 0o600).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a CA key from a PKCS#8 PEM file, decrypting it when it is encrypted.
pub fn read_key(path: &Path, passphrase: Option<&Passphrase>) -> Result<CaKey, KeyFileError> {
    read_file_key(path, passphrase).map(CaKey::from)
}

/// Reads a PKCS#8 PEM key file as a [`FileKey`] (to write it elsewhere too), decrypting it when
/// it is encrypted.
pub fn read_file_key(
    path: &Path,
    passphrase: Option<&Passphrase>,
) -> Result<FileKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let format = |reason: String| KeyFileError::Format {
        path: path.to_owned(),
        reason,
    };
    let (label, doc) = SecretDocument::from_pem(&text).map_err(|e| format(e.to_string()))?;
    let der = match label {
        "PRIVATE KEY" => doc,
        "ENCRYPTED PRIVATE KEY" => {
            let pass = passphrase.ok_or_else(|| KeyFileError::PassphraseNeeded {
                path: path.to_owned(),
            })?;
            let enc = EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
                .map_err(|e| format(e.to_string()))?;
            enc.decrypt(&pass.0).map_err(|_| KeyFileError::Decrypt {
                path: path.to_owned(),
            })?
        }
        other => return Err(format(format!("PEM label `{other}`, expected PRIVATE KEY"))),
    };
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
    let key = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format(e.to_string()))?;
    Ok(FileKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn round_trip_plain_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey::generate_p256().unwrap();
        let plain = dir.path().join("plain.key");
        write_key(&plain, &key, None).unwrap();
        let back = read_key(&plain, None).unwrap();
        assert_eq!(back.der_bytes(), key.public_key_der());

        let pass = Passphrase::new(b"correct horse".to_vec(), "test").unwrap();
        let enc = dir.path().join("enc.key");
        write_key(&enc, &key, Some(&pass)).unwrap();
        assert!(
            std::fs::read_to_string(&enc)
                .unwrap()
                .contains("ENCRYPTED PRIVATE KEY")
        );
        let err = read_key(&enc, None).unwrap_err().to_string();
        assert!(err.contains("--passphrase-file"), "{err}");
        let wrong = Passphrase::new(b"wrong horse".to_vec(), "test").unwrap();
        assert!(matches!(
            read_key(&enc, Some(&wrong)),
            Err(KeyFileError::Decrypt { .. })
        ));
        let back = read_key(&enc, Some(&pass)).unwrap();
        assert_eq!(back.der_bytes(), key.public_key_der());
    }
}
