//! The HTTP listener (CRLs, trust bundle, health): HTTP/1.1 served with hyper directly, so
//! that connections are capped, headers must arrive in time and idle keep-alive connections
//! are closed.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::conn::{Activity, Tracked, accept_loop, drive};
use super::conn_limit::ConnLimiter;
use super::limits::Limits;

/// hyper's read buffer per connection (request line and headers must fit).
const MAX_BUF: usize = 64 * 1024;

/// Serves `router` on `listener` with `limits`, until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let limiter = ConnLimiter::new(
        "http",
        limits.http_max_connections,
        limits.http_max_connections_per_peer,
    );
    let mut h1 = http1::Builder::new();
    // hyper runs the header timer also while a keep-alive connection waits for its next request.
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.http_header_read_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_BUF);
    let h1 = Arc::new(h1);
    let conn_shutdown = shutdown.clone();
    accept_loop(listener, limiter, shutdown, move |tcp, peer| {
        let h1 = h1.clone();
        let router = router.clone();
        let shutdown = conn_shutdown.clone();
        let idle_timeout = limits.http_idle_timeout;
        async move {
            let activity = Activity::default();
            let calls = activity.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let call = calls.start();
                let router = router.clone();
                async move {
                    let response = match router.oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, Some(call))))
                }
            });
            let conn = h1.serve_connection(TokioIo::new(tcp), service);
            drive(
                conn,
                |c| c.graceful_shutdown(),
                &activity,
                idle_timeout,
                shutdown,
                peer,
            )
            .await;
        }
    })
    .await;
}
