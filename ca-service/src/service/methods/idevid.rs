//! `Enroll` with a manufacturer birth certificate (IDevID) as the TLS client certificate: the
//! device is found by its serial number (or registers itself where the manufacturer
//! auto-registers) and gets a certificate of its registered device profile, at most one per
//! the profile's interval (an IDevID may be presented again and again).

use super::{EnrollmentMethod, min_interval};
use crate::authority::csr::check_csr;
use crate::authority::idevid::{IdevidError, auto_device_id, verify_idevid};
use crate::authority::profile::Role;
use crate::identity::DeviceId;
use crate::service::issuance::{DnsName, EnrollRequest, LeafKind, Plan};
use crate::service::{Service, ServiceError, ServiceResult};
use crate::store::{DeviceStatus, IssuanceRule};

/// A device enrolling with its IDevID.
#[derive(Debug)]
pub struct IdevidEnrollment {
    /// The request (its `token` is empty; `peer_chain` carries the IDevID).
    pub req: EnrollRequest,
}

impl EnrollmentMethod for IdevidEnrollment {
    async fn plan(self, service: &Service) -> ServiceResult<Plan<'_>> {
        let req = self.req;
        let chain = req.peer_chain.filter(|c| !c.is_empty()).ok_or_else(|| {
            ServiceError::unauthenticated(
                "Enroll needs an enrollment token in `token`, or a manufacturer certificate \
                 (IDevID) as TLS client certificate",
            )
            .bad_credential()
        })?;
        let manufacturers = service.store.manufacturer_cas().await?;
        let now = service.clock().now();
        let idevid = verify_idevid(&chain, &manufacturers, now).map_err(|e| match e {
            IdevidError::NoSerialNumber(_) => ServiceError::invalid(e.to_string()),
            _ => ServiceError::unauthenticated(e.to_string()).bad_credential(),
        })?;
        let m = &idevid.manufacturer;
        let serial = idevid.serial_number.as_str();
        let existing = service
            .store
            .device_by_serial_number(serial, &m.name)
            .await?;
        let (device_id, zone, profile_name, self_registering) = match existing {
            Some(d) => {
                match d.status {
                    DeviceStatus::Active => {}
                    DeviceStatus::Decommissioned => {
                        return Err(ServiceError::precondition(format!(
                            "device {} is decommissioned; its IDevID enrolls it again only after an \
                             admin re-admits it (Readmit, `hallmark device readmit {}`)",
                            d.id, d.id
                        )));
                    }
                    DeviceStatus::Suspended => {
                        return Err(ServiceError::precondition(format!(
                            "device {} is suspended; it cannot enroll until an operator resumes it",
                            d.id
                        )));
                    }
                }
                (d.id, d.zone, d.profile, false)
            }
            None if m.auto_register => (
                auto_device_id(&m.name, serial),
                m.zone.clone(),
                m.profile.clone(),
                true,
            ),
            None => {
                return Err(ServiceError::denied(format!(
                    "no device with serial number {} is registered and manufacturer {} does not \
                     auto-register; an operator must register it first (Devices.Register with \
                     serial_number {})",
                    serial.escape_default(),
                    m.name,
                    serial.escape_default()
                ))
                .bad_credential());
            }
        };
        tracing::Span::current().record("device", device_id.as_str());
        if !req.device_id.is_empty() && req.device_id != device_id {
            return Err(ServiceError::denied(format!(
                "this IDevID belongs to device {device_id}, not {}",
                req.device_id.escape_default()
            ))
            .bad_credential());
        }
        let profile = service.profiles.get(&profile_name).ok_or_else(|| {
            ServiceError::precondition(format!(
                "profile {profile_name} of device {device_id} is no longer configured"
            ))
        })?;
        // A birth certificate buys a device identity, never an operator credential (a profile's
        // role may have changed in the config since the manufacturer was registered).
        if profile.role != Role::Device {
            return Err(ServiceError::precondition(format!(
                "profile {profile_name} of device {device_id} is not a device profile (its role is \
                 {}); an IDevID enrolls devices only",
                profile.role
            )));
        }
        let csr = check_csr(&req.csr, profile)?;
        if csr.spki_der == idevid.spki_der && !profile.allow_key_reuse {
            return Err(ServiceError::invalid(format!(
                "the CSR reuses the IDevID key; generate a new operational key (profile {} does not allow key reuse)",
                profile.name
            )));
        }
        let id = DeviceId::parse(&device_id)?;
        Ok(Plan {
            device_id: id,
            zone,
            profile,
            csr,
            lifetime: None,
            scope: None,
            actor: format!("idevid:{}/{}", m.name, serial),
            serial_number: self_registering.then(|| serial.to_owned()),
            manufacturer: Some(m.name.clone()),
            // An IDevID may be presented again and again: one certificate per interval.
            rule: IssuanceRule::Limited {
                supersedes: None,
                min_interval: min_interval(profile),
                key_compromise: false,
            },
            kind: LeafKind::Credential(DnsName::UnderZoneSuffix),
        })
    }
}
