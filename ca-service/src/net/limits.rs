//! The `[limits]` settings of both listeners, owned here and read from the configuration file
//! by [`crate::config`].

use std::time::Duration;

use serde::Deserialize;

/// The `[limits]` table: what an unauthenticated peer can hold on the CA. The defaults suit a
/// plant (hundreds of devices renewing, a few stations and brokers); tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most gRPC connections open at once, TLS handshakes in progress included.
    pub grpc_max_connections: usize,
    /// Most gRPC connections from one peer address (an IPv6 /64 counts as one peer).
    pub grpc_max_connections_per_peer: usize,
    /// Longest a TLS handshake may take.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A gRPC connection with no call in flight for this long is closed (a `WatchCrl` stream
    /// is a call in flight).
    #[serde(with = "humantime_serde")]
    pub grpc_idle_timeout: Duration,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: calls one connection may have open at once.
    pub grpc_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keepalive pings on a quiet connection.
    #[serde(with = "humantime_serde")]
    pub grpc_keepalive_interval: Duration,
    /// A connection whose peer does not answer a keepalive ping within this is closed.
    #[serde(with = "humantime_serde")]
    pub grpc_keepalive_timeout: Duration,
    /// Longest a call's request message may take to arrive once the call has started.
    #[serde(with = "humantime_serde")]
    pub request_read_timeout: Duration,
    /// Most bytes of request messages the CA buffers at once, over all connections; a call
    /// that would exceed it is refused with RESOURCE_EXHAUSTED.
    pub max_buffered_request_bytes: usize,
    /// Most HTTP connections open at once.
    pub http_max_connections: usize,
    /// Most HTTP connections from one peer address.
    pub http_max_connections_per_peer: usize,
    /// Longest a client may take to send a request's headers (also bounds how long a
    /// keep-alive connection waits for its next request).
    #[serde(with = "humantime_serde")]
    pub http_header_read_timeout: Duration,
    /// An HTTP connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            grpc_max_connections: 1024,
            grpc_max_connections_per_peer: 64,
            handshake_timeout: Duration::from_secs(10),
            grpc_idle_timeout: Duration::from_secs(120),
            grpc_max_concurrent_streams: 32,
            grpc_keepalive_interval: Duration::from_secs(30),
            grpc_keepalive_timeout: Duration::from_secs(20),
            request_read_timeout: Duration::from_secs(10),
            max_buffered_request_bytes: 64 * 1024 * 1024,
            http_max_connections: 1024,
            http_max_connections_per_peer: 32,
            http_header_read_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// Checks that every cap is at least 1, every timeout non-zero and each per-peer cap
    /// within its total.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let invalid = |m: String| Err(LimitsError(m));
        for (key, n) in [
            ("grpc_max_connections", self.grpc_max_connections),
            (
                "grpc_max_connections_per_peer",
                self.grpc_max_connections_per_peer,
            ),
            (
                "grpc_max_concurrent_streams",
                self.grpc_max_concurrent_streams as usize,
            ),
            (
                "max_buffered_request_bytes",
                self.max_buffered_request_bytes,
            ),
            ("http_max_connections", self.http_max_connections),
            (
                "http_max_connections_per_peer",
                self.http_max_connections_per_peer,
            ),
        ] {
            if n == 0 {
                return invalid(format!("{key} must be at least 1"));
            }
        }
        for (key, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("grpc_idle_timeout", self.grpc_idle_timeout),
            ("grpc_keepalive_interval", self.grpc_keepalive_interval),
            ("grpc_keepalive_timeout", self.grpc_keepalive_timeout),
            ("request_read_timeout", self.request_read_timeout),
            ("http_header_read_timeout", self.http_header_read_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
        ] {
            if d.is_zero() {
                return invalid(format!("{key} must be longer than 0s"));
            }
        }
        if self.grpc_max_connections_per_peer > self.grpc_max_connections {
            return invalid(format!(
                "grpc_max_connections_per_peer ({}) is over grpc_max_connections ({})",
                self.grpc_max_connections_per_peer, self.grpc_max_connections
            ));
        }
        if self.http_max_connections_per_peer > self.http_max_connections {
            return invalid(format!(
                "http_max_connections_per_peer ({}) is over http_max_connections ({})",
                self.http_max_connections_per_peer, self.http_max_connections
            ));
        }
        // The budget must hold the largest single message (an Import) or Import never passes.
        let largest = super::message_limit::LARGEST_LIMIT + 5;
        if self.max_buffered_request_bytes < largest {
            return invalid(format!(
                "max_buffered_request_bytes must be at least {largest} (the largest request \
                 message, an Import of 1000 devices)"
            ));
        }
        if u32::try_from(self.max_buffered_request_bytes).is_err() {
            return invalid("max_buffered_request_bytes must be below 4 GiB".to_owned());
        }
        Ok(())
    }
}

/// A `[limits]` value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[limits] {0}")]
pub struct LimitsError(pub String);
