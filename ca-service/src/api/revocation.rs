//! `hallmark.v1.Revocation`: revoke, suspend and resume certificates by serial, device, lot,
//! zone or profile, with a dry run that shows what would change.

use std::pin::Pin;

use hallmark_proto::v1 as pb;
use pb::revocation_server::Revocation;
use pb::revoke_request::Selector;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::rpc_span;
use super::messages::certificate_message;
use super::{ApiState, invalid_name, parse_serial};
use crate::authority::profile::Role;
use crate::identity::validate_name;
use crate::service::status::ChangeRequest;
use crate::store::{CertSelector, StatusChange};

// How often `WatchCrl` sends a heartbeat, moved to hallmark-core (the broker agent uses it).
pub use hallmark_core::crl::WATCH_HEARTBEAT;

/// The service.
#[derive(Debug, Clone)]
pub struct RevocationService {
    state: ApiState,
}

impl RevocationService {
    /// A service over `state`.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

fn selector(req: &pb::RevokeRequest) -> Result<CertSelector, Status> {
    let sel = req.selector.clone().ok_or_else(|| {
        Status::invalid_argument(
            "say which certificates: one of serial, device_id, lot, zone or profile",
        )
    })?;
    Ok(match sel {
        Selector::Serial(s) => CertSelector::Serial(parse_serial(&s)?),
        Selector::DeviceId(d) => {
            validate_name("device id", &d).map_err(invalid_name)?;
            CertSelector::Device(d)
        }
        Selector::Lot(l) => {
            validate_name("lot", &l).map_err(invalid_name)?;
            CertSelector::Lot(l)
        }
        Selector::Zone(z) => {
            validate_name("zone", &z).map_err(invalid_name)?;
            CertSelector::Zone(z)
        }
        Selector::Profile(p) => {
            validate_name("profile", &p).map_err(invalid_name)?;
            CertSelector::Profile(p)
        }
    })
}

fn revocation_reason(value: i32) -> Result<i64, Status> {
    use pb::RevocationReason as R;
    match R::try_from(value) {
        Ok(R::CertificateHold) => Err(Status::invalid_argument(
            "certificateHold is what Suspend does; use Suspend (and Resume) for a hold",
        )),
        Ok(r) => Ok(r as i64),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown revocation reason {value}"
        ))),
    }
}

/// Certificates listed in a Revoke, Suspend or Resume answer at most (all are counted).
const LISTED_IN_ANSWER: usize = 1000;

impl RevocationService {
    async fn change(
        &self,
        request: Request<pb::RevokeRequest>,
        span: tracing::Span,
        rpc: &'static str,
        change: impl FnOnce(&pb::RevokeRequest) -> Result<StatusChange, Status>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.state
            .authenticated(span, request, |caller, req| async move {
                // The caller's rights first: a non-admin learns nothing about its request.
                caller.require(&[Role::Admin], rpc)?;
                let selector = selector(&req)?;
                let change = change(&req)?;
                let outcome = self
                    .state
                    .service
                    .change_status(
                        &caller,
                        ChangeRequest {
                            selector,
                            change,
                            include_operators: req.include_operators,
                            dry_run: req.dry_run,
                        },
                        rpc,
                    )
                    .await?;
                Ok(pb::RevokeResponse {
                    // Bounded: the answer to a zone revoked whole must fit a client's message
                    // limit (4 MiB by default; a certificate message is ~750 bytes).
                    certificates: outcome
                        .certificates
                        .iter()
                        .take(LISTED_IN_ANSWER)
                        .map(certificate_message)
                        .collect(),
                    total: outcome.certificates.len() as u64,
                    dry_run: outcome.dry_run,
                    operators_left_out: outcome.operators_left_out,
                    device_holds_left_out: outcome.device_holds_left_out,
                })
            })
            .await
    }
}

fn crl_set(set: &crate::revocation::CrlSet) -> pb::CrlSet {
    pb::CrlSet {
        crls: set
            .values()
            .map(|c| pb::Crl {
                issuer_id: c.issuer_id.clone(),
                number: c.number,
                this_update: c.this_update,
                next_update: c.next_update,
                entries: c.entries as u32,
                der: c.der.clone(),
            })
            .collect(),
        heartbeat: false,
    }
}

/// Stream of `WatchCrl`.
pub type CrlStream = Pin<Box<dyn Stream<Item = Result<pb::CrlSet, Status>> + Send>>;

#[tonic::async_trait]
impl Revocation for RevocationService {
    type WatchCrlStream = CrlStream;

    async fn get_crl(
        &self,
        _request: Request<pb::GetCrlRequest>,
    ) -> Result<Response<pb::CrlSet>, Status> {
        let _span = tracing::info_span!("GetCrl").entered();
        Ok(Response::new(crl_set(&self.state.crls.current())))
    }

    async fn watch_crl(
        &self,
        request: Request<pb::WatchCrlRequest>,
    ) -> Result<Response<Self::WatchCrlStream>, Status> {
        let certs = request.peer_certs();
        let auth = self.state.service.authenticator().clone();
        let caller = auth.caller_from_certs(certs.clone()).await?;
        caller.require(&[Role::BrokerAgent, Role::Admin], "WatchCrl")?;
        tracing::info!(caller = %caller.actor(), "CRL watcher connected");
        let mut updates = self.state.crls.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(
            async move {
                let mut send_set = true;
                loop {
                    let message = if send_set {
                        crl_set(&updates.borrow_and_update().clone())
                    } else {
                        pb::CrlSet {
                            crls: Vec::new(),
                            heartbeat: true,
                        }
                    };
                    // A watcher revoked meanwhile gets its refusal instead of the next message.
                    if let Err(status) = auth.caller_from_certs(certs.clone()).await {
                        let _ = tx.send(Err(Status::from(status))).await;
                        return;
                    }
                    if tx.send(Ok(message)).await.is_err() {
                        return; // the watcher left
                    }
                    tokio::select! {
                        changed = updates.changed() => {
                            if changed.is_err() {
                                return; // shutting down
                            }
                            send_set = true;
                        }
                        _ = tokio::time::sleep(WATCH_HEARTBEAT) => send_set = false,
                    }
                }
            }
            .instrument(tracing::info_span!("WatchCrl")),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.change(request, rpc_span!("Revoke"), "Revoke", |r| {
            revocation_reason(r.reason).map(StatusChange::Revoke)
        })
        .await
    }

    async fn suspend(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.change(request, rpc_span!("Suspend"), "Suspend", |_| {
            Ok(StatusChange::Suspend)
        })
        .await
    }

    async fn resume(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.change(request, rpc_span!("Resume"), "Resume", |_| {
            Ok(StatusChange::Resume)
        })
        .await
    }
}
