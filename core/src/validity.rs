//! Backdating: the CA sets `notBefore` and `thisUpdate` a little in the past, and clients
//! undo it to tell when something was made.

use std::time::Duration;

/// How far `notBefore` is set in the past, so devices with a slow clock accept a fresh
/// certificate (less for lifetimes under 50 minutes: a tenth of the lifetime).
pub const BACKDATE_SECONDS: i64 = 300;

/// How far to backdate `notBefore`/`thisUpdate` of something valid for `lifetime`.
pub fn backdate(lifetime: Duration) -> i64 {
    BACKDATE_SECONDS.min(lifetime.as_secs() as i64 / 10)
}

/// When a certificate or CRL valid from `start` to `end` was made, undoing [`backdate`]
/// (`start = made - backdate(end - made)`), to within a second: what "how old is it" means
/// to a person, rather than the backdated `start`.
pub fn made_at(start: i64, end: i64) -> i64 {
    let span = end.saturating_sub(start);
    // backdate(v) = min(BACKDATE, v / 10): the full backdate once v >= 10 * BACKDATE.
    if span >= 11 * BACKDATE_SECONDS {
        start + BACKDATE_SECONDS
    } else {
        start + span.max(0) / 11
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{backdate, made_at};

    #[test]
    fn made_at_undoes_the_backdate() {
        let made = 1_800_000_000;
        for v in [2, 30, 599, 2_999, 3_000, 3_001, 86_400, 397 * 86_400] {
            let start = made - backdate(Duration::from_secs(v));
            let end = made + v as i64;
            let got = made_at(start, end);
            assert!((made - 1..=made).contains(&got), "validity {v}: {got}");
        }
    }
}
