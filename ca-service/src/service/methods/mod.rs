//! Enrollment methods: one implementation of [`EnrollmentMethod`] per way a certificate may
//! be asked for. Each checks its own credential and rules and turns the request into a
//! [`Plan`]; none signs or records anything (that is [`Service::issue_plan`], the same for
//! all).

mod admin;
mod idevid;
mod renewal;
mod system;
mod token;

use std::future::Future;

pub use admin::AdminRequest;
pub use idevid::IdevidEnrollment;
pub use renewal::Renewal;
pub(crate) use system::{ADMIN_PROFILE, SystemCredential};
pub use token::TokenEnrollment;

use super::issuance::Plan;
use super::{Service, ServiceError, ServiceResult};
use crate::authority::profile::Profile;

/// A way to ask for a certificate.
pub trait EnrollmentMethod: Send {
    /// Checks the request against the registry, the profiles and the method's own rules, and
    /// says what to issue; or refuses it.
    fn plan(self, service: &Service) -> impl Future<Output = ServiceResult<Plan<'_>>> + Send;
}

/// The profile's minimum seconds between two certificates of one device.
fn min_interval(profile: &Profile) -> i64 {
    i64::try_from(profile.min_renewal_interval.as_secs()).unwrap_or(i64::MAX)
}

/// INVALID_ARGUMENT-kind refusal for a profile nobody may request, listing those one may.
fn unknown_profile(name: &str, service: &Service) -> ServiceError {
    let known = service.profiles().requestable_names().join(", ");
    if name.is_empty() {
        return ServiceError::invalid(format!("profile is required; one of: {known}"));
    }
    ServiceError::invalid(format!(
        "unknown profile `{}`; known profiles: {known}",
        name.escape_default()
    ))
}
