//! The trust material handed to clients (roots and issuing CAs from the store's issuers) and
//! the shared handle to the one in force, which the API, the HTTP side and the issuer watcher
//! share.

use std::sync::Arc;

use crate::authority::ca::der_to_pem;
use crate::store::{IssuerKind, IssuerRecord};

/// The trust material handed to clients.
#[derive(Debug, Clone, Default)]
pub struct TrustMaterial {
    /// Root CA certificates, PEM.
    pub roots_pem: String,
    /// Issuing CA certificates, PEM.
    pub intermediates_pem: String,
}

impl TrustMaterial {
    /// Builds it from the store's issuers (retired issuing CAs included while they are valid,
    /// revoked ones left out).
    pub fn from_issuers(issuers: &[IssuerRecord], now: i64) -> Self {
        let mut t = Self::default();
        for i in issuers
            .iter()
            .filter(|i| i.not_after > now && !i.is_revoked())
        {
            let pem = der_to_pem(&i.cert_der);
            match i.kind {
                IssuerKind::Root => t.roots_pem.push_str(&pem),
                IssuerKind::Issuing => t.intermediates_pem.push_str(&pem),
            }
        }
        t
    }

    /// Roots followed by issuing CAs: the `ca.pem` of credential bundles and the broker's
    /// CA file (Mosquitto needs the issuing CA to verify clients that send only their leaf).
    pub fn bundle_pem(&self) -> String {
        format!("{}{}", self.roots_pem, self.intermediates_pem)
    }
}

/// The trust material in force, shared by the API and the HTTP side and replaced when the
/// set of issuers changes.
#[derive(Debug, Clone, Default)]
pub struct TrustHandle(Arc<std::sync::RwLock<Arc<TrustMaterial>>>);

impl TrustHandle {
    /// A handle holding `trust`.
    pub fn new(trust: TrustMaterial) -> Self {
        Self(Arc::new(std::sync::RwLock::new(Arc::new(trust))))
    }

    /// The current trust material.
    pub fn get(&self) -> Arc<TrustMaterial> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces it; returns whether it changed.
    pub fn set(&self, trust: TrustMaterial) -> bool {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        if current.roots_pem == trust.roots_pem
            && current.intermediates_pem == trust.intermediates_pem
        {
            return false;
        }
        *current = Arc::new(trust);
        true
    }
}
