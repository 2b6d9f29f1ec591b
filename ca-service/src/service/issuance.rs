//! The one way a certificate leaves the CA: a [`Plan`] (made by an enrollment method) is
//! signed per policy and recorded durably (with its audit event, and whatever the plan's
//! [`IssuanceRule`] consumes or replaces) before anyone sees the certificate.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::methods::{AdminRequest, EnrollmentMethod, IdevidEnrollment, Renewal, TokenEnrollment};
use super::throttle::{MAX_FAILURES, WINDOW_SECONDS};
use super::{Caller, Service, ServiceError, ServiceResult};
use crate::audit::AuditEvent;
use crate::authority::ca::der_to_pem;
use crate::authority::csr::CheckedCsr;
use crate::authority::profile::Profile;
use crate::authority::{IssuedLeaf, LeafRequest};
use crate::identity::DeviceId;
use crate::net::conn_limit::PeerKey;
use crate::store::{
    CertStatus, CertificateRecord, DeviceClaim, EnrollFailure, InitialHierarchy, IssuanceRecord,
    IssuanceRule, IssuerRecord, NewCertificate, Scope, SystemCertificate,
};

/// What an enrollment method decided: which certificate to sign for whom, and under which
/// rule to record it. The service applies every plan the same way. Only the crate's own
/// methods make plans (its fields are the crate's).
#[derive(Debug)]
pub struct Plan<'a> {
    /// Subject CN.
    pub(crate) device_id: DeviceId,
    /// Subject OU.
    pub(crate) zone: String,
    /// The authorised profile.
    pub(crate) profile: &'a Profile,
    /// The checked CSR.
    pub(crate) csr: CheckedCsr,
    /// Requested lifetime (`None`: the profile's default).
    pub(crate) lifetime: Option<Duration>,
    /// Provisioner scope to record.
    pub(crate) scope: Option<Scope>,
    /// Who asked (audit).
    pub(crate) actor: String,
    /// Serial number to record when the device registers itself (IDevID).
    pub(crate) serial_number: Option<String>,
    /// Manufacturer whose IDevID enrolls the device (binds the registry entry to it).
    pub(crate) manufacturer: Option<String>,
    /// What the record consumes, replaces or is limited by.
    pub(crate) rule: IssuanceRule,
    /// What kind of certificate: a device's or operator's, or the CA's own server certificate.
    pub(crate) kind: LeafKind,
}

/// What kind of certificate a plan is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafKind {
    /// A device or operator credential; whether the device id may become a DNS name (where
    /// the profile has `dns_san`).
    Credential(DnsName),
    /// An admin credential made on the CA host itself (the first admin, break-glass admins):
    /// its name is the operator's choice on that host, so the reserved-name rule of the API
    /// does not apply (as before the service layer); DNS name as the profile says.
    CaAdmin,
    /// The CA's own API server certificate, for these DNS names and IP addresses (with the
    /// CA-server marker only it carries).
    CaServer(Vec<String>),
}

/// Whether a certificate may carry the device id as a DNS-name SAN (where its profile has
/// `dns_san`): a DNS name is a claim on a host, so only an admin's word grants it freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsName {
    /// Requested by an admin, or enrolled with a token (an admin made it): as the profile says.
    AsProfile,
    /// Requested by a provisioner, or enrolled with an IDevID: only when the device id lies
    /// under one of the zone's `dns_suffixes`.
    UnderZoneSuffix,
    /// A renewal: as the certificate it renews had it (`true` when that carried one).
    AsRenewed(bool),
}

/// A certificate that left the CA, recorded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its record, as stored.
    pub record: CertificateRecord,
    /// The certificate followed by its issuing CA, PEM.
    pub chain_pem: String,
    /// Roots and issuing CAs in force, PEM.
    pub trust_bundle_pem: String,
}

/// `Issue`: an admin or provisioner asks for a certificate for a device or an operator.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    /// Device id (or credential name).
    pub device_id: String,
    /// Profile name.
    pub profile: String,
    /// Zone (empty: the registry's, or the default zone for a new device).
    pub zone: String,
    /// The CSR, DER or PEM.
    pub csr: Vec<u8>,
    /// Requested lifetime.
    pub lifetime: Option<Duration>,
    /// Scope of a provisioner credential (required for those, refused for others).
    pub scope: Option<Scope>,
    /// Revoke the device's other certificates with this one.
    pub replace_active: bool,
}

/// `Renew`: a caller renews its own credential.
#[derive(Debug, Clone, Default)]
pub struct RenewRequest {
    /// The CSR with the new key, DER or PEM.
    pub csr: Vec<u8>,
    /// Requested lifetime.
    pub lifetime: Option<Duration>,
    /// The current key may be exposed: revoke the current certificate (keyCompromise).
    pub key_compromise: bool,
}

/// `Enroll`: a device commissions itself with a token or its manufacturer certificate.
#[derive(Debug, Clone, Default)]
pub struct EnrollRequest {
    /// One-time enrollment token (empty: enroll with the IDevID).
    pub token: String,
    /// Device id the device believes it has (optional; checked when given).
    pub device_id: String,
    /// The CSR, DER or PEM.
    pub csr: Vec<u8>,
    /// The TLS client chain (the IDevID), if any.
    pub peer_chain: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The peer's address, for throttling failed attempts.
    pub peer: Option<IpAddr>,
}

impl Service {
    /// Issues a certificate on an admin's or provisioner's request.
    pub async fn issue(&self, caller: &Caller, req: IssueRequest) -> ServiceResult<Issued> {
        self.issue_with(AdminRequest { caller, req }).await
    }

    /// Renews the caller's own credential.
    pub async fn renew(&self, caller: &Caller, req: RenewRequest) -> ServiceResult<Issued> {
        self.issue_with(Renewal { caller, req }).await
    }

    /// Enrolls a device with a token or its IDevID. Failures that look like credential
    /// guessing count against the peer's address (see [`super::throttle`]).
    pub async fn enroll(&self, req: EnrollRequest) -> ServiceResult<Issued> {
        let peer = req.peer;
        if let Some(ip) = peer
            && let Some(secs) = self
                .store
                .enroll_throttled(
                    &PeerKey::of(ip).to_string(),
                    self.clock().now(),
                    WINDOW_SECONDS,
                    MAX_FAILURES,
                )
                .await?
        {
            return Err(ServiceError::Throttled(format!(
                "too many failed enrollment attempts from {ip}; retry in {}",
                crate::clock::human_duration(secs)
            )));
        }
        let result = if req.token.is_empty() {
            self.issue_with(IdevidEnrollment { req }).await
        } else {
            self.issue_with(TokenEnrollment { req }).await
        };
        match result {
            Err(ServiceError::BadCredential(e)) => {
                if let Some(ip) = peer {
                    let now = self.clock().now();
                    let failure = EnrollFailure {
                        peer: PeerKey::of(ip).to_string(),
                        at: now,
                        window: WINDOW_SECONDS,
                        max_failures: MAX_FAILURES,
                        throttled_event: AuditEvent::new(
                            now,
                            format!("peer:{ip}"),
                            "enroll.throttled",
                            ip.to_string(),
                            serde_json::json!({"last_error": e.to_string()}),
                        ),
                    };
                    match self.store.record_enroll_failure(failure).await {
                        Ok(true) => {
                            tracing::warn!(%ip, "enrollment throttled after repeated failures")
                        }
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "cannot count a failed enrollment"),
                    }
                }
                Err(*e)
            }
            other => other,
        }
    }

    /// Plans with `method`, then signs and records the plan.
    pub(crate) async fn issue_with<M: EnrollmentMethod>(&self, method: M) -> ServiceResult<Issued> {
        let plan = method.plan(self).await?;
        self.issue_plan(plan).await
    }

    /// Signs and records `plan`, and returns the certificate with its chain and the trust
    /// bundle. Nothing is returned before the record is durably committed.
    pub(crate) async fn issue_plan(&self, plan: Plan<'_>) -> ServiceResult<Issued> {
        let signed = self.sign_plan(plan).await?;
        self.record(signed, Vec::new()).await
    }

    /// Signs `plan`. The result is not a certificate anyone can use yet: only
    /// [`Service::record`] turns it into one, after committing its record.
    pub(crate) async fn sign_plan(&self, plan: Plan<'_>) -> ServiceResult<Signed> {
        let leaf = match &plan.kind {
            LeafKind::Credential(dns_name) => {
                // Also catches devices registered before reserved names were refused.
                self.host_names.check_device_id(plan.device_id.as_str())?;
                let dns_san_allowed = match *dns_name {
                    DnsName::AsProfile => true,
                    DnsName::UnderZoneSuffix => self
                        .host_names
                        .dns_name_allowed(&plan.zone, plan.device_id.as_str()),
                    DnsName::AsRenewed(had) => had,
                };
                self.authority
                    .sign_leaf_async(&LeafRequest {
                        device_id: &plan.device_id,
                        zone: &plan.zone,
                        profile: plan.profile,
                        csr: &plan.csr,
                        lifetime: plan.lifetime,
                        dns_san_allowed,
                    })
                    .await?
            }
            LeafKind::CaAdmin => {
                self.authority
                    .sign_leaf_async(&LeafRequest {
                        device_id: &plan.device_id,
                        zone: &plan.zone,
                        profile: plan.profile,
                        csr: &plan.csr,
                        lifetime: plan.lifetime,
                        dns_san_allowed: true,
                    })
                    .await?
            }
            LeafKind::CaServer(names) => {
                self.authority
                    .sign_server_async(names, &plan.csr, plan.profile)
                    .await?
            }
        };
        let issued_at = self.clock().now();
        let spki_sha256 = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &plan.csr.spki_der,
        ));
        let cert = NewCertificate {
            serial: leaf.serial.clone(),
            device_id: plan.device_id.to_string(),
            profile: plan.profile.name.clone(),
            zone: plan.zone.clone(),
            issuer_id: leaf.issuer.id.clone(),
            subject: leaf.subject.clone(),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            scope: plan.scope,
            requested_by: plan.actor.clone(),
            spki_sha256,
            der: leaf.der.clone(),
            issued_at,
        };
        let device = DeviceClaim {
            id: plan.device_id.to_string(),
            zone: plan.zone,
            profile: plan.profile.name.clone(),
            serial_number: plan.serial_number,
            manufacturer: plan.manufacturer,
        };
        Ok(Signed {
            leaf,
            cert,
            device,
            rule: plan.rule,
            actor: plan.actor,
        })
    }

    /// Records `signed` (with `events`, further audit events of the same change, in the same
    /// transaction) and returns the certificate with its chain and the trust bundle.
    pub(crate) async fn record(
        &self,
        signed: Signed,
        events: Vec<AuditEvent>,
    ) -> ServiceResult<Issued> {
        let Signed {
            leaf,
            cert,
            device,
            rule,
            actor,
        } = signed;
        let mut record = IssuanceRecord::new(device, cert.clone(), actor, rule);
        record.audit = events;
        self.store.record_issuance(record).await?;
        Ok(issued(leaf, cert, self.trust.get().bundle_pem()))
    }

    /// Records a new CA's root and first issuing CA with its first certificates (`signed`:
    /// the API server certificate and the first admin credential), all in one transaction.
    pub(crate) async fn record_hierarchy(
        &self,
        root: IssuerRecord,
        issuing: IssuerRecord,
        signed: Vec<Signed>,
        at: i64,
    ) -> ServiceResult<Vec<Issued>> {
        // Recorded as plain issuances: a plan that consumes, replaces or is limited by
        // something has no place in a new hierarchy.
        if let Some(s) = signed.iter().find(|s| s.rule != IssuanceRule::Plain) {
            return Err(ServiceError::internal(format!(
                "certificate {} cannot be recorded with the hierarchy: its rule is {:?}",
                s.leaf.serial, s.rule
            )));
        }
        let certificates = signed
            .iter()
            .map(|s| SystemCertificate {
                device: s.device.clone(),
                cert: s.cert.clone(),
            })
            .collect();
        self.store
            .record_initial_hierarchy(InitialHierarchy {
                root,
                issuing,
                certificates,
                at,
                actor: "system".to_owned(),
            })
            .await?;
        let trust = self.trust.get().bundle_pem();
        Ok(signed
            .into_iter()
            .map(|s| s.into_issued(trust.clone()))
            .collect())
    }
}

/// A signed certificate and the record it needs; see [`Service::sign_plan`].
#[derive(Debug)]
pub struct Signed {
    leaf: IssuedLeaf,
    cert: NewCertificate,
    device: DeviceClaim,
    rule: IssuanceRule,
    actor: String,
}

impl Signed {
    /// Its serial, lower-case hex.
    pub fn serial(&self) -> &str {
        &self.leaf.serial
    }

    /// What the caller gets once the record is committed.
    pub(super) fn into_issued(self, trust_bundle_pem: String) -> Issued {
        issued(self.leaf, self.cert, trust_bundle_pem)
    }
}

/// The certificate `leaf` (recorded as `cert`) as its requester gets it.
fn issued(leaf: IssuedLeaf, cert: NewCertificate, trust_bundle_pem: String) -> Issued {
    tracing::info!(
        serial = %leaf.serial,
        device = %cert.device_id,
        profile = %cert.profile,
        capped = leaf.capped_by_issuer,
        "issued"
    );
    let record = CertificateRecord {
        seq: 0,
        serial: cert.serial,
        device_id: cert.device_id,
        profile: cert.profile,
        zone: cert.zone,
        issuer_id: cert.issuer_id,
        subject: cert.subject,
        not_before: cert.not_before,
        not_after: cert.not_after,
        status: CertStatus::Active,
        revoked_at: None,
        revocation_reason: None,
        scope: cert.scope,
        requested_by: cert.requested_by,
        spki_sha256: cert.spki_sha256,
        der: cert.der,
        issued_at: cert.issued_at,
        superseded_by: None,
        first_authenticated_at: None,
    };
    Issued {
        record,
        chain_pem: format!("{}{}", der_to_pem(&leaf.der), leaf.issuer.cert_pem()),
        trust_bundle_pem,
    }
}
