//! The gRPC API: thin tonic services that authenticate the caller, check its rights and
//! translate to [`crate::authority`] and [`crate::store`] calls. Nothing here builds
//! certificates or runs SQL.

pub mod auth;
pub mod ca;
pub mod devices;
pub mod enroll;
pub mod enrollment;
pub mod issuance;
pub mod revocation;
pub mod throttle;
pub mod tls;

use std::sync::Arc;

use tonic::Status;

use crate::authority::csr::CsrError;
use crate::authority::hostnames::{HostNamePolicy, ReservedName};
use crate::authority::profile::ProfileSet;
use crate::authority::{Authority, AuthorityError};
use crate::identity::NameError;
use crate::store::{Operators, Store, StoreError};

pub use crate::trust::{TrustHandle, TrustMaterial};

/// What every service shares.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// The signing authority.
    pub authority: Authority,
    /// Profiles in force.
    pub profiles: Arc<ProfileSet>,
    /// Per-call caller authentication.
    pub auth: auth::Authenticator,
    /// Zone of new devices registered without one.
    pub default_zone: String,
    /// Trust bundle.
    pub trust: TrustHandle,
    /// Failed-enrollment counters per peer.
    pub throttle: Arc<throttle::EnrollThrottle>,
    /// CRL publication.
    pub crls: crate::revocation::CrlPublisher,
    /// Which device ids may be used and which may become DNS names.
    pub host_names: Arc<HostNamePolicy>,
}

/// INVALID_ARGUMENT for a device id that names the CA, the local host or an IP address.
pub(crate) fn reserved_name(e: ReservedName) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Operator credentials as `profiles` define them: every profile whose role is not `device`,
/// and the admin profiles among them; `include_in_bulk` says whether a lot, zone or profile
/// selection takes them.
pub(crate) fn operators(profiles: &ProfileSet, include_in_bulk: bool) -> Operators {
    use crate::authority::profile::Role;
    Operators {
        profiles: profiles.names_where(|p| p.role != Role::Device),
        admin_profiles: profiles.names_where(|p| p.role == Role::Admin),
        include_in_bulk,
    }
}

/// INVALID_ARGUMENT for a bad name.
pub(crate) fn invalid_name(e: NameError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// INVALID_ARGUMENT for a refused CSR.
pub(crate) fn invalid_csr(e: CsrError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Maps authority failures.
pub(crate) fn authority_status(e: AuthorityError) -> Status {
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
