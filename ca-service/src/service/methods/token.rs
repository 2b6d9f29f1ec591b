//! `Enroll` with a one-time token: an admin registered the device and made the token; the
//! token buys one certificate of the device's registered profile, consumed in the same
//! transaction that records it.

use super::EnrollmentMethod;
use crate::authority::csr::check_csr;
use crate::authority::profile::Role;
use crate::authority::token::{hashes_equal, parse_token};
use crate::clock::rfc3339;
use crate::identity::DeviceId;
use crate::service::issuance::{DnsName, EnrollRequest, LeafKind, Plan};
use crate::service::{Service, ServiceError, ServiceResult};
use crate::store::{DeviceStatus, IssuanceRule};

/// A device enrolling with a token.
#[derive(Debug)]
pub struct TokenEnrollment {
    /// The request (its `token` is not empty).
    pub req: EnrollRequest,
}

impl EnrollmentMethod for TokenEnrollment {
    async fn plan(self, service: &Service) -> ServiceResult<Plan<'_>> {
        let req = self.req;
        let hash = parse_token(&req.token)
            .map_err(|e| ServiceError::unauthenticated(e.to_string()).bad_credential())?;
        let unknown = || {
            ServiceError::unauthenticated(
                "enrollment token is not valid (unknown, mistyped or tampered); ask the operator for a new one",
            )
            .bad_credential()
        };
        let token = service.store.token(&hash).await?.ok_or_else(unknown)?;
        if !hashes_equal(&token.hash, &hash) {
            return Err(unknown());
        }
        if let Some(at) = token.used_at {
            return Err(ServiceError::unauthenticated(format!(
                "enrollment token was already used at {}; tokens are single-use, ask the operator for a new one",
                rfc3339(at)
            ))
            .bad_credential());
        }
        if token.revoked_at.is_some() {
            return Err(ServiceError::unauthenticated(
                "enrollment token was revoked; ask the operator for a new one",
            )
            .bad_credential());
        }
        let now = service.clock().now();
        if now >= token.expires_at {
            return Err(ServiceError::unauthenticated(format!(
                "enrollment token expired at {}; ask the operator for a new one",
                rfc3339(token.expires_at)
            ))
            .bad_credential());
        }
        if !req.device_id.is_empty() && req.device_id != token.device_id {
            return Err(ServiceError::denied(format!(
                "this enrollment token belongs to another device, not {}",
                req.device_id.escape_default()
            ))
            .bad_credential());
        }
        tracing::Span::current().record("device", token.device_id.as_str());
        let device = service
            .store
            .device(&token.device_id)
            .await?
            .ok_or_else(|| {
                ServiceError::precondition(format!(
                    "device {} is no longer registered",
                    token.device_id
                ))
            })?;
        if device.status != DeviceStatus::Active {
            return Err(ServiceError::precondition(format!(
                "device {} is {}; it cannot enroll until an operator resumes it",
                device.id,
                device.status.as_str()
            )));
        }
        let profile = service
            .profiles
            .get(&device.profile)
            .filter(|p| p.role == Role::Device)
            .ok_or_else(|| {
                ServiceError::precondition(format!(
                    "profile {} of device {} is not a configured device profile",
                    device.profile, device.id
                ))
            })?;
        let csr = check_csr(&req.csr, profile)?;
        let device_id = DeviceId::parse(&device.id)?;
        Ok(Plan {
            device_id,
            zone: device.zone.clone(),
            profile,
            csr,
            lifetime: None,
            scope: None,
            actor: format!("token:{}", device.id),
            serial_number: None,
            manufacturer: None,
            rule: IssuanceRule::ConsumeToken {
                token_hash: hash.to_vec(),
            },
            kind: LeafKind::Credential(DnsName::AsProfile),
        })
    }
}
