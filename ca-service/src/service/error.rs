//! What a use case of the service refuses, by kind: the front-end (gRPC today, EST later)
//! maps each kind to its own status codes; the message names the problem and what to do.

use crate::authority::AuthorityError;
use crate::authority::csr::CsrError;
use crate::authority::hostnames::ReservedName;
use crate::identity::NameError;
use crate::store::StoreError;

/// Why the service refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request itself is malformed or asks for something no caller may have.
    #[error("{0}")]
    Invalid(String),
    /// A device id, zone, lot or other name breaks the naming rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The device id names the CA, the local host or an IP address.
    #[error(transparent)]
    ReservedName(#[from] ReservedName),
    /// The CSR was refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The caller presented no credential, or one that is not (or no longer) valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Denied(String),
    /// The current state forbids it (a suspended device, a profile no longer configured...).
    #[error("{0}")]
    Precondition(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the request would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Too many failed attempts from this peer for now.
    #[error("{0}")]
    Throttled(String),
    /// The authority refused to sign or failed to.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// The store refused the write or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An enrollment credential (token or IDevID) was refused: counts against the peer's
    /// address (see [`super::throttle`]). The inner error says why.
    #[error("{0}")]
    BadCredential(Box<ServiceError>),
    /// Something that cannot happen did (a bug, or no randomness).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// [`ServiceError::Invalid`].
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::Invalid(m.into())
    }

    /// [`ServiceError::Unauthenticated`].
    pub fn unauthenticated(m: impl Into<String>) -> Self {
        Self::Unauthenticated(m.into())
    }

    /// [`ServiceError::Denied`].
    pub fn denied(m: impl Into<String>) -> Self {
        Self::Denied(m.into())
    }

    /// [`ServiceError::Precondition`].
    pub fn precondition(m: impl Into<String>) -> Self {
        Self::Precondition(m.into())
    }

    /// [`ServiceError::NotFound`].
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::NotFound(m.into())
    }

    /// [`ServiceError::AlreadyExists`].
    pub fn already_exists(m: impl Into<String>) -> Self {
        Self::AlreadyExists(m.into())
    }

    /// [`ServiceError::Internal`].
    pub fn internal(m: impl Into<String>) -> Self {
        Self::Internal(m.into())
    }

    /// Marks this refusal as a failed enrollment credential.
    pub fn bad_credential(self) -> Self {
        Self::BadCredential(Box::new(self))
    }
}

/// Result of a use case.
pub type ServiceResult<T> = Result<T, ServiceError>;
