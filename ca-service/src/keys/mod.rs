//! CA key sources. Every source yields a [`CaKey`] that rcgen can sign with; the authority never
//! sees where a key lives. Today: PKCS#8 files, encrypted when a passphrase is given
//! ([`file::FileKey`]); an HSM is another [`Signer`].
//!
//! A signer says whether it is slow ([`Signer::is_slow`]): async code signs through
//! [`run_signing`], which runs a slow signer's work on tokio's blocking pool and a fast one
//! inline (issuance throughput must not pay a thread hop per certificate).

pub mod file;

use std::fmt::Debug;
use std::sync::Arc;

use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

pub use file::{FileKey, KeyFileError, Passphrase};

/// Why a signer did not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The in-memory key failed (rcgen's own error, passed on unchanged).
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
    /// A key held elsewhere (an HSM) failed or could not be reached.
    #[error("the CA key could not sign: {0}")]
    Failed(String),
    /// The blocking task running a slow signature was cancelled (the runtime shuts down).
    #[error("the signing task was cancelled")]
    Cancelled,
}

/// A CA signing key, wherever it lives (SPIRE's `KeyManager` signer, reduced to what a CA
/// needs). Implementations must be cheap to share: the authority and the CRL publisher hold
/// the same key.
pub trait Signer: Send + Sync + Debug {
    /// The public key as rcgen writes it into a SubjectPublicKeyInfo (for EC keys: the
    /// uncompressed point).
    fn public_key_der(&self) -> &[u8];
    /// The signature algorithm.
    fn algorithm(&self) -> &'static SignatureAlgorithm;
    /// Signs `msg` (the to-be-signed bytes of a certificate or CRL).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError>;
    /// Whether a signature may take long enough (milliseconds: an HSM, a remote key) that it
    /// must not run on an async runtime thread. See [`run_signing`].
    fn is_slow(&self) -> bool {
        false
    }
}

/// A CA signing key: a shared handle to a [`Signer`], usable wherever rcgen wants a key.
#[derive(Debug, Clone)]
pub struct CaKey(Arc<dyn Signer>);

impl CaKey {
    /// Wraps a signer.
    pub fn new(signer: impl Signer + 'static) -> Self {
        Self(Arc::new(signer))
    }

    /// Wraps a signer shared with its owner (e.g. one HSM session behind several keys).
    pub fn from_shared(signer: Arc<dyn Signer>) -> Self {
        Self(signer)
    }

    /// Generates a new ECDSA P-256 key in memory.
    pub fn generate_p256() -> Result<Self, rcgen::Error> {
        FileKey::generate_p256().map(Self::from)
    }

    /// The signer behind the handle.
    pub fn signer(&self) -> &dyn Signer {
        self.0.as_ref()
    }

    /// Whether signing with this key must leave the async runtime ([`Signer::is_slow`]).
    pub fn is_slow(&self) -> bool {
        self.0.is_slow()
    }
}

impl From<FileKey> for CaKey {
    fn from(key: FileKey) -> Self {
        Self::new(key)
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_der()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self.0.sign(msg) {
            Ok(sig) => Ok(sig),
            Err(SignError::Rcgen(e)) => Err(e),
            // rcgen's error for a key it does not hold has no room for a reason: say it here.
            Err(e) => {
                tracing::error!(error = %e, "the CA key did not sign");
                Err(rcgen::Error::RemoteKeyError)
            }
        }
    }
}

/// Runs `job`, a signing with `key`, from async code: inline when the key is fast, on tokio's
/// blocking pool when it is slow, so that a slow signer never holds a runtime thread. A panic
/// in `job` is passed on as if it had run inline.
pub async fn run_signing<T: Send + 'static>(
    key: &CaKey,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SignError> {
    if !key.is_slow() {
        return Ok(job());
    }
    match tokio::task::spawn_blocking(job).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(SignError::Cancelled),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Signers for tests: a slow one that signs only once released.

    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, RecvTimeoutError};
    use std::thread::ThreadId;
    use std::time::Duration;

    use super::*;

    /// A signer that wraps a file key, claims to be slow (or fast), records the thread it
    /// signed on, and (when given a gate) waits until the gate opens before it signs.
    #[derive(Debug)]
    pub(crate) struct TestSigner {
        pub(crate) inner: FileKey,
        pub(crate) slow: bool,
        pub(crate) gate: Option<Mutex<Receiver<()>>>,
        pub(crate) signed_on: Mutex<Vec<ThreadId>>,
    }

    impl TestSigner {
        pub(crate) fn new(inner: FileKey, slow: bool, gate: Option<Receiver<()>>) -> Self {
            Self {
                inner,
                slow,
                gate: gate.map(Mutex::new),
                signed_on: Mutex::new(Vec::new()),
            }
        }
    }

    impl Signer for TestSigner {
        fn public_key_der(&self) -> &[u8] {
            self.inner.public_key_der()
        }
        fn algorithm(&self) -> &'static SignatureAlgorithm {
            Signer::algorithm(&self.inner)
        }
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
            self.signed_on
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            if let Some(gate) = &self.gate {
                // Bounded, so that a signer wrongly run on the runtime thread fails the test
                // instead of hanging it.
                match gate.lock().unwrap().recv_timeout(Duration::from_secs(5)) {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                        return Err(SignError::Failed("the gate never opened".into()));
                    }
                }
            }
            Signer::sign(&self.inner, msg)
        }
        fn is_slow(&self) -> bool {
            self.slow
        }
    }
}
