//! The service layer: every use case of the CA, between the front-ends (the gRPC API today,
//! EST later) and [`crate::authority`] (policy and signing) and [`crate::store`] (records).
//!
//! It owns every sign, renew, enroll and revoke and every change of the registry: a front-end
//! only authenticates the caller's connection, decodes the request into the types here, calls
//! one method and renders the result. Certificates leave the CA by exactly one path: an
//! [`methods::EnrollmentMethod`] turns a request into an [`issuance::Plan`], and
//! [`Service::issue_plan`] signs and records every plan the same way.

pub mod callers;
pub mod error;
pub mod issuance;
pub mod methods;
mod reads;
pub mod registry;
pub mod status;
pub mod throttle;

use std::sync::Arc;

use crate::authority::Authority;
use crate::authority::hostnames::HostNamePolicy;
use crate::authority::profile::{ProfileSet, Role};
use crate::clock::SharedClock;
use crate::store::Operators;
use crate::store::interface::Store;
use crate::trust::TrustHandle;

pub use callers::{Authenticator, Caller};
pub use error::{ServiceError, ServiceResult};
pub use reads::Reads;

/// What the service is built from.
#[derive(Debug, Clone)]
pub struct ServiceParts {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The signing authority.
    pub authority: Authority,
    /// Profiles in force.
    pub profiles: Arc<ProfileSet>,
    /// Which device ids may be used and which may become DNS names.
    pub host_names: Arc<HostNamePolicy>,
    /// Zone of new devices registered without one.
    pub default_zone: String,
    /// The trust bundle handed out with every certificate.
    pub trust: TrustHandle,
}

/// The CA's use cases; cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    authority: Authority,
    profiles: Arc<ProfileSet>,
    host_names: Arc<HostNamePolicy>,
    default_zone: String,
    trust: TrustHandle,
    authenticator: Authenticator,
}

impl Service {
    /// A service over `parts`.
    pub fn new(parts: ServiceParts) -> Self {
        let authenticator = Authenticator::new(
            parts.store.clone(),
            parts.profiles.clone(),
            parts.authority.clock().clone(),
        );
        Self {
            store: parts.store,
            authority: parts.authority,
            profiles: parts.profiles,
            host_names: parts.host_names,
            default_zone: parts.default_zone,
            trust: parts.trust,
            authenticator,
        }
    }

    /// What a front-end may read from the store (lookups and listings it renders); every
    /// write goes through a use case here.
    pub fn reads(&self) -> Reads<'_> {
        Reads(self.store.as_ref())
    }

    /// Profiles in force.
    pub fn profiles(&self) -> &ProfileSet {
        &self.profiles
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        self.authority.clock()
    }

    /// The trust material in force.
    pub fn trust(&self) -> &TrustHandle {
        &self.trust
    }

    /// Per-call caller authentication.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// Operator credentials as the profiles define them: every profile whose role is not
    /// `device`, and the admin profiles among them; `include_in_bulk` says whether a lot, zone
    /// or profile selection takes them.
    pub fn operators(&self, include_in_bulk: bool) -> Operators {
        Operators {
            profiles: self.profiles.names_where(|p| p.role != Role::Device),
            admin_profiles: self.profiles.names_where(|p| p.role == Role::Admin),
            include_in_bulk,
        }
    }
}
