//! CRLs as clients see them: the checks a CRL passes before a broker uses it ([`check`]) and
//! the rhythm of the CA's `WatchCrl` stream.

pub mod check;

/// How often `WatchCrl` sends a heartbeat while the CRLs do not change: a watcher that hears
/// nothing for several intervals knows its connection is dead.
pub const WATCH_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
