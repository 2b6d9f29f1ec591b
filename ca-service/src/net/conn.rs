//! What both listeners share: the accept loop with its connection caps, the count of calls in
//! flight on a connection (hyper's HTTP/2 keepalive pings move bytes on an idle connection, so
//! idleness is "no call in flight", not "no bytes"), and driving one connection until it ends,
//! idles out or the server shuts down.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::conn_limit::ConnLimiter;

/// How long an idle connection that was asked to close may take to do so before it is dropped
/// (a peer that stopped reading cannot receive the GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How often accept errors (e.g. out of file descriptors) are logged at most.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The calls in flight on one connection.
#[derive(Debug, Clone)]
pub struct Activity(Arc<watch::Sender<usize>>);

/// One call in flight; dropping it ends the call.
#[derive(Debug)]
pub struct CallGuard(Arc<watch::Sender<usize>>);

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl Activity {
    /// Marks a call as started; it ends when the guard drops.
    pub fn start(&self) -> CallGuard {
        self.0.send_modify(|n| *n += 1);
        CallGuard(self.0.clone())
    }

    /// Completes once no call has been in flight for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        let mut calls = self.0.subscribe();
        loop {
            // The sender lives in `self`: these cannot fail.
            if calls.wait_for(|n| *n == 0).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(timeout) => return,
                changed = calls.changed() => if changed.is_err() { return },
            }
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its call in flight until it is finished or dropped (a
/// `WatchCrl` stream stays in flight as long as it runs).
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _call: Option<CallGuard>,
}

impl<B> Tracked<B> {
    /// `inner`, holding `call` (if any) until dropped.
    pub fn new(inner: B, call: Option<CallGuard>) -> Self {
        Self { inner, _call: call }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Drives one connection until it ends; closes it gracefully (GOAWAY on HTTP/2, no more
/// keep-alive on HTTP/1) once it has had no call in flight for `idle_timeout` or the server
/// shuts down. After a shutdown, calls in flight may finish (the server bounds that).
pub async fn drive<C, G>(
    conn: C,
    graceful: G,
    activity: &Activity,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), hyper::Error>>,
    G: FnOnce(Pin<&mut C>),
{
    let mut conn = std::pin::pin!(conn);
    let idled_out = tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = activity.idle_for(idle_timeout) => true,
        _ = shutdown.wait_for(|v| *v) => false,
    };
    graceful(conn.as_mut());
    if idled_out {
        tracing::debug!(%peer, ?idle_timeout, "closing an idle connection");
        if tokio::time::timeout(CLOSE_GRACE, conn).await.is_err() {
            tracing::debug!(%peer, "idle connection did not close in time; dropped");
        }
    } else {
        let _ = conn.await;
    }
}

/// Accepts connections on `listener` until `shutdown`: a connection over `limiter`'s caps is
/// closed at once, every other one is handed to `serve` (holding its place until `serve`
/// returns). On shutdown it stops accepting and waits for the open connections; dropping
/// the returned future (an aborted server task) drops them all.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limiter: Arc<ConnLimiter>,
    mut shutdown: watch::Receiver<bool>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = shutdown.wait_for(|v| *v) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if last_error_log.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    tracing::warn!(error = %e, open = limiter.open(), "accept failed");
                    last_error_log = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limiter.try_acquire(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let conn = serve(tcp, peer);
        conns.spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_means_no_call_in_flight_for_the_whole_period() {
        let a = Activity::default();
        let call = a.start();
        // A call in flight (a long stream) is never idle.
        let idle = a.idle_for(Duration::from_millis(50));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), idle)
                .await
                .is_err()
        );
        drop(call);
        let started = tokio::time::Instant::now();
        a.idle_for(Duration::from_millis(200)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
