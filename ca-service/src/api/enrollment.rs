//! `hallmark.v1.Enrollment`: one-time tokens and manufacturer CAs (admin only).

use hallmark_proto::v1 as pb;
use pb::enrollment_server::Enrollment;
use tonic::{Request, Response, Status};

use super::auth::rpc_span;
use super::messages::manufacturer_message;
use super::{ApiState, store_status};
use crate::authority::profile::Role;
use crate::service::registry::ManufacturerCaRequest;

pub use crate::service::registry::{DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL};

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

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let span = rpc_span!("CreateToken", device = %request.get_ref().device_id);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let t = self
                    .state
                    .service
                    .create_token(&caller, &req.device_id, req.ttl_seconds)
                    .await?;
                Ok(pb::CreateTokenResponse {
                    token: t.token,
                    device_id: t.device_id,
                    profile: t.profile,
                    expires_at: t.expires_at,
                })
            })
            .await
    }

    async fn revoke_tokens(
        &self,
        request: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        let span = rpc_span!("RevokeTokens", device = %request.get_ref().device_id);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let revoked = self
                    .state
                    .service
                    .revoke_tokens(&caller, &req.device_id)
                    .await?;
                Ok(pb::RevokeTokensResponse { revoked })
            })
            .await
    }

    async fn register_manufacturer_ca(
        &self,
        request: Request<pb::RegisterManufacturerCaRequest>,
    ) -> Result<Response<pb::ManufacturerCa>, Status> {
        let span = rpc_span!("RegisterManufacturerCa", name = %request.get_ref().name);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let record = self
                    .state
                    .service
                    .register_manufacturer_ca(
                        &caller,
                        ManufacturerCaRequest {
                            name: req.name,
                            zone: req.zone,
                            profile: req.profile,
                            auto_register: req.auto_register,
                            ca_cert: req.ca_cert,
                        },
                    )
                    .await?;
                Ok(manufacturer_message(&record))
            })
            .await
    }

    async fn list_manufacturer_cas(
        &self,
        request: Request<pb::ListManufacturerCasRequest>,
    ) -> Result<Response<pb::ListManufacturerCasResponse>, Status> {
        let span = rpc_span!("ListManufacturerCas");
        self.state
            .authenticated(span, request, |caller, _req| async move {
                caller.require(&[Role::Admin], "ListManufacturerCas")?;
                let all = self
                    .state
                    .service
                    .reads()
                    .manufacturer_cas()
                    .await
                    .map_err(store_status)?;
                Ok(pb::ListManufacturerCasResponse {
                    manufacturer_cas: all.iter().map(manufacturer_message).collect(),
                })
            })
            .await
    }
}
