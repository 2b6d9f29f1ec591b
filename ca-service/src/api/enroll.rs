//! `Enroll`: commissioning with a one-time token (no client certificate) or with a
//! manufacturer birth certificate (IDevID) as the TLS client certificate. Failures that look
//! like credential guessing count against the peer's address (see [`super::throttle`]).

use std::sync::Arc;

use hallmark_proto::v1 as pb;
use rustls_pki_types::CertificateDer;
use tonic::{Request, Status};

use super::issuance::{DnsName, Issuance};
use super::throttle::FailureOutcome;
use super::{ApiState, invalid_csr, invalid_name, store_status};
use crate::audit::AuditEvent;
use crate::authority::csr::check_csr;
use crate::authority::idevid::{IdevidError, auto_device_id, verify_idevid};
use crate::authority::profile::Role;
use crate::authority::token::{hashes_equal, parse_token};
use crate::clock::rfc3339;
use crate::identity::DeviceId;
use crate::store::{DeviceStatus, WriteOp};

/// A refusal, and whether it counts as a failed credential (throttled) or not.
enum Refusal {
    Credential(Status),
    Other(Status),
}

fn cred(s: Status) -> Refusal {
    Refusal::Credential(s)
}

fn other(s: Status) -> Refusal {
    Refusal::Other(s)
}

/// Handles one `Enroll` call.
pub async fn enroll(
    state: &ApiState,
    request: Request<pb::EnrollRequest>,
) -> Result<pb::IssueResponse, Status> {
    let peer = request.remote_addr().map(|a| a.ip());
    if let Some(ip) = peer
        && let Err(secs) = state.throttle.check(ip)
    {
        return Err(Status::resource_exhausted(format!(
            "too many failed enrollment attempts from {ip}; retry in {}",
            crate::clock::human_duration(secs as i64)
        )));
    }
    let certs = request.peer_certs();
    let req = request.into_inner();
    let result = if req.token.is_empty() {
        by_idevid(state, certs, &req).await
    } else {
        by_token(state, &req).await
    };
    match result {
        Ok(r) => Ok(r),
        Err(Refusal::Other(s)) => Err(s),
        Err(Refusal::Credential(s)) => {
            if let Some(ip) = peer
                && state.throttle.record_failure(ip) == FailureOutcome::ThrottleStarted
            {
                tracing::warn!(%ip, "enrollment throttled after repeated failures");
                let event = AuditEvent::new(
                    state.authority.clock().now(),
                    format!("peer:{ip}"),
                    "enroll.throttled",
                    ip.to_string(),
                    serde_json::json!({"last_error": s.message()}),
                );
                if let Err(e) = state.store.write(WriteOp::Audit(event)).await {
                    tracing::error!(error = %e, "cannot audit the throttle");
                }
            }
            Err(s)
        }
    }
}

async fn by_token(state: &ApiState, req: &pb::EnrollRequest) -> Result<pb::IssueResponse, Refusal> {
    let hash = parse_token(&req.token).map_err(|e| cred(Status::unauthenticated(e.to_string())))?;
    let unknown = || {
        cred(Status::unauthenticated(
            "enrollment token is not valid (unknown, mistyped or tampered); ask the operator for a new one",
        ))
    };
    let token = state
        .store
        .token(&hash)
        .await
        .map_err(|e| other(store_status(e)))?
        .ok_or_else(unknown)?;
    if !hashes_equal(&token.hash, &hash) {
        return Err(unknown());
    }
    if let Some(at) = token.used_at {
        return Err(cred(Status::unauthenticated(format!(
            "enrollment token was already used at {}; tokens are single-use, ask the operator for a new one",
            rfc3339(at)
        ))));
    }
    if token.revoked_at.is_some() {
        return Err(cred(Status::unauthenticated(
            "enrollment token was revoked; ask the operator for a new one",
        )));
    }
    let now = state.authority.clock().now();
    if now >= token.expires_at {
        return Err(cred(Status::unauthenticated(format!(
            "enrollment token expired at {}; ask the operator for a new one",
            rfc3339(token.expires_at)
        ))));
    }
    if !req.device_id.is_empty() && req.device_id != token.device_id {
        return Err(cred(Status::permission_denied(format!(
            "this enrollment token belongs to another device, not {}",
            req.device_id.escape_default()
        ))));
    }
    tracing::Span::current().record("device", token.device_id.as_str());
    let device = state
        .store
        .device(&token.device_id)
        .await
        .map_err(|e| other(store_status(e)))?
        .ok_or_else(|| {
            other(Status::failed_precondition(format!(
                "device {} is no longer registered",
                token.device_id
            )))
        })?;
    if device.status != DeviceStatus::Active {
        return Err(other(Status::failed_precondition(format!(
            "device {} is {}; it cannot enroll until an operator resumes it",
            device.id,
            device.status.as_str()
        ))));
    }
    let profile = state
        .profiles
        .get(&device.profile)
        .filter(|p| p.role == Role::Device)
        .ok_or_else(|| {
            other(Status::failed_precondition(format!(
                "profile {} of device {} is not a configured device profile",
                device.profile, device.id
            )))
        })?;
    let csr = check_csr(&req.csr, profile).map_err(|e| other(invalid_csr(e)))?;
    let device_id = DeviceId::parse(&device.id).map_err(|e| other(invalid_name(e)))?;
    state
        .sign_and_record(Issuance {
            device_id: &device_id,
            zone: device.zone.clone(),
            profile,
            csr,
            lifetime: None,
            scope: None,
            actor: format!("token:{}", device.id),
            token_hash: Some(hash.to_vec()),
            serial_number: None,
            manufacturer: None,
            limit: None,
            replace_active: false,
            key_compromise: false,
            dns_name: DnsName::AsProfile,
        })
        .await
        .map_err(other)
}

async fn by_idevid(
    state: &ApiState,
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    req: &pb::EnrollRequest,
) -> Result<pb::IssueResponse, Refusal> {
    let chain = certs.filter(|c| !c.is_empty()).ok_or_else(|| {
        cred(Status::unauthenticated(
            "Enroll needs an enrollment token in `token`, or a manufacturer certificate \
             (IDevID) as TLS client certificate",
        ))
    })?;
    let manufacturers = state
        .store
        .manufacturer_cas()
        .await
        .map_err(|e| other(store_status(e)))?;
    let now = state.authority.clock().now();
    let idevid = verify_idevid(&chain, &manufacturers, now).map_err(|e| match e {
        IdevidError::NoSerialNumber(_) => other(Status::invalid_argument(e.to_string())),
        _ => cred(Status::unauthenticated(e.to_string())),
    })?;
    let m = &idevid.manufacturer;
    let serial = idevid.serial_number.as_str();
    let existing = state
        .store
        .device_by_serial_number(serial, &m.name)
        .await
        .map_err(|e| other(store_status(e)))?;
    let (device_id, zone, profile_name, self_registering) = match existing {
        Some(d) => {
            match d.status {
                DeviceStatus::Active => {}
                DeviceStatus::Decommissioned => {
                    return Err(other(Status::failed_precondition(format!(
                        "device {} is decommissioned; its IDevID enrolls it again only after an \
                         admin re-admits it (Readmit, `hallmark device readmit {}`)",
                        d.id, d.id
                    ))));
                }
                DeviceStatus::Suspended => {
                    return Err(other(Status::failed_precondition(format!(
                        "device {} is suspended; it cannot enroll until an operator resumes it",
                        d.id
                    ))));
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
            return Err(cred(Status::permission_denied(format!(
                "no device with serial number {} is registered and manufacturer {} does not \
                 auto-register; an operator must register it first (Devices.Register with \
                 serial_number {})",
                serial.escape_default(),
                m.name,
                serial.escape_default()
            ))));
        }
    };
    tracing::Span::current().record("device", device_id.as_str());
    if !req.device_id.is_empty() && req.device_id != device_id {
        return Err(cred(Status::permission_denied(format!(
            "this IDevID belongs to device {device_id}, not {}",
            req.device_id.escape_default()
        ))));
    }
    let profile = state.profiles.get(&profile_name).ok_or_else(|| {
        other(Status::failed_precondition(format!(
            "profile {profile_name} of device {device_id} is no longer configured"
        )))
    })?;
    // A birth certificate buys a device identity, never an operator credential (a profile's
    // role may have changed in the config since the manufacturer was registered).
    if profile.role != Role::Device {
        return Err(other(Status::failed_precondition(format!(
            "profile {profile_name} of device {device_id} is not a device profile (its role is \
             {}); an IDevID enrolls devices only",
            profile.role
        ))));
    }
    let csr = check_csr(&req.csr, profile).map_err(|e| other(invalid_csr(e)))?;
    if csr.spki_der == idevid.spki_der && !profile.allow_key_reuse {
        return Err(other(Status::invalid_argument(format!(
            "the CSR reuses the IDevID key; generate a new operational key (profile {} does not allow key reuse)",
            profile.name
        ))));
    }
    let id = DeviceId::parse(&device_id).map_err(|e| other(invalid_name(e)))?;
    state
        .sign_and_record(Issuance {
            device_id: &id,
            zone,
            profile,
            csr,
            lifetime: None,
            scope: None,
            actor: format!("idevid:{}/{}", m.name, serial),
            token_hash: None,
            serial_number: self_registering.then(|| serial.to_owned()),
            manufacturer: Some(m.name.clone()),
            // An IDevID may be presented again and again: one certificate per interval.
            limit: Some((
                None,
                i64::try_from(profile.min_renewal_interval.as_secs()).unwrap_or(i64::MAX),
            )),
            replace_active: false,
            key_compromise: false,
            dns_name: DnsName::UnderZoneSuffix,
        })
        .await
        .map_err(other)
}
