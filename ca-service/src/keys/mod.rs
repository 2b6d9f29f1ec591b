//! CA key sources. Every source yields a [`CaKey`] that rcgen can sign with; the authority never
//! sees where a key lives. Today: PKCS#8 files, encrypted when a passphrase is given.

pub mod file;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

pub use file::{KeyFileError, Passphrase};

/// A CA signing key.
#[derive(Debug)]
pub enum CaKey {
    /// A key loaded from a PKCS#8 file and held in memory (aws-lc-rs).
    InMemory(KeyPair),
}

impl CaKey {
    /// Generates a new ECDSA P-256 key in memory.
    pub fn generate_p256() -> Result<Self, rcgen::Error> {
        Ok(Self::InMemory(KeyPair::generate_for(
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )?))
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::InMemory(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaKey::InMemory(k) => PublicKeyData::algorithm(k),
        }
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::InMemory(k) => k.sign(msg),
        }
    }
}
