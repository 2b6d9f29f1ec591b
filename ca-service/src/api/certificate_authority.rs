//! `hallmark.v1.CertificateAuthority`: issue, renew, enroll, get, list, trust bundle.

use std::time::Duration;

use hallmark_proto::v1 as pb;
use pb::certificate_authority_server::CertificateAuthority;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::rpc_span;
use super::messages::certificate_message;
use super::{ApiState, parse_serial, serials_filter};
use crate::authority::profile::Role;
use crate::service::issuance::{EnrollRequest, IssueRequest, Issued, RenewRequest};
use crate::store::{CertFilter, CertStatus, Scope};

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

/// A requested lifetime: 0 means the profile's default.
fn lifetime(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

fn issue_response(i: Issued) -> pb::IssueResponse {
    pb::IssueResponse {
        chain_pem: i.chain_pem,
        trust_bundle_pem: i.trust_bundle_pem,
        certificate: Some(certificate_message(&i.record)),
    }
}

#[tonic::async_trait]
impl CertificateAuthority for CaService {
    async fn issue(
        &self,
        request: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let r = request.get_ref();
        let span = rpc_span!("Issue", device = %r.device_id, profile = %r.profile);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let req = IssueRequest {
                    device_id: req.device_id,
                    profile: req.profile,
                    zone: req.zone,
                    csr: req.csr,
                    lifetime: lifetime(req.lifetime_seconds),
                    scope: req.scope.map(|s| Scope {
                        profiles: s.profiles,
                        zones: s.zones,
                    }),
                    replace_active: req.replace_active,
                };
                let issued = self.state.service.issue(&caller, req).await?;
                Ok(issue_response(issued))
            })
            .await
    }

    async fn get_certificate(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        let span = rpc_span!("GetCertificate", serial = %request.get_ref().serial);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let serial = parse_serial(&req.serial)?;
                let record = self
                    .state
                    .service
                    .reads()
                    .certificate(&serial)
                    .await
                    .map_err(super::store_status)?;
                match record {
                    Some(r) if caller.may_read(&r.device_id, &r.profile, &r.zone) => {
                        Ok(certificate_message(&r))
                    }
                    Some(_) => Err(Status::permission_denied(format!(
                        "{} may not read certificate {serial}",
                        caller.name
                    ))),
                    None => Err(Status::not_found(format!(
                        "no certificate with serial {serial}"
                    ))),
                }
            })
            .await
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let span = rpc_span!("ListCertificates");
        self.state
            .authenticated(span, request, |caller, req| async move {
                caller.require(
                    &[Role::Admin, Role::BrokerAgent, Role::Device],
                    "ListCertificates",
                )?;
                let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                let (status, superseded) = match pb::CertificateStatus::try_from(req.status) {
                    Ok(pb::CertificateStatus::Unspecified) => (None, None),
                    Ok(pb::CertificateStatus::Active) => (Some(CertStatus::Active), Some(false)),
                    Ok(pb::CertificateStatus::Superseded) => {
                        (Some(CertStatus::Active), Some(true))
                    }
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
                        let now = self.state.service.clock().now();
                        let within =
                            i64::try_from(req.expiring_within_seconds).unwrap_or(i64::MAX);
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
                    .service
                    .reads()
                    .list_certificates(&filter, after, page_size)
                    .await
                    .map_err(super::store_status)?;
                Ok(pb::ListCertificatesResponse {
                    certificates: page.items.iter().map(certificate_message).collect(),
                    next_page_token: page.next.map(|n| n.to_string()).unwrap_or_default(),
                })
            })
            .await
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let span = rpc_span!("Renew");
        self.state
            .authenticated(span, request, |caller, req| async move {
                let req = RenewRequest {
                    csr: req.csr,
                    lifetime: lifetime(req.lifetime_seconds),
                    key_compromise: req.key_compromise,
                };
                let issued = self.state.service.renew(&caller, req).await?;
                Ok(issue_response(issued))
            })
            .await
    }

    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        // No credential to authenticate: the token or the IDevID is the credential.
        let span = tracing::info_span!(
            "Enroll",
            peer = ?request.remote_addr(),
            device = tracing::field::Empty
        );
        let peer = request.remote_addr().map(|a| a.ip());
        let peer_chain = request.peer_certs();
        let req = request.into_inner();
        let req = EnrollRequest {
            token: req.token,
            device_id: req.device_id,
            csr: req.csr,
            peer_chain,
            peer,
        };
        let issued = self.state.service.enroll(req).instrument(span).await?;
        Ok(Response::new(issue_response(issued)))
    }

    async fn get_trust_bundle(
        &self,
        _request: Request<pb::GetTrustBundleRequest>,
    ) -> Result<Response<pb::TrustBundle>, Status> {
        let _span = tracing::info_span!("GetTrustBundle").entered();
        // Public information: no credential needed (a device bootstrapping trust has none).
        let trust = self.state.service.trust().get();
        Ok(Response::new(pb::TrustBundle {
            roots_pem: trust.roots_pem.clone(),
            intermediates_pem: trust.intermediates_pem.clone(),
        }))
    }
}
