//! The issuer keyring: the one owner of the CA's signing keys. It loads the issuing CAs (the
//! active one and retired ones, each with its key) and the root's key from the data dir as the
//! store's issuer records name them, hands the active issuing CA to the authority, hands any
//! issuer's key to the CRL publisher, and follows rollovers made by `hallmark-ca issuer
//! rotate` ([`Keyring::refresh`]). Nothing else reads CA keys while the CA serves.
//!
//! Keys load when first needed (a retired CA at the first CRL build) and stay in memory; a
//! key behind a slow [`crate::keys::Signer`] is used the same way, its signing leaves the
//! runtime ([`crate::keys::run_signing`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::authority::{IssuingCa, ca};
use crate::datadir::{CertFileError, DataDir, read_cert_pem};
use crate::keys::{KeyFileError, Passphrase, file as keyfile};
use crate::root_crl::{self, RootCrlError};
use crate::store::{IssuerKind, IssuerRecord};

/// Why an issuer's key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The CA certificate file could not be read.
    #[error(transparent)]
    CertFile(#[from] CertFileError),
    /// The key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The data dir contradicts the store.
    #[error("{0}")]
    Inconsistent(String),
    /// The certificate and key could not be paired.
    #[error("cannot create a certificate: {0}")]
    Certificate(String),
}

/// The active issuing CA among `issuers` (the newest, should there be several).
pub fn active_issuing(issuers: &[IssuerRecord]) -> Option<&IssuerRecord> {
    issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Issuing && i.active && !i.is_revoked())
        .max_by_key(|i| i.not_before)
}

/// Loads the issuing CA of `record` with its key: `ca/<id>.{crt,key}` when present (every CA
/// after a rollover), else `ca/issuing.{crt,key}` (the first one).
pub fn load_issuing(
    dir: &DataDir,
    record: &IssuerRecord,
    passphrase: Option<&Passphrase>,
) -> Result<IssuingCa, KeyringError> {
    let (crt, key) = dir.issuing_files(&record.id);
    let on_disk = read_cert_pem(&crt)?;
    if on_disk != record.cert_der {
        return Err(KeyringError::Inconsistent(format!(
            "{} does not match issuing CA {} in the store",
            crt.display(),
            record.id
        )));
    }
    let ca_key = keyfile::read_key(&key, passphrase)?;
    ca::check_key_matches(&record.cert_der, &ca_key)
        .map_err(|e| KeyringError::Inconsistent(format!("{}: {e}", key.display())))?;
    IssuingCa::new(record.id.clone(), record.cert_der.clone(), ca_key)
        .map_err(|e| KeyringError::Certificate(e.to_string()))
}

/// The issuing CAs and roots of a data dir with their keys; cheap to clone (clones share).
#[derive(Debug, Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: DataDir,
    passphrase: Option<Passphrase>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The issuing CA that signs.
    active: Arc<IssuingCa>,
    /// Issuing CAs loaded so far (the active one included), by id.
    issuing: HashMap<String, Arc<IssuingCa>>,
    /// A new active issuing CA whose key failed to load (said once).
    failed: Option<String>,
    /// Root keys loaded from the data dir, by root id.
    roots: HashMap<String, Arc<IssuingCa>>,
    /// Roots whose key in the data dir failed to load (said once).
    root_failed: HashSet<String>,
}

impl Keyring {
    /// Loads the active issuing CA of `issuers` from `dir`; the others load when asked for.
    pub fn load(
        dir: DataDir,
        passphrase: Option<Passphrase>,
        issuers: &[IssuerRecord],
    ) -> Result<Self, KeyringError> {
        let record = active_issuing(issuers).ok_or_else(|| {
            KeyringError::Inconsistent(format!("{} has no active issuing CA", dir.db().display()))
        })?;
        let active = Arc::new(load_issuing(&dir, record, passphrase.as_ref())?);
        let state = State {
            issuing: HashMap::from([(active.id.clone(), active.clone())]),
            active,
            failed: None,
            roots: HashMap::new(),
            root_failed: HashSet::new(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                passphrase,
                state: Mutex::new(state),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The issuing CA that signs new certificates.
    pub fn active(&self) -> Arc<IssuingCa> {
        self.state().active.clone()
    }

    /// The issuing CA of `record` with its key (for its CRL), loaded from the data dir the
    /// first time.
    pub fn issuer(&self, record: &IssuerRecord) -> Result<Arc<IssuingCa>, KeyringError> {
        if let Some(ca) = self.state().issuing.get(&record.id) {
            return Ok(ca.clone());
        }
        // Loaded without the lock: decrypting a key takes a while.
        let ca = Arc::new(load_issuing(
            &self.inner.dir,
            record,
            self.inner.passphrase.as_ref(),
        )?);
        Ok(self
            .state()
            .issuing
            .entry(record.id.clone())
            .or_insert(ca)
            .clone())
    }

    /// Follows a rollover: when the active issuing CA of `issuers` (the store's, possibly
    /// changed by another process) is not the one in use, loads it and makes it the active
    /// one. Returns it then, for the authority to sign with. A new CA whose key cannot be
    /// loaded is logged (once) and tried again at the next refresh; the previous one stays
    /// active meanwhile.
    pub fn refresh(&self, issuers: &[IssuerRecord]) -> Option<Arc<IssuingCa>> {
        let record = active_issuing(issuers)?;
        let from = self.active();
        if record.id == from.id {
            return None;
        }
        match self.issuer(record) {
            Ok(ca) => {
                tracing::info!(from = %from.id, to = %record.id, "issuing CA rolled over");
                let mut state = self.state();
                state.active = ca.clone();
                state.failed = None;
                Some(ca)
            }
            Err(e) => {
                let mut state = self.state();
                if state.failed.as_deref() != Some(record.id.as_str()) {
                    tracing::error!(issuer = %record.id, error = %e, "cannot load the new issuing CA; still signing with the previous one");
                    state.failed = Some(record.id.clone());
                }
                None
            }
        }
    }

    /// The key of `root` when it is in the data dir (`ca/root.key`) and is `root`'s, to sign
    /// the root's CRL. A key moved offline since is forgotten here too.
    pub fn root(&self, root: &IssuerRecord) -> Option<Arc<IssuingCa>> {
        let path = self.inner.dir.root_key();
        if !path.exists() {
            // Moved offline since: stop signing with the copy in memory too.
            self.state().roots.remove(&root.id);
            return None;
        }
        if let Some(k) = self.state().roots.get(&root.id) {
            return Some(k.clone());
        }
        match root_crl::load_key(&path, self.inner.passphrase.as_ref(), root) {
            Ok(k) => {
                let k = Arc::new(k);
                self.state().roots.insert(root.id.clone(), k.clone());
                Some(k)
            }
            // The data dir's root key is another root's.
            Err(RootCrlError::WrongKey { .. }) => None,
            Err(e) => {
                if self.state().root_failed.insert(root.id.clone()) {
                    tracing::error!(root = %root.id, error = %e, "cannot load the root key from the data dir; the root's CRL is not re-signed");
                }
                None
            }
        }
    }
}
