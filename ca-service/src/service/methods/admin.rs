//! `Issue`: an admin or a provisioner asks for a certificate for a device (or an operator
//! credential). Subject and zone come from the registry; a new device is registered by the
//! issuance.

use super::{EnrollmentMethod, unknown_profile};
use crate::authority::csr::check_csr;
use crate::authority::profile::{Profile, Role};
use crate::identity::{DeviceId, validate_name};
use crate::service::issuance::{DnsName, IssueRequest, LeafKind, Plan};
use crate::service::{Caller, Service, ServiceError, ServiceResult};
use crate::store::{DeviceStatus, IssuanceRule, Scope};

/// An admin's or provisioner's request.
#[derive(Debug)]
pub struct AdminRequest<'c> {
    /// Who asks.
    pub caller: &'c Caller,
    /// What for.
    pub req: IssueRequest,
}

/// The scope to record with a provisioner credential: required for those (at least one
/// profile provisioners may request and one zone), refused for every other profile.
fn check_scope_request(
    profile: &Profile,
    scope: Option<&Scope>,
    service: &Service,
) -> ServiceResult<Option<Scope>> {
    let given = scope.filter(|s| !s.profiles.is_empty() || !s.zones.is_empty());
    if profile.role != Role::Provisioner {
        return match given {
            Some(_) => Err(ServiceError::invalid(format!(
                "a scope applies only to provisioner credentials, not to profile {}",
                profile.name
            ))),
            None => Ok(None),
        };
    }
    let Some(s) = given.filter(|s| !s.profiles.is_empty() && !s.zones.is_empty()) else {
        return Err(ServiceError::invalid(
            "a provisioner credential needs a scope: at least one profile in scope.profiles \
             and one zone in scope.zones",
        ));
    };
    for p in &s.profiles {
        match service.profiles().get(p) {
            Some(pp) if pp.may_be_requested_by(Role::Provisioner) => {}
            Some(_) => {
                return Err(ServiceError::invalid(format!(
                    "profile {p} cannot be requested by provisioners, so it cannot be in a provisioner scope"
                )));
            }
            None => return Err(unknown_profile(p, service)),
        }
    }
    for z in &s.zones {
        validate_name("zone", z)?;
    }
    Ok(Some(s.clone()))
}

impl EnrollmentMethod for AdminRequest<'_> {
    async fn plan(self, service: &Service) -> ServiceResult<Plan<'_>> {
        let AdminRequest { caller, req } = self;
        caller.require(&[Role::Admin, Role::Provisioner], "Issue")?;
        let device_id = DeviceId::parse(&req.device_id)?;
        service.host_names.check_device_id(device_id.as_str())?;
        let profile = service
            .profiles
            .get(&req.profile)
            .filter(|p| !p.requesters.is_empty())
            .ok_or_else(|| unknown_profile(&req.profile, service))?;
        if !profile.may_be_requested_by(caller.role) {
            return Err(ServiceError::denied(format!(
                "role {} may not request profile {}",
                caller.role, profile.name
            )));
        }
        if !req.zone.is_empty() {
            validate_name("zone", &req.zone)?;
        }
        let scope = check_scope_request(profile, req.scope.as_ref(), service)?;

        // Subject and zone come from the registry; a new device is registered by this issuance.
        // A request that names its zone is signed for that zone without reading the registry
        // first: the write checks, in its transaction, that an existing device is active and
        // of this zone and profile, and records nothing otherwise (the hot path of a factory
        // lot: no read per certificate).
        let existing = if req.zone.is_empty() {
            service.store.device(device_id.as_str()).await?
        } else {
            None
        };
        let zone = match &existing {
            Some(d) => {
                if d.status != DeviceStatus::Active {
                    return Err(ServiceError::precondition(format!(
                        "device {device_id} is {}; resume it before issuing",
                        d.status.as_str()
                    )));
                }
                if !req.zone.is_empty() && req.zone != d.zone {
                    return Err(ServiceError::precondition(format!(
                        "device {device_id} is registered in zone {}, not {}",
                        d.zone, req.zone
                    )));
                }
                if d.profile != profile.name {
                    return Err(ServiceError::precondition(format!(
                        "device {device_id} is registered with profile {}, not {}",
                        d.profile, profile.name
                    )));
                }
                d.zone.clone()
            }
            None if req.zone.is_empty() => service.default_zone.clone(),
            None => req.zone.clone(),
        };
        caller
            .require_scope("issue", &profile.name, &zone)
            .map_err(ServiceError::Denied)?;

        let csr = check_csr(&req.csr, profile)?;
        Ok(Plan {
            device_id,
            zone,
            profile,
            csr,
            lifetime: req.lifetime,
            scope,
            actor: caller.actor(),
            serial_number: None,
            manufacturer: None,
            rule: if req.replace_active {
                IssuanceRule::ReplaceActive
            } else {
                IssuanceRule::Plain
            },
            kind: LeafKind::Credential(if caller.role == Role::Admin {
                DnsName::AsProfile
            } else {
                DnsName::UnderZoneSuffix
            }),
        })
    }
}
