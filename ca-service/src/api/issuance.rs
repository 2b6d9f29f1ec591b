//! The one way a certificate leaves the CA: sign per policy, record durably (with the audit
//! event, and the token consumed when there is one), then answer. Shared by Issue and Enroll.

use std::time::Duration;

use hallmark_proto::v1 as pb;
use tonic::Status;

use super::ca::certificate_message;
use super::{ApiState, authority_status, reserved_name, store_status};
use crate::authority::LeafRequest;
use crate::authority::ca::der_to_pem;
use crate::authority::csr::CheckedCsr;
use crate::authority::profile::Profile;
use crate::identity::DeviceId;
use crate::store::{CertStatus, CertificateRecord, DeviceClaim, NewCertificate, Scope, WriteOp};

/// What to sign and record.
#[derive(Debug)]
pub struct Issuance<'a> {
    /// Subject CN.
    pub device_id: &'a DeviceId,
    /// Subject OU.
    pub zone: String,
    /// The authorised profile.
    pub profile: &'a Profile,
    /// The checked CSR.
    pub csr: CheckedCsr,
    /// Requested lifetime.
    pub lifetime: Option<Duration>,
    /// Provisioner scope to record.
    pub scope: Option<Scope>,
    /// Who asked (audit).
    pub actor: String,
    /// Enrollment token to consume in the same transaction.
    pub token_hash: Option<Vec<u8>>,
    /// Serial number to record when the device registers itself (IDevID).
    pub serial_number: Option<String>,
    /// Manufacturer whose IDevID enrolls the device (binds the registry entry to it).
    pub manufacturer: Option<String>,
    /// Rate limit: the serial this renews (if any) and the minimum seconds between two
    /// certificates of the device.
    pub limit: Option<(Option<String>, i64)>,
    /// With a renewal: the caller's key may be exposed; revoke it (keyCompromise) in the same
    /// transaction, exempt from the minimum interval once.
    pub key_compromise: bool,
    /// Revoke the device's other certificates in the same transaction (not with a token or
    /// a rate limit).
    pub replace_active: bool,
    /// Whether the device id may become a DNS name (where the profile has `dns_san`).
    pub dns_name: DnsName,
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

impl ApiState {
    /// Signs, records and returns the certificate with its chain and trust bundle.
    pub async fn sign_and_record(&self, i: Issuance<'_>) -> Result<pb::IssueResponse, Status> {
        // Also catches devices registered before reserved names were refused.
        self.host_names
            .check_device_id(i.device_id.as_str())
            .map_err(reserved_name)?;
        let dns_san_allowed = match i.dns_name {
            DnsName::AsProfile => true,
            DnsName::UnderZoneSuffix => self
                .host_names
                .dns_name_allowed(&i.zone, i.device_id.as_str()),
            DnsName::AsRenewed(had) => had,
        };
        let leaf = self
            .authority
            .sign_leaf(&LeafRequest {
                device_id: i.device_id,
                zone: &i.zone,
                profile: i.profile,
                csr: &i.csr,
                lifetime: i.lifetime,
                dns_san_allowed,
            })
            .map_err(authority_status)?;
        let issued_at = self.authority.clock().now();
        let spki_sha256 = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &i.csr.spki_der,
        ));
        let cert = NewCertificate {
            serial: leaf.serial.clone(),
            device_id: i.device_id.to_string(),
            profile: i.profile.name.clone(),
            zone: i.zone.clone(),
            issuer_id: leaf.issuer.id.clone(),
            subject: leaf.subject.clone(),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            scope: i.scope,
            requested_by: i.actor.clone(),
            spki_sha256,
            der: leaf.der.clone(),
            issued_at,
        };
        let device = DeviceClaim {
            id: i.device_id.to_string(),
            zone: i.zone,
            profile: i.profile.name.clone(),
            serial_number: i.serial_number,
            manufacturer: i.manufacturer,
        };
        let op = match (i.token_hash, i.limit) {
            (Some(token_hash), _) => WriteOp::Enroll {
                token_hash,
                device,
                cert: Box::new(cert.clone()),
                actor: i.actor,
            },
            (None, Some((supersedes, min_interval))) => WriteOp::IssueLimited {
                supersedes,
                min_interval,
                key_compromise: i.key_compromise,
                device,
                cert: Box::new(cert.clone()),
                actor: i.actor,
            },
            (None, None) if i.replace_active => WriteOp::IssueReplacing {
                device,
                cert: Box::new(cert.clone()),
                actor: i.actor,
            },
            (None, None) => WriteOp::Issue {
                device,
                cert: Box::new(cert.clone()),
                actor: i.actor,
            },
        };
        self.store.write(op).await.map_err(store_status)?;
        tracing::info!(
            serial = %leaf.serial,
            device = %i.device_id,
            profile = %i.profile.name,
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
            issued_at,
            superseded_by: None,
            first_authenticated_at: None,
        };
        Ok(pb::IssueResponse {
            chain_pem: format!("{}{}", der_to_pem(&leaf.der), leaf.issuer.cert_pem()),
            trust_bundle_pem: self.trust.get().bundle_pem(),
            certificate: Some(certificate_message(&record)),
        })
    }
}
