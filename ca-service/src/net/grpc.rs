//! The gRPC listener: our own TLS acceptor and HTTP/2 server in front of tonic's routes, so
//! that connection caps, the handshake and idle timeouts, HTTP/2 settings and per-call message
//! limits all apply before any service code runs.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tonic::transport::server::Connected;

use super::conn::{Activity, Tracked, accept_loop, drive};
use super::conn_limit::ConnLimiter;
use super::limits::Limits;
use super::message_limit::MessageGate;

/// HTTP/2 flow-control window of one call: room for a CSR call's message in one go.
const STREAM_WINDOW: u32 = 256 * 1024;
/// HTTP/2 flow-control window of a connection: what one connection may have unread at once.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Largest header block a client may send (gRPC metadata is small).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Whether a call on `path` counts as activity for the idle timeout. Streams that anyone may
/// open without a credential and hold for ever (health watches, reflection) do not: one such
/// call per connection would otherwise pin the connection caps for good. `WatchCrl` needs a
/// credential, checked before every message, and counts.
fn keeps_connection_open(path: &str) -> bool {
    path != "/grpc.health.v1.Health/Watch" && !path.starts_with("/grpc.reflection.")
}

/// Serves `routes` on `listener` over TLS (`tls`) with `limits`, until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    routes: Routes,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let limiter = ConnLimiter::new(
        "grpc",
        limits.grpc_max_connections,
        limits.grpc_max_connections_per_peer,
    );
    let acceptor = TlsAcceptor::from(tls);
    let gate = MessageGate::new(
        routes.prepare(),
        limits.max_buffered_request_bytes,
        limits.request_read_timeout,
    );
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(limits.grpc_max_concurrent_streams)
        .keep_alive_interval(limits.grpc_keepalive_interval)
        .keep_alive_timeout(limits.grpc_keepalive_timeout)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST);
    let h2 = Arc::new(h2);
    let conn_shutdown = shutdown.clone();
    accept_loop(listener, limiter, shutdown, move |tcp, peer| {
        connection(
            tcp,
            peer,
            acceptor.clone(),
            h2.clone(),
            gate.clone(),
            limits.clone(),
            conn_shutdown.clone(),
        )
    })
    .await;
}

async fn connection(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    h2: Arc<http2::Builder<TokioExecutor>>,
    gate: MessageGate,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // What tonic's own server would attach: `Request::peer_certs` and `remote_addr` read it.
    let info = tls.connect_info();
    let activity = Activity::default();
    let calls = activity.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let call = keeps_connection_open(req.uri().path()).then(|| calls.start());
        let gate = gate.clone();
        async move {
            let response = gate.call(req).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, call)))
        }
    });
    let conn = h2.serve_connection(TokioIo::new(tls), service);
    drive(
        conn,
        |c| c.graceful_shutdown(),
        &activity,
        limits.grpc_idle_timeout,
        shutdown,
        peer,
    )
    .await;
}
