//! The CA's own credentials, asked for by the CA host itself (actor `system...`): its API
//! server certificate (made at init, renewed at start) and admin credentials made on the CA
//! host (the first admin at init, break-glass `hallmark-ca admin create`). They take the same
//! path as every other certificate: a plan, signed and recorded by the service.

use super::EnrollmentMethod;
use crate::authority::csr::check_csr;
use crate::authority::profile::SERVER_PROFILE;
use crate::authority::server_identity::SERVER_DEVICE;
use crate::identity::DeviceId;
use crate::service::issuance::{LeafKind, Plan};
use crate::service::{Service, ServiceError, ServiceResult};
use crate::store::IssuanceRule;

/// Profile of admin credentials made on the CA host.
pub(crate) const ADMIN_PROFILE: &str = "admin";

/// A credential the CA makes for itself (only the CA host's own code, `bootstrap`, asks).
#[derive(Debug, Clone)]
pub(crate) enum SystemCredential {
    /// The API server certificate, for these DNS names and IP addresses.
    CaServer {
        /// DNS names and IP addresses.
        names: Vec<String>,
        /// CSR of the server's new key.
        csr: Vec<u8>,
    },
    /// An admin credential.
    Admin {
        /// Its name (CN).
        name: DeviceId,
        /// Its zone.
        zone: String,
        /// CSR of its new key.
        csr: Vec<u8>,
        /// Who asks (audit), e.g. `system` or `system:admin-create`.
        actor: String,
    },
}

impl EnrollmentMethod for SystemCredential {
    async fn plan(self, service: &Service) -> ServiceResult<Plan<'_>> {
        match self {
            SystemCredential::CaServer { names, csr } => {
                let profile = service.profiles.get(SERVER_PROFILE).ok_or_else(|| {
                    ServiceError::internal("the internal server profile is missing")
                })?;
                let csr = check_csr(&csr, profile)?;
                Ok(Plan {
                    device_id: DeviceId::parse(SERVER_DEVICE)?,
                    zone: "ca".to_owned(),
                    profile,
                    csr,
                    lifetime: None,
                    scope: None,
                    actor: "system".to_owned(),
                    serial_number: None,
                    manufacturer: None,
                    rule: IssuanceRule::Plain,
                    kind: LeafKind::CaServer(names),
                })
            }
            SystemCredential::Admin {
                name,
                zone,
                csr,
                actor,
            } => {
                let profile = service
                    .profiles
                    .get(ADMIN_PROFILE)
                    .ok_or_else(|| ServiceError::internal("profile admin is missing"))?;
                let csr = check_csr(&csr, profile)?;
                Ok(Plan {
                    device_id: name,
                    zone,
                    profile,
                    csr,
                    lifetime: None,
                    scope: None,
                    actor,
                    serial_number: None,
                    manufacturer: None,
                    rule: IssuanceRule::Plain,
                    kind: LeafKind::CaAdmin,
                })
            }
        }
    }
}
