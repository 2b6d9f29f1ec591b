//! The plain-HTTP side: trust bundle and health. Plain HTTP is right here: what it serves is
//! public and (for CRLs, later) signed.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

use crate::clock::SharedClock;
use crate::revocation::CrlPublisher;
use crate::store::Store;
use crate::trust::TrustHandle;

/// State of the HTTP routes.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The store, for readiness.
    pub store: Arc<dyn Store>,
    /// The trust bundle.
    pub trust: TrustHandle,
    /// The CRLs.
    pub crls: CrlPublisher,
    /// The clock (cache lifetimes).
    pub clock: SharedClock,
}

/// The routes: `/healthz`, `/readyz`, `/trust-bundle.pem`, `/crl/<issuer>.crl` (DER) and
/// `/crl/<issuer>.pem`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/trust-bundle.pem", get(trust_bundle))
        .route("/crl/{file}", get(crl))
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

/// How long a client may use a fetched CRL without asking again. Short, because a revocation
/// changes the CRL within ~50 ms; a client revalidates with `If-None-Match` and gets a 304
/// (no body) while the CRL is unchanged.
pub const CRL_MAX_AGE_SECS: i64 = 60;

/// Whether an `If-None-Match` value (a list of entity tags, or `*`) names `etag`; weak
/// comparison, as RFC 9110 asks for this header.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The distribution point: the issuer's current CRL, with an ETag naming its issuer and number
/// and a cache lifetime of [`CRL_MAX_AGE_SECS`] (less when `nextUpdate` is nearer).
async fn crl(
    State(st): State<HttpState>,
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let (issuer, pem) = if let Some(i) = file.strip_suffix(".crl") {
        (i, false)
    } else if let Some(i) = file.strip_suffix(".pem") {
        (i, true)
    } else {
        return (
            StatusCode::NOT_FOUND,
            "use /crl/<issuer>.crl or /crl/<issuer>.pem\n",
        )
            .into_response();
    };
    let set = st.crls.current();
    let Some(crl) = set.get(issuer) else {
        let known: Vec<&str> = set.keys().map(String::as_str).collect();
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no CRL for issuer `{}`; issuers: {}\n",
                issuer.escape_default(),
                known.join(", ")
            ),
        )
            .into_response();
    };
    let etag = format!("\"{}-{}\"", crl.issuer_id, crl.number);
    let max_age = (crl.next_update - st.clock.now()).clamp(0, CRL_MAX_AGE_SECS);
    let cache = format!("public, max-age={max_age}");
    if headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| etag_matches(v, &etag))
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    let (content_type, body) = if pem {
        ("application/x-pem-file", crl.pem().into_bytes())
    } else {
        ("application/pkix-crl", crl.der.clone())
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::etag_matches;

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let etag = "\"issuing-1-7\"";
        assert!(etag_matches("\"issuing-1-7\"", etag));
        assert!(etag_matches("\"x\", W/\"issuing-1-7\"", etag));
        assert!(etag_matches("*", etag));
        assert!(!etag_matches("\"issuing-1-6\"", etag));
    }
}
