//! Throttling of failed enrollments per peer (an IPv4 address or an IPv6 /64, as the
//! connection caps count peers: one host may use a whole /64): after [`MAX_FAILURES`] failures within
//! [`WINDOW_SECONDS`] of the first, every enrollment from that address is refused until the
//! window ends. Guessing tokens (256 bits) is hopeless anyway; this keeps a misbehaving device
//! or a scanner from filling logs and loading the CA. The counts live in the store
//! ([`crate::store::interface::Store::record_enroll_failure`]), so the limit holds across
//! replicas behind one address, and the throttle is audited once per window.

/// Failures allowed per window.
pub const MAX_FAILURES: i64 = 10;
/// Length of the window, seconds.
pub const WINDOW_SECONDS: i64 = 300;
