//! Bounded fetches: HTTP GETs of CRL distribution points (connect, headers and total time, body
//! size; conditional on the last ETag so an unchanged CRL costs a 304), and the time and size
//! limits of the agent's and `crl fetch`'s gRPC calls. A peer that stalls or sends without end
//! costs a bounded wait and memory, never a hang.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;
use hyper::header::{CONTENT_LENGTH, ETAG, IF_NONE_MATCH};

/// Limits of an HTTP GET of a CRL.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TCP connect.
    pub connect: Duration,
    /// From the request to the end of the response headers.
    pub headers: Duration,
    /// The whole fetch, body included.
    pub total: Duration,
    /// Largest body accepted.
    pub max_body: usize,
}

/// Largest CRL body accepted: a CRL of 1M entries is about 47 MiB.
pub const MAX_CRL_BYTES: usize = 64 * 1024 * 1024;

/// The limits of every distribution-point fetch.
pub const LIMITS: Limits = Limits {
    connect: Duration::from_secs(5),
    headers: Duration::from_secs(10),
    total: Duration::from_secs(60),
    max_body: MAX_CRL_BYTES,
};

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

/// GETs `url` (plain HTTP: CRLs are signed), conditional on `etag`, within [`LIMITS`].
pub async fn get(url: &str, etag: Option<&str>) -> Result<Fetched> {
    get_within(url, etag, &LIMITS).await
}

/// GETs `url` within `limits`.
pub async fn get_within(url: &str, etag: Option<&str>, limits: &Limits) -> Result<Fetched> {
    tokio::time::timeout(limits.total, get_unbounded(url, etag, limits))
        .await
        .with_context(|| format!("{url}: no complete answer within {:?}", limits.total))?
}

async fn get_unbounded(url: &str, etag: Option<&str>, limits: &Limits) -> Result<Fetched> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(limits.connect));
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
    let resp = tokio::time::timeout(limits.headers, client.request(req))
        .await
        .with_context(|| format!("{url}: no response headers within {:?}", limits.headers))?
        .with_context(|| format!("GET {url}"))?;
    if resp.status() == hyper::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !resp.status().is_success() {
        bail!("{url}: HTTP {}", resp.status());
    }
    let too_big = || format!("{url}: the CRL is larger than {} bytes", limits.max_body);
    let announced = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limits.max_body as u64) {
        bail!(too_big());
    }
    let etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match http_body_util::Limited::new(resp.into_body(), limits.max_body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SMALL: Limits = Limits {
        connect: Duration::from_millis(500),
        headers: Duration::from_millis(300),
        total: Duration::from_millis(1500),
        max_body: 1024 * 1024,
    };

    /// A one-connection HTTP server on loopback that answers with `answer` after reading the
    /// request; returns its URL and the request it got.
    async fn serve(
        answer: impl FnOnce(tokio::net::TcpStream) -> tokio::task::JoinHandle<()> + Send + 'static,
    ) -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/crl/x.crl", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            answer(conn).await.unwrap();
        });
        (url, rx)
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_at_the_cap() {
        let (url, _) = serve(|mut c| {
            tokio::spawn(async move {
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
                while c.write_all(chunk.as_bytes()).await.is_ok() {}
            })
        })
        .await;
        let e = get_within(&url, None, &SMALL).await.err().unwrap();
        assert!(
            format!("{e:#}").contains("larger than 1048576 bytes"),
            "{e:#}"
        );
    }

    #[tokio::test]
    async fn an_announced_oversized_body_is_refused_before_reading() {
        let (url, _) = serve(|mut c| {
            tokio::spawn(async move {
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            })
        })
        .await;
        let e = get_within(&url, None, &SMALL).await.err().unwrap();
        assert!(format!("{e:#}").contains("larger than"), "{e:#}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_costs_the_header_bound() {
        let (url, _) = serve(|c| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(c);
            })
        })
        .await;
        let started = std::time::Instant::now();
        let e = get_within(&url, None, &SMALL).await.err().unwrap();
        assert!(format!("{e:#}").contains("no response headers"), "{e:#}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_trickling_body_costs_the_total_bound() {
        let (url, _) = serve(|mut c| {
            tokio::spawn(async move {
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    .await;
                while c.write_all(b"x").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .await;
        let started = std::time::Instant::now();
        let e = get_within(&url, None, &SMALL).await.err().unwrap();
        assert!(format!("{e:#}").contains("no complete answer"), "{e:#}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_etag_is_sent_back_and_a_304_is_not_modified() {
        let (url, request) = serve(|mut c| {
            tokio::spawn(async move {
                let _ = c.write_all(b"HTTP/1.1 304 Not Modified\r\n\r\n").await;
            })
        })
        .await;
        let got = get_within(&url, Some("\"abc\""), &SMALL).await.unwrap();
        assert!(matches!(got, Fetched::NotModified));
        let request = request.await.unwrap().to_ascii_lowercase();
        assert!(request.contains("if-none-match: \"abc\""), "{request}");
    }

    #[tokio::test]
    async fn a_body_and_its_etag_come_back() {
        let (url, _) = serve(|mut c| {
            tokio::spawn(async move {
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: 3\r\n\r\nabc")
                    .await;
            })
        })
        .await;
        let Fetched::Body { der, etag } = get_within(&url, None, &SMALL).await.unwrap() else {
            panic!("a body");
        };
        assert_eq!(
            (der.as_slice(), etag.as_deref()),
            (&b"abc"[..], Some("\"v1\""))
        );
    }
}
