//! Throttling of failed enrollments per peer address: after [`MAX_FAILURES`] failures within
//! [`WINDOW`], every enrollment from that address is refused until the window ends. Guessing
//! tokens (256 bits) is hopeless anyway; this keeps a misbehaving device or a scanner from
//! filling logs and loading the CA.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per window.
pub const MAX_FAILURES: u32 = 10;
/// Length of the window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Addresses tracked at most; the oldest windows are dropped beyond that.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
    reported: bool,
}

/// Per-address failure counters.
#[derive(Debug, Default)]
pub struct EnrollThrottle {
    peers: Mutex<HashMap<IpAddr, Window>>,
}

/// What a failure did to the peer's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Still below the limit.
    Counted,
    /// This failure reached the limit: throttling starts now (audit it once).
    ThrottleStarted,
}

impl EnrollThrottle {
    /// `Err(seconds until retry)` when `peer` is throttled.
    pub fn check(&self, peer: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get(&peer) {
            Some(w) if now.duration_since(w.start) < WINDOW && w.failures >= MAX_FAILURES => {
                Err((WINDOW - now.duration_since(w.start)).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed enrollment from `peer`.
    pub fn record_failure(&self, peer: IpAddr) -> FailureOutcome {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_TRACKED && !peers.contains_key(&peer) {
            peers.retain(|_, w| now.duration_since(w.start) < WINDOW);
            if peers.len() >= MAX_TRACKED
                && let Some(oldest) = peers.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k)
            {
                peers.remove(&oldest);
            }
        }
        let w = peers.entry(peer).or_insert(Window {
            start: now,
            failures: 0,
            reported: false,
        });
        if now.duration_since(w.start) >= WINDOW {
            *w = Window {
                start: now,
                failures: 0,
                reported: false,
            };
        }
        w.failures += 1;
        if w.failures >= MAX_FAILURES && !w.reported {
            w.reported = true;
            return FailureOutcome::ThrottleStarted;
        }
        FailureOutcome::Counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_the_limit_and_only_that_peer() {
        let t = EnrollThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 1..MAX_FAILURES {
            assert_eq!(t.record_failure(a), FailureOutcome::Counted, "failure {i}");
            assert!(t.check(a).is_ok());
        }
        assert_eq!(t.record_failure(a), FailureOutcome::ThrottleStarted);
        assert!(t.check(a).is_err());
        assert_eq!(
            t.record_failure(a),
            FailureOutcome::Counted,
            "reported once"
        );
        assert!(t.check(b).is_ok());
    }
}
