//! Per-call request limits: each gRPC call accepts request messages up to a size fitted to what
//! it carries. [`MessageGate`] reads the 5-byte gRPC frame header of a call's first message and
//! refuses an oversized one with RESOURCE_EXHAUSTED (naming the call and its limit) before
//! buffering it; the message must then arrive within the read timeout, and all calls together
//! buffer at most a fixed budget. tonic's own per-service limit stays as a backstop (it answers
//! OUT_OF_RANGE, and also covers later messages of streaming calls).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{HeaderMap, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::service::Routes;
use tower::ServiceExt;

/// Calls carrying a CSR (at most 64 KiB, DER or PEM) or a CA certificate, with their names.
pub const CSR_CALL_LIMIT: usize = 80 * 1024;
/// `ListCertificates`: up to 1000 serial filters.
pub const LIST_CERTIFICATES_LIMIT: usize = 64 * 1024;
/// `Import`: up to 1000 rows of at most ~600 bytes.
pub const IMPORT_LIMIT: usize = 1024 * 1024;
/// Calls carrying only ids, filters and page tokens.
pub const SMALL_CALL_LIMIT: usize = 8 * 1024;
/// A call missing from [`LIMITS`] (there is none today; a test checks the table).
pub const UNLISTED_LIMIT: usize = 64 * 1024;
/// The largest limit of any call.
pub const LARGEST_LIMIT: usize = IMPORT_LIMIT;

/// Each call's limit on its request message, in bytes (the proto comments say the same).
pub const LIMITS: &[(&str, usize)] = &[
    ("hallmark.v1.CertificateAuthority/Issue", CSR_CALL_LIMIT),
    ("hallmark.v1.CertificateAuthority/Enroll", CSR_CALL_LIMIT),
    ("hallmark.v1.CertificateAuthority/Renew", CSR_CALL_LIMIT),
    (
        "hallmark.v1.CertificateAuthority/GetCertificate",
        SMALL_CALL_LIMIT,
    ),
    (
        "hallmark.v1.CertificateAuthority/ListCertificates",
        LIST_CERTIFICATES_LIMIT,
    ),
    (
        "hallmark.v1.CertificateAuthority/GetTrustBundle",
        SMALL_CALL_LIMIT,
    ),
    ("hallmark.v1.Devices/Register", SMALL_CALL_LIMIT),
    ("hallmark.v1.Devices/Import", IMPORT_LIMIT),
    ("hallmark.v1.Devices/Get", SMALL_CALL_LIMIT),
    ("hallmark.v1.Devices/List", SMALL_CALL_LIMIT),
    ("hallmark.v1.Devices/SetStatus", SMALL_CALL_LIMIT),
    ("hallmark.v1.Devices/Readmit", SMALL_CALL_LIMIT),
    ("hallmark.v1.Enrollment/CreateToken", SMALL_CALL_LIMIT),
    ("hallmark.v1.Enrollment/RevokeTokens", SMALL_CALL_LIMIT),
    (
        "hallmark.v1.Enrollment/RegisterManufacturerCa",
        CSR_CALL_LIMIT,
    ),
    (
        "hallmark.v1.Enrollment/ListManufacturerCas",
        SMALL_CALL_LIMIT,
    ),
    ("hallmark.v1.Revocation/Revoke", SMALL_CALL_LIMIT),
    ("hallmark.v1.Revocation/Suspend", SMALL_CALL_LIMIT),
    ("hallmark.v1.Revocation/Resume", SMALL_CALL_LIMIT),
    ("hallmark.v1.Revocation/GetCrl", SMALL_CALL_LIMIT),
    ("hallmark.v1.Revocation/WatchCrl", SMALL_CALL_LIMIT),
    ("grpc.health.v1.Health/Check", SMALL_CALL_LIMIT),
    ("grpc.health.v1.Health/Watch", SMALL_CALL_LIMIT),
    (
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        SMALL_CALL_LIMIT,
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        SMALL_CALL_LIMIT,
    ),
];

/// The limit of the call at `path` (`/package.Service/Method`).
pub fn limit_of(path: &str) -> usize {
    let call = path.trim_start_matches('/');
    LIMITS
        .iter()
        .find(|(c, _)| *c == call)
        .map_or(UNLISTED_LIMIT, |(_, l)| *l)
}

/// The largest limit among the calls of `service` (`package.Service`): tonic's backstop for it.
pub fn service_limit(service: &str) -> usize {
    LIMITS
        .iter()
        .filter(|(c, _)| c.split_once('/').is_some_and(|(s, _)| s == service))
        .map(|(_, l)| *l)
        .max()
        .unwrap_or(UNLISTED_LIMIT)
}

/// Checks each call's first request message before the services see it; see the module docs.
#[derive(Debug, Clone)]
pub struct MessageGate {
    routes: Routes,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    read_timeout: Duration,
}

impl MessageGate {
    /// A gate in front of `routes`, buffering at most `budget_bytes` (below 4 GiB) over all
    /// calls, each message arriving within `read_timeout`.
    pub fn new(routes: Routes, budget_bytes: usize, read_timeout: Duration) -> Self {
        Self {
            routes,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            read_timeout,
        }
    }

    /// Answers one call: a trailers-only gRPC error when its first message is refused, the
    /// service's response otherwise.
    pub async fn call(&self, req: Request<Incoming>) -> Response<tonic::body::Body> {
        let call = req.uri().path().trim_start_matches('/').to_owned();
        let limit = limit_of(&call);
        let (parts, body) = req.into_parts();
        let read = read_first_message(body, &call, limit, &self.budget, self.budget_bytes);
        let first = match tokio::time::timeout(self.read_timeout, read).await {
            Ok(Ok(first)) => first,
            Ok(Err(status)) => return refuse(&call, status),
            Err(_) => {
                return refuse(
                    &call,
                    Status::deadline_exceeded(format!(
                        "{call}: the request message did not arrive within {}",
                        humantime::format_duration(self.read_timeout)
                    )),
                );
            }
        };
        let response = self
            .routes
            .clone()
            .oneshot(Request::from_parts(parts, first.body))
            .await;
        // The decoded request lived until the handler returned.
        drop(first.permit);
        match response {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

fn refuse(call: &str, status: Status) -> Response<tonic::body::Body> {
    tracing::debug!(call, code = ?status.code(), message = status.message(), "request refused before decoding");
    status.into_http()
}

/// The first message of a call, read whole, in front of the rest of the body.
struct FirstMessage {
    body: Prefixed,
    permit: Option<OwnedSemaphorePermit>,
}

async fn read_first_message(
    mut body: Incoming,
    call: &str,
    limit: usize,
    budget: &Arc<Semaphore>,
    budget_bytes: usize,
) -> Result<FirstMessage, Status> {
    let mut buf = BytesMut::new();
    let mut permit = None;
    let mut need = 5;
    let mut trailers = None;
    let mut ended = false;
    while buf.len() < need {
        match body.frame().await {
            None => {
                ended = true;
                break;
            }
            Some(Err(e)) => {
                return Err(Status::cancelled(format!(
                    "{call}: reading the request failed: {e}"
                )));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    ended = true;
                    break;
                }
            },
        }
        if permit.is_none() && buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > limit {
                return Err(Status::resource_exhausted(format!(
                    "{call} accepts request messages of at most {limit} bytes; this one has \
                     {len} bytes"
                )));
            }
            // `len + 5` is at most LARGEST_LIMIT + 5, below the budget (checked in the config).
            let want = u32::try_from(len + 5).unwrap_or(u32::MAX);
            permit = Some(budget.clone().try_acquire_many_owned(want).map_err(|_| {
                Status::resource_exhausted(format!(
                    "the CA is receiving too many requests at once (over {} MiB buffered); \
                     retry {call} in a few seconds",
                    budget_bytes / (1024 * 1024)
                ))
            })?);
            need = 5 + len;
        }
    }
    Ok(FirstMessage {
        body: Prefixed {
            prefix: (!buf.is_empty()).then(|| buf.freeze()),
            trailers,
            rest: (!ended).then_some(body),
        },
        permit,
    })
}

/// What was read of a request body, followed by the rest of it.
struct Prefixed {
    prefix: Option<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Incoming>,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(data) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self
            .rest
            .as_ref()
            .map(|r| r.size_hint())
            .unwrap_or_default();
        let n = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        hint.set_lower(hint.lower() + n);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + n);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_call_of_the_api_has_a_limit() {
        let set = prost_types::FileDescriptorSet::decode(hallmark_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut missing = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let call = format!("{}.{}/{}", file.package(), service.name(), method.name());
                    if !LIMITS.iter().any(|(c, _)| *c == call) {
                        missing.push(call);
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "add these calls to LIMITS (and their proto comments): {missing:?}"
        );
    }

    #[test]
    fn limits_fit_what_calls_carry() {
        assert!(limit_of("/hallmark.v1.CertificateAuthority/Issue") > 64 * 1024);
        assert_eq!(limit_of("/hallmark.v1.Devices/Import"), IMPORT_LIMIT);
        assert_eq!(limit_of("/hallmark.v1.Revocation/Revoke"), SMALL_CALL_LIMIT);
        assert_eq!(limit_of("/x.Y/Z"), UNLISTED_LIMIT);
        assert_eq!(service_limit("hallmark.v1.Devices"), IMPORT_LIMIT);
        assert_eq!(service_limit("hallmark.v1.Revocation"), SMALL_CALL_LIMIT);
    }
}
