//! The opening of every authenticated RPC: the caller is the TLS client certificate of the
//! connection, checked by [`crate::service::Authenticator`] on every call and recorded on the
//! RPC's span.

use std::future::Future;

use tonic::{Request, Response, Status};
use tracing::{Instrument, Span};

use super::ApiState;
use crate::service::Caller;

// Moved to hallmark-core (CRL checks of the clients need it); re-exported at its old path.
pub use hallmark_core::serial::serial_hex;

/// A span for an RPC named `$name`, with a `caller` field that [`ApiState::authenticated`]
/// fills in, and any further fields.
macro_rules! rpc_span {
    ($name:literal $(, $($fields:tt)*)?) => {
        tracing::info_span!($name, caller = tracing::field::Empty $(, $($fields)*)?)
    };
}
pub(crate) use rpc_span;

impl ApiState {
    /// The caller of `request`, recorded on the current span; UNAUTHENTICATED with the reason
    /// when it has no valid Hallmark credential.
    pub async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self
            .service
            .authenticator()
            .caller_from_certs(request.peer_certs())
            .await?;
        Span::current().record("caller", caller.actor());
        Ok(caller)
    }

    /// Runs `handler` with the authenticated caller and the decoded request inside `span`:
    /// what every authenticated RPC does first.
    pub async fn authenticated<T, R, Fut>(
        &self,
        span: Span,
        request: Request<T>,
        handler: impl FnOnce(Caller, T) -> Fut,
    ) -> Result<Response<R>, Status>
    where
        Fut: Future<Output = Result<R, Status>>,
    {
        async move {
            let caller = self.caller(&request).await?;
            handler(caller, request.into_inner())
                .await
                .map(Response::new)
        }
        .instrument(span)
        .await
    }
}
