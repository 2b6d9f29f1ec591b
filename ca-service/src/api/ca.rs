//! `hallmark.v1.CertificateAuthority`: issue, get, list, trust bundle.

use std::time::Duration;

use hallmark_proto::v1 as pb;
use pb::certificate_authority_server::CertificateAuthority;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::Caller;
use super::issuance::{DnsName, Issuance};
use super::{
    ApiState, invalid_csr, invalid_name, parse_serial, reserved_name, serials_filter, store_status,
};
use crate::authority::ca::has_names;
use crate::authority::csr::check_csr;
use crate::authority::name::rfc4514_subject;
use crate::authority::profile::{Profile, Role};
use crate::identity::{DeviceId, validate_name};
use crate::store::{CertFilter, CertStatus, CertificateRecord, DeviceStatus, Scope};

/// The service.
#[derive(Debug, Clone)]
pub struct CaService {
    state: ApiState,
}

impl CaService {
    /// A service over `state`.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

/// Converts a record to its wire form.
pub fn certificate_message(r: &CertificateRecord) -> pb::Certificate {
    pb::Certificate {
        serial: r.serial.clone(),
        device_id: r.device_id.clone(),
        profile: r.profile.clone(),
        zone: r.zone.clone(),
        issuer_id: r.issuer_id.clone(),
        not_before: r.not_before,
        not_after: r.not_after,
        status: match r.status {
            CertStatus::Active if r.superseded_by.is_some() => pb::CertificateStatus::Superseded,
            CertStatus::Active => pb::CertificateStatus::Active,
            CertStatus::Revoked => pb::CertificateStatus::Revoked,
            CertStatus::Suspended => pb::CertificateStatus::Suspended,
        } as i32,
        revoked_at: r.revoked_at.unwrap_or(0),
        revocation_reason: r.revocation_reason.unwrap_or(0) as u32,
        der: r.der.clone(),
        // From the certificate itself, so rows recorded before subjects were RFC 4514 strings
        // read the same.
        subject: rfc4514_subject(&r.der).unwrap_or_else(|| r.subject.clone()),
        issued_at: r.issued_at,
        superseded_by: r.superseded_by.clone().unwrap_or_default(),
        scope: r.scope.as_ref().map(|s| pb::ProvisionerScope {
            profiles: s.profiles.clone(),
            zones: s.zones.clone(),
        }),
    }
}

fn check_scope_request(
    profile: &Profile,
    scope: Option<&pb::ProvisionerScope>,
    state: &ApiState,
) -> Result<Option<Scope>, Status> {
    let given = scope.filter(|s| !s.profiles.is_empty() || !s.zones.is_empty());
    if profile.role != Role::Provisioner {
        return match given {
            Some(_) => Err(Status::invalid_argument(format!(
                "a scope applies only to provisioner credentials, not to profile {}",
                profile.name
            ))),
            None => Ok(None),
        };
    }
    let Some(s) = given.filter(|s| !s.profiles.is_empty() && !s.zones.is_empty()) else {
        return Err(Status::invalid_argument(
            "a provisioner credential needs a scope: at least one profile in scope.profiles \
             and one zone in scope.zones",
        ));
    };
    for p in &s.profiles {
        match state.profiles.get(p) {
            Some(pp) if pp.may_be_requested_by(Role::Provisioner) => {}
            Some(_) => {
                return Err(Status::invalid_argument(format!(
                    "profile {p} cannot be requested by provisioners, so it cannot be in a provisioner scope"
                )));
            }
            None => return Err(unknown_profile(p, state)),
        }
    }
    for z in &s.zones {
        validate_name("zone", z).map_err(invalid_name)?;
    }
    Ok(Some(Scope {
        profiles: s.profiles.clone(),
        zones: s.zones.clone(),
    }))
}

fn unknown_profile(name: &str, state: &ApiState) -> Status {
    if name.is_empty() {
        return Status::invalid_argument(format!(
            "profile is required; one of: {}",
            state.profiles.requestable_names().join(", ")
        ));
    }
    Status::invalid_argument(format!(
        "unknown profile `{}`; known profiles: {}",
        name.escape_default(),
        state.profiles.requestable_names().join(", ")
    ))
}

impl CaService {
    async fn issue_inner(
        &self,
        caller: Caller,
        req: pb::IssueRequest,
    ) -> Result<pb::IssueResponse, Status> {
        let st = &self.state;
        caller.require(&[Role::Admin, Role::Provisioner], "Issue")?;
        let device_id = DeviceId::parse(&req.device_id).map_err(invalid_name)?;
        st.host_names
            .check_device_id(device_id.as_str())
            .map_err(reserved_name)?;
        let profile = st
            .profiles
            .get(&req.profile)
            .filter(|p| !p.requesters.is_empty())
            .ok_or_else(|| unknown_profile(&req.profile, st))?;
        if !profile.may_be_requested_by(caller.role) {
            return Err(Status::permission_denied(format!(
                "role {} may not request profile {}",
                caller.role, profile.name
            )));
        }
        if !req.zone.is_empty() {
            validate_name("zone", &req.zone).map_err(invalid_name)?;
        }
        let scope = check_scope_request(profile, req.scope.as_ref(), st)?;

        // Subject and zone come from the registry; a new device is registered by this issuance.
        let existing = st
            .store
            .device(device_id.as_str())
            .await
            .map_err(store_status)?;
        let zone = match &existing {
            Some(d) => {
                if d.status != DeviceStatus::Active {
                    return Err(Status::failed_precondition(format!(
                        "device {device_id} is {}; resume it before issuing",
                        d.status.as_str()
                    )));
                }
                if !req.zone.is_empty() && req.zone != d.zone {
                    return Err(Status::failed_precondition(format!(
                        "device {device_id} is registered in zone {}, not {}",
                        d.zone, req.zone
                    )));
                }
                if d.profile != profile.name {
                    return Err(Status::failed_precondition(format!(
                        "device {device_id} is registered with profile {}, not {}",
                        d.profile, profile.name
                    )));
                }
                d.zone.clone()
            }
            None if req.zone.is_empty() => st.default_zone.clone(),
            None => req.zone.clone(),
        };
        caller
            .require_scope("issue", &profile.name, &zone)
            .map_err(Status::permission_denied)?;

        let csr = check_csr(&req.csr, profile).map_err(invalid_csr)?;
        let lifetime =
            (req.lifetime_seconds > 0).then(|| Duration::from_secs(req.lifetime_seconds));
        st.sign_and_record(Issuance {
            device_id: &device_id,
            zone,
            profile,
            csr,
            lifetime,
            scope,
            actor: caller.actor(),
            token_hash: None,
            serial_number: None,
            manufacturer: None,
            limit: None,
            replace_active: req.replace_active,
            key_compromise: false,
            dns_name: if caller.role == Role::Admin {
                DnsName::AsProfile
            } else {
                DnsName::UnderZoneSuffix
            },
        })
        .await
    }
}

impl CaService {
    /// Renewal: identity, zone and profile from the caller's recorded certificate only.
    async fn renew_inner(
        &self,
        caller: Caller,
        current_der: &[u8],
        req: pb::RenewRequest,
    ) -> Result<pb::IssueResponse, Status> {
        let st = &self.state;
        if caller.role == Role::Server {
            return Err(Status::permission_denied(
                "the CA's own server certificate is renewed by the CA at start",
            ));
        }
        let profile = st.profiles.get(&caller.profile).ok_or_else(|| {
            Status::failed_precondition(format!(
                "profile {} is no longer configured",
                caller.profile
            ))
        })?;
        if !profile.renewable {
            return Err(Status::permission_denied(format!(
                "profile {} is not renewable (time-limited access); ask an admin for a new credential",
                profile.name
            )));
        }
        let csr = check_csr(&req.csr, profile).map_err(invalid_csr)?;
        let new_spki = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &csr.spki_der,
        ));
        if new_spki == caller.spki_sha256 && !profile.allow_key_reuse {
            return Err(Status::invalid_argument(format!(
                "the CSR reuses the current key; renewal needs a new key (profile {} does not allow key reuse)",
                profile.name
            )));
        }
        let device_id = DeviceId::parse(&caller.name).map_err(invalid_name)?;
        let had_dns_name = has_names(current_der, &[device_id.to_string()]);
        let lifetime =
            (req.lifetime_seconds > 0).then(|| Duration::from_secs(req.lifetime_seconds));
        let min_interval =
            i64::try_from(profile.min_renewal_interval.as_secs()).unwrap_or(i64::MAX);
        st.sign_and_record(Issuance {
            device_id: &device_id,
            zone: caller.zone.clone(),
            profile,
            csr,
            lifetime,
            scope: caller.scope.clone(),
            actor: caller.actor(),
            token_hash: None,
            serial_number: None,
            manufacturer: None,
            limit: Some((Some(caller.serial.clone()), min_interval)),
            replace_active: false,
            key_compromise: req.key_compromise,
            dns_name: DnsName::AsRenewed(had_dns_name),
        })
        .await
    }
}

#[tonic::async_trait]
impl CertificateAuthority for CaService {
    async fn issue(
        &self,
        request: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let span = tracing::info_span!("Issue", caller = tracing::field::Empty, device = %request.get_ref().device_id, profile = %request.get_ref().profile);
        async move {
            let caller = self.state.auth.caller(&request).await?;
            tracing::Span::current().record("caller", caller.actor());
            self.issue_inner(caller, request.into_inner())
                .await
                .map(Response::new)
        }
        .instrument(span)
        .await
    }

    async fn get_certificate(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        let span = tracing::info_span!("GetCertificate", serial = %request.get_ref().serial);
        async move {
            let caller = self.state.auth.caller(&request).await?;
            let serial = parse_serial(&request.get_ref().serial)?;
            let record = self
                .state
                .store
                .certificate(&serial)
                .await
                .map_err(store_status)?;
            match record {
                Some(r) if caller.may_read(&r.device_id, &r.profile, &r.zone) => {
                    Ok(Response::new(certificate_message(&r)))
                }
                Some(_) => Err(Status::permission_denied(format!(
                    "{} may not read certificate {serial}",
                    caller.name
                ))),
                None => Err(Status::not_found(format!(
                    "no certificate with serial {serial}"
                ))),
            }
        }
        .instrument(span)
        .await
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let span = tracing::info_span!("ListCertificates");
        async move {
            let caller = self.state.auth.caller(&request).await?;
            caller.require(
                &[Role::Admin, Role::BrokerAgent, Role::Device],
                "ListCertificates",
            )?;
            let req = request.into_inner();
            let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let (status, superseded) = match pb::CertificateStatus::try_from(req.status) {
                Ok(pb::CertificateStatus::Unspecified) => (None, None),
                Ok(pb::CertificateStatus::Active) => (Some(CertStatus::Active), Some(false)),
                Ok(pb::CertificateStatus::Superseded) => (Some(CertStatus::Active), Some(true)),
                Ok(pb::CertificateStatus::Revoked) => (Some(CertStatus::Revoked), None),
                Ok(pb::CertificateStatus::Suspended) => (Some(CertStatus::Suspended), None),
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "status: unknown value {}",
                        req.status
                    )));
                }
            };
            let mut filter = CertFilter {
                device_id: nonempty(&req.device_id),
                profile: nonempty(&req.profile),
                status,
                superseded,
                issuer_id: nonempty(&req.issuer_id),
                expiring: (req.expiring_within_seconds > 0).then(|| {
                    let now = self.state.authority.clock().now();
                    let within = i64::try_from(req.expiring_within_seconds).unwrap_or(i64::MAX);
                    (now, now.saturating_add(within))
                }),
                serials: serials_filter(&req.serials)?,
            };
            if caller.role == Role::Device {
                // A device sees only its own certificates.
                if filter
                    .device_id
                    .as_deref()
                    .is_some_and(|d| d != caller.name)
                {
                    return Err(Status::permission_denied(format!(
                        "{} may list only its own certificates",
                        caller.name
                    )));
                }
                filter.device_id = Some(caller.name.clone());
            }
            let page_size = super::page_size(req.page_size)?;
            let after = if req.page_token.is_empty() {
                0
            } else {
                req.page_token
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Status::invalid_argument(
                            "page_token is not one this server returned; start again without it",
                        )
                    })?
            };
            let page = self
                .state
                .store
                .list_certificates(&filter, after, page_size)
                .await
                .map_err(store_status)?;
            Ok(Response::new(pb::ListCertificatesResponse {
                certificates: page.items.iter().map(certificate_message).collect(),
                next_page_token: page.next.map(|n| n.to_string()).unwrap_or_default(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let span = tracing::info_span!("Renew", caller = tracing::field::Empty);
        async move {
            let caller = self.state.auth.caller(&request).await?;
            tracing::Span::current().record("caller", caller.actor());
            // The caller check matched this certificate byte for byte with the stored one.
            let current_der = request
                .peer_certs()
                .and_then(|c| c.first().map(|d| d.to_vec()))
                .unwrap_or_default();
            self.renew_inner(caller, &current_der, request.into_inner())
                .await
                .map(Response::new)
        }
        .instrument(span)
        .await
    }

    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let span = tracing::info_span!(
            "Enroll",
            peer = ?request.remote_addr(),
            device = tracing::field::Empty
        );
        super::enroll::enroll(&self.state, request)
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn get_trust_bundle(
        &self,
        _request: Request<pb::GetTrustBundleRequest>,
    ) -> Result<Response<pb::TrustBundle>, Status> {
        let _span = tracing::info_span!("GetTrustBundle").entered();
        // Public information: no credential needed (a device bootstrapping trust has none).
        let trust = self.state.trust.get();
        Ok(Response::new(pb::TrustBundle {
            roots_pem: trust.roots_pem.clone(),
            intermediates_pem: trust.intermediates_pem.clone(),
        }))
    }
}
