//! The plain-HTTP side: trust bundle and health. Plain HTTP is right here: what it serves is
//! public and (for CRLs, later) signed.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::api::TrustHandle;
use crate::store::Store;

/// State of the HTTP routes.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The store, for readiness.
    pub store: Store,
    /// The trust bundle.
    pub trust: TrustHandle,
}

/// The routes: `/healthz`, `/readyz`, `/trust-bundle.pem`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/trust-bundle.pem", get(trust_bundle))
        .with_state(state)
}

async fn readyz(State(st): State<HttpState>) -> impl IntoResponse {
    match st.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: database: {e}\n"),
        ),
    }
}

async fn trust_bundle(State(st): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        st.trust.get().bundle_pem(),
    )
}
