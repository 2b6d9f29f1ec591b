//! Caps on open connections, in total and per peer. A permit is taken when a connection is
//! accepted (before any handshake) and given back when it closes, so handshakes in progress
//! count; a connection over a cap is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often refusals are logged at most (with their count since the last line).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Who counts as one peer: an IPv4 address, or an IPv6 /64 (one host can use a whole /64, so a
/// per-address cap would not hold it). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey(IpAddr);

impl PeerKey {
    /// The peer `ip` belongs to.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    Self(IpAddr::from(o))
                }
            },
        }
    }
}

impl std::fmt::Display for PeerKey {
    /// The IPv4 address, or the IPv6 prefix (`2001:db8:1:2::/64`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The total cap is reached.
    Total,
    /// The peer's cap is reached.
    PerPeer,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<PeerKey, usize>,
    refused_total: u64,
    refused_per_peer: u64,
    refused_since_start: u64,
    last_log: Option<Instant>,
}

/// Counts the open connections of one listener.
#[derive(Debug)]
pub struct ConnLimiter {
    listener: &'static str,
    max_total: usize,
    max_per_peer: usize,
    counts: Mutex<Counts>,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    peer: PeerKey,
}

impl ConnLimiter {
    /// A limiter for `listener` (named in logs) with the given caps.
    pub fn new(listener: &'static str, max_total: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            listener,
            max_total,
            max_per_peer,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, or why there is none. Refusals are logged at most
    /// once per [`REFUSAL_LOG_INTERVAL`], with their count.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let peer = PeerKey::of(ip);
        let mut c = self.counts();
        let of_peer = c.per_peer.get(&peer).copied().unwrap_or(0);
        let refusal = if c.total >= self.max_total {
            c.refused_total += 1;
            Refusal::Total
        } else if of_peer >= self.max_per_peer {
            c.refused_per_peer += 1;
            Refusal::PerPeer
        } else {
            c.total += 1;
            c.per_peer.insert(peer, of_peer + 1);
            return Ok(ConnPermit {
                limiter: self.clone(),
                peer,
            });
        };
        c.refused_since_start += 1;
        let now = Instant::now();
        if c.last_log
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                listener = self.listener,
                refused_over_total_cap = c.refused_total,
                refused_over_peer_cap = c.refused_per_peer,
                refused_since_start = c.refused_since_start,
                last_peer = %ip,
                open = c.total,
                max_connections = self.max_total,
                max_per_peer = self.max_per_peer,
                "connections refused over the connection caps (counts since the last such line)"
            );
            c.last_log = Some(now);
            c.refused_total = 0;
            c.refused_per_peer = 0;
        }
        Err(refusal)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().total
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self.limiter.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                c.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_places_come_back() {
        let l = ConnLimiter::new("test", 3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = l.try_acquire(a).unwrap();
        let _a2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), Refusal::PerPeer);
        let _b1 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), Refusal::Total);
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.try_acquire(a).unwrap();
    }

    #[test]
    fn an_ipv6_slash64_is_one_peer() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(PeerKey::of(a), PeerKey::of(b));
        assert_ne!(PeerKey::of(a), PeerKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            PeerKey::of(mapped),
            PeerKey::of("192.0.2.1".parse().unwrap())
        );
    }
}
