//! `hallmark.v1.Enrollment`: one-time tokens and manufacturer CAs (admin only).

use std::time::Duration;

use hallmark_proto::v1 as pb;
use pb::enrollment_server::Enrollment;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{ApiState, invalid_name, store_status};
use crate::authority::profile::Role;
use crate::authority::token::new_token;
use crate::identity::{DeviceId, validate_name};
use crate::store::{DeviceStatus, ManufacturerCaRecord, TokenRecord, WriteOp, WriteOutput};

/// Token lifetime when the request names none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The service.
#[derive(Debug, Clone)]
pub struct EnrollmentService {
    state: ApiState,
}

impl EnrollmentService {
    /// A service over `state`.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

fn manufacturer_message(m: &ManufacturerCaRecord) -> pb::ManufacturerCa {
    pb::ManufacturerCa {
        id: m.id.clone(),
        name: m.name.clone(),
        zone: m.zone.clone(),
        profile: m.profile.clone(),
        auto_register: m.auto_register,
        subject: m.subject.clone(),
        not_after: m.not_after,
        created_at: m.created_at,
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let span = tracing::info_span!("CreateToken", device = %request.get_ref().device_id);
        async move {
            let st = &self.state;
            let caller = st.auth.caller(&request).await?;
            caller.require(&[Role::Admin], "CreateToken")?;
            let req = request.into_inner();
            DeviceId::parse(&req.device_id).map_err(invalid_name)?;
            let ttl = match req.ttl_seconds {
                0 => DEFAULT_TOKEN_TTL,
                s if Duration::from_secs(s) > MAX_TOKEN_TTL => {
                    return Err(Status::invalid_argument(format!(
                        "token lifetime {s}s is over the maximum of {}s (30 days)",
                        MAX_TOKEN_TTL.as_secs()
                    )));
                }
                s => Duration::from_secs(s),
            };
            let device = st
                .store
                .device(&req.device_id)
                .await
                .map_err(store_status)?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "device {} is not registered; register it first (`hallmark device register`)",
                        req.device_id
                    ))
                })?;
            let is_device = st
                .profiles
                .get(&device.profile)
                .is_some_and(|p| p.role == Role::Device);
            if !is_device {
                return Err(Status::failed_precondition(format!(
                    "{} has profile {}, not a device profile: tokens enroll devices only \
                     (operator credentials come from `hallmark credential create`)",
                    device.id, device.profile
                )));
            }
            if device.status != DeviceStatus::Active {
                return Err(Status::failed_precondition(format!(
                    "device {} is {}; resume it before creating a token",
                    device.id,
                    device.status.as_str()
                )));
            }
            let (text, hash) =
                new_token().map_err(|_| Status::internal("no randomness for the token"))?;
            let now = st.authority.clock().now();
            let expires_at = now + ttl.as_secs() as i64;
            st.store
                .write(WriteOp::CreateToken {
                    token: TokenRecord {
                        hash: hash.to_vec(),
                        device_id: device.id.clone(),
                        profile: device.profile.clone(),
                        expires_at,
                        created_at: now,
                        created_by: caller.actor(),
                        used_at: None,
                        revoked_at: None,
                    },
                })
                .await
                .map_err(store_status)?;
            Ok(Response::new(pb::CreateTokenResponse {
                token: text,
                device_id: device.id,
                profile: device.profile,
                expires_at,
            }))
        }
        .instrument(span)
        .await
    }

    async fn revoke_tokens(
        &self,
        request: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        let span = tracing::info_span!("RevokeTokens", device = %request.get_ref().device_id);
        async move {
            let caller = self.state.auth.caller(&request).await?;
            caller.require(&[Role::Admin], "RevokeTokens")?;
            let req = request.into_inner();
            DeviceId::parse(&req.device_id).map_err(invalid_name)?;
            let out = self
                .state
                .store
                .write(WriteOp::RevokeTokens {
                    device_id: req.device_id,
                    at: self.state.authority.clock().now(),
                    actor: caller.actor(),
                })
                .await
                .map_err(store_status)?;
            let revoked = match out {
                WriteOutput::Count(n) => n as u32,
                _ => 0,
            };
            Ok(Response::new(pb::RevokeTokensResponse { revoked }))
        }
        .instrument(span)
        .await
    }

    async fn register_manufacturer_ca(
        &self,
        request: Request<pb::RegisterManufacturerCaRequest>,
    ) -> Result<Response<pb::ManufacturerCa>, Status> {
        let span = tracing::info_span!("RegisterManufacturerCa", name = %request.get_ref().name);
        async move {
            let st = &self.state;
            let caller = st.auth.caller(&request).await?;
            caller.require(&[Role::Admin], "RegisterManufacturerCa")?;
            let req = request.into_inner();
            validate_name("manufacturer name", &req.name).map_err(invalid_name)?;
            validate_name("zone", &req.zone).map_err(invalid_name)?;
            match st.profiles.get(&req.profile) {
                Some(p) if p.role == Role::Device => {}
                Some(_) => {
                    return Err(Status::invalid_argument(format!(
                        "profile {} is not a device profile",
                        req.profile
                    )));
                }
                None => {
                    return Err(Status::invalid_argument(format!(
                        "unknown profile `{}`",
                        req.profile.escape_default()
                    )));
                }
            }
            let der = if req.ca_cert.starts_with(b"-----BEGIN") {
                CertificateDer::from_pem_slice(&req.ca_cert)
                    .map_err(|e| Status::invalid_argument(format!("CA certificate PEM: {e}")))?
                    .as_ref()
                    .to_vec()
            } else {
                req.ca_cert.clone()
            };
            let (_, cert) = X509Certificate::from_der(&der).map_err(|e| {
                Status::invalid_argument(format!(
                    "the manufacturer CA is not an X.509 certificate: {e}"
                ))
            })?;
            if !crate::authority::ca::is_ca(&cert) {
                return Err(Status::invalid_argument(format!(
                    "`{}` is not a CA certificate (basicConstraints CA:TRUE missing)",
                    cert.subject()
                )));
            }
            let now = st.authority.clock().now();
            if cert.validity().not_after.timestamp() <= now {
                return Err(Status::invalid_argument(format!(
                    "the manufacturer CA `{}` expired at {}",
                    cert.subject(),
                    cert.validity().not_after
                )));
            }
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
            let record = ManufacturerCaRecord {
                id: format!("mfr-{}", hex::encode(&digest.as_ref()[..4])),
                name: req.name,
                subject: cert.subject().to_string(),
                not_after: cert.validity().not_after.timestamp(),
                cert_der: der.clone(),
                zone: req.zone,
                profile: req.profile,
                auto_register: req.auto_register,
                created_at: now,
            };
            st.store
                .write(WriteOp::AddManufacturerCa {
                    record: record.clone(),
                    actor: caller.actor(),
                })
                .await
                .map_err(store_status)?;
            Ok(Response::new(manufacturer_message(&record)))
        }
        .instrument(span)
        .await
    }

    async fn list_manufacturer_cas(
        &self,
        request: Request<pb::ListManufacturerCasRequest>,
    ) -> Result<Response<pb::ListManufacturerCasResponse>, Status> {
        let span = tracing::info_span!("ListManufacturerCas");
        async move {
            let caller = self.state.auth.caller(&request).await?;
            caller.require(&[Role::Admin], "ListManufacturerCas")?;
            let all = self
                .state
                .store
                .manufacturer_cas()
                .await
                .map_err(store_status)?;
            Ok(Response::new(pb::ListManufacturerCasResponse {
                manufacturer_cas: all.iter().map(manufacturer_message).collect(),
            }))
        }
        .instrument(span)
        .await
    }
}
