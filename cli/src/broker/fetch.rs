//! Bounded fetches: HTTP GETs of CRL distribution points (connect, headers and total time, body
//! size; conditional on the last ETag so an unchanged CRL costs a 304), and the time and size
//! limits of the agent's and `crl fetch`'s gRPC calls. A peer that stalls or sends without end
//! costs a bounded wait and memory, never a hang.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;
use hyper::header::{CONTENT_LENGTH, ETAG, IF_NONE_MATCH};

/// TCP connect to a distribution point.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// From the request to the end of the response headers.
pub const HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole fetch, body included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest CRL body accepted: a CRL of 1M entries is about 47 MiB.
pub const MAX_CRL_BYTES: usize = 64 * 1024 * 1024;
/// Largest gRPC CRL set accepted (every issuer's CRL in one message).
pub const MAX_CRL_SET_BYTES: usize = 2 * MAX_CRL_BYTES;
/// A small gRPC call (the trust bundle, connecting).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// A gRPC call that returns CRLs.
pub const CRL_RPC_TIMEOUT: Duration = Duration::from_secs(120);

/// What a GET brought.
pub enum Fetched {
    /// 304: the same as the body of the ETag sent.
    NotModified,
    /// 200.
    Body {
        /// The body.
        der: Vec<u8>,
        /// Its ETag, if any.
        etag: Option<String>,
    },
}

/// GETs `url` (plain HTTP: CRLs are signed), conditional on `etag`, within the limits above.
pub async fn get(url: &str, etag: Option<&str>) -> Result<Fetched> {
    tokio::time::timeout(TOTAL_TIMEOUT, get_unbounded(url, etag))
        .await
        .with_context(|| format!("{url}: no complete answer within {TOTAL_TIMEOUT:?}"))?
}

async fn get_unbounded(url: &str, etag: Option<&str>) -> Result<Fetched> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<hyper::body::Bytes>>(connector);
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let mut req = hyper::Request::get(uri);
    if let Some(etag) = etag {
        req = req.header(IF_NONE_MATCH, etag);
    }
    let req = req
        .body(http_body_util::Empty::new())
        .with_context(|| format!("bad request for {url}"))?;
    let resp = tokio::time::timeout(HEADERS_TIMEOUT, client.request(req))
        .await
        .with_context(|| format!("{url}: no response headers within {HEADERS_TIMEOUT:?}"))?
        .with_context(|| format!("GET {url}"))?;
    if resp.status() == hyper::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !resp.status().is_success() {
        bail!("{url}: HTTP {}", resp.status());
    }
    let too_big = || format!("{url}: the CRL is larger than {MAX_CRL_BYTES} bytes");
    let announced = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_CRL_BYTES as u64) {
        bail!(too_big());
    }
    let etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match http_body_util::Limited::new(resp.into_body(), MAX_CRL_BYTES)
        .collect()
        .await
    {
        Ok(body) => body,
        Err(e) if e.is::<http_body_util::LengthLimitError>() => bail!(too_big()),
        Err(e) => bail!("{url}: reading the body: {e}"),
    };
    Ok(Fetched::Body {
        der: body.to_bytes().to_vec(),
        etag,
    })
}
