//! The gRPC API: thin tonic services that authenticate the caller's connection, decode the
//! request, call one use case of [`crate::service`] and render its result (or map its error to
//! a gRPC status). Nothing here checks CSRs, signs, or writes to the store.

pub mod auth;
pub mod certificate_authority;
pub mod devices;
pub mod enrollment;
pub mod messages;
pub mod revocation;
pub mod tls;

use tonic::Status;

use crate::authority::AuthorityError;
use crate::service::{Service, ServiceError};
use crate::store::StoreError;

pub use crate::trust::{TrustHandle, TrustMaterial};

/// What every gRPC service shares.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The CA's use cases.
    pub service: Service,
    /// CRL publication (`GetCrl`, `WatchCrl`).
    pub crls: crate::revocation::CrlPublisher,
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => Status::invalid_argument(m),
            ServiceError::Name(e) => Status::invalid_argument(e.to_string()),
            ServiceError::ReservedName(e) => Status::invalid_argument(e.to_string()),
            ServiceError::Csr(e) => Status::invalid_argument(e.to_string()),
            ServiceError::Unauthenticated(m) => Status::unauthenticated(m),
            ServiceError::Denied(m) => Status::permission_denied(m),
            ServiceError::Precondition(m) => Status::failed_precondition(m),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::AlreadyExists(m) => Status::already_exists(m),
            ServiceError::Throttled(m) => Status::resource_exhausted(m),
            ServiceError::Authority(e) => authority_status(e),
            ServiceError::Store(e) => store_status(e),
            ServiceError::BadCredential(inner) => Status::from(*inner),
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal(m)
            }
        }
    }
}

/// INVALID_ARGUMENT for a bad name.
pub(crate) fn invalid_name(e: crate::identity::NameError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Maps authority failures.
fn authority_status(e: AuthorityError) -> Status {
    match e {
        AuthorityError::LifetimeTooLong { .. } => Status::invalid_argument(e.to_string()),
        AuthorityError::IssuerNotValid { .. } => Status::failed_precondition(e.to_string()),
        AuthorityError::Sign(_) => {
            tracing::error!(error = %e, "signing failed");
            Status::internal(e.to_string())
        }
    }
}

/// Maps store failures; database details are logged, not sent.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::DeviceConflict(m) => Status::failed_precondition(m),
        StoreError::Duplicate(m) => Status::already_exists(m),
        StoreError::NotFound(m) => Status::not_found(m),
        StoreError::Conflict(m) => Status::failed_precondition(m),
        StoreError::Changed(m) => Status::aborted(m),
        StoreError::TooSoon(m) => Status::resource_exhausted(m),
        StoreError::Superseded(m) => Status::permission_denied(m),
        StoreError::Closed => Status::unavailable("the CA is shutting down; retry"),
        other => {
            tracing::error!(error = %other, "store failure");
            Status::unavailable("the CA's database is unavailable; nothing was recorded, retry")
        }
    }
}

/// Page size of a listing: 0 means 100, more than 1000 is refused.
pub(crate) fn page_size(requested: u32) -> Result<u32, Status> {
    match requested {
        0 => Ok(100),
        n if n > 1000 => Err(Status::invalid_argument(format!(
            "page_size {n} is over the maximum of 1000"
        ))),
        n => Ok(n),
    }
}

/// A serial number as the store keeps it (lower-case hex, no colons), or INVALID_ARGUMENT.
pub(crate) fn parse_serial(given: &str) -> Result<String, Status> {
    let s = given.trim().to_ascii_lowercase().replace(':', "");
    if s.is_empty() || s.len() > 40 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(format!(
            "serial `{}` is not a hex serial number (up to 40 hex digits)",
            given.escape_default()
        )));
    }
    Ok(s)
}

/// The `serials` filter of a listing: none, or at most 1000 valid serials.
pub(crate) fn serials_filter(given: &[String]) -> Result<Option<Vec<String>>, Status> {
    if given.is_empty() {
        return Ok(None);
    }
    if given.len() > 1000 {
        return Err(Status::invalid_argument(format!(
            "{} serials given; at most 1000 per call",
            given.len()
        )));
    }
    given
        .iter()
        .map(|s| parse_serial(s))
        .collect::<Result<_, _>>()
        .map(Some)
}
