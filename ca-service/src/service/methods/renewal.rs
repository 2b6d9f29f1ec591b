//! `Renew`: a caller renews its own credential. Identity, zone and profile come from the
//! caller's recorded certificate only; the new certificate supersedes it.

use super::{EnrollmentMethod, min_interval};
use crate::authority::ca::has_names;
use crate::authority::csr::check_csr;
use crate::authority::profile::Role;
use crate::identity::DeviceId;
use crate::service::issuance::{DnsName, LeafKind, Plan, RenewRequest};
use crate::service::{Caller, Service, ServiceError, ServiceResult};
use crate::store::IssuanceRule;

/// A caller's renewal of the credential it called with.
#[derive(Debug)]
pub struct Renewal<'c> {
    /// Who renews (authenticated with the certificate it renews).
    pub caller: &'c Caller,
    /// The new key and options.
    pub req: RenewRequest,
}

impl EnrollmentMethod for Renewal<'_> {
    async fn plan(self, service: &Service) -> ServiceResult<Plan<'_>> {
        let Renewal { caller, req } = self;
        if caller.role == Role::Server {
            return Err(ServiceError::denied(
                "the CA's own server certificate is renewed by the CA at start",
            ));
        }
        let profile = service.profiles.get(&caller.profile).ok_or_else(|| {
            ServiceError::precondition(format!(
                "profile {} is no longer configured",
                caller.profile
            ))
        })?;
        if !profile.renewable {
            return Err(ServiceError::denied(format!(
                "profile {} is not renewable (time-limited access); ask an admin for a new credential",
                profile.name
            )));
        }
        let csr = check_csr(&req.csr, profile)?;
        let new_spki = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &csr.spki_der,
        ));
        if new_spki == caller.spki_sha256 && !profile.allow_key_reuse {
            return Err(ServiceError::invalid(format!(
                "the CSR reuses the current key; renewal needs a new key (profile {} does not allow key reuse)",
                profile.name
            )));
        }
        let device_id = DeviceId::parse(&caller.name)?;
        // The caller check matched the presented certificate byte for byte with the stored one.
        let had_dns_name = has_names(&caller.der, &[device_id.to_string()]);
        Ok(Plan {
            device_id,
            zone: caller.zone.clone(),
            profile,
            csr,
            lifetime: req.lifetime,
            scope: caller.scope.clone(),
            actor: caller.actor(),
            serial_number: None,
            manufacturer: None,
            rule: IssuanceRule::Limited {
                supersedes: Some(caller.serial.clone()),
                min_interval: min_interval(profile),
                key_compromise: req.key_compromise,
            },
            kind: LeafKind::Credential(DnsName::AsRenewed(had_dns_name)),
        })
    }
}
