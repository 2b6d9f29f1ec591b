//! The revoked and held certificates of every issuer, kept in memory so that a revocation
//! costs a map update instead of a reread of the certificates table (DESIGN section 8).
//!
//! An issuer's entries are loaded from the store once (at the first build, and again after the
//! publisher falls behind the store's status feed or at the periodic refresh), then kept up to
//! date from the feed. Entries of expired certificates are dropped at every build.

use std::collections::{BTreeMap, HashMap};

use crate::authority::crl::RevokedEntry;
use crate::store::RevocationStatus;

/// One entry: when and why, and until when it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listed {
    revoked_at: i64,
    reason: Option<i64>,
    not_after: i64,
}

/// Entries by issuer id, then serial.
#[derive(Debug, Default)]
pub struct RevocationList {
    issuers: HashMap<String, BTreeMap<String, Listed>>,
}

impl RevocationList {
    /// An empty list: every issuer is loaded at its first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `issuer` has been loaded (and is kept from the feed since).
    pub fn is_loaded(&self, issuer: &str) -> bool {
        self.issuers.contains_key(issuer)
    }

    /// Replaces `issuer`'s entries with `statuses` (what the store holds) as of `now`.
    pub fn load(&mut self, issuer: &str, statuses: &[RevocationStatus], now: i64) {
        let mut entries = BTreeMap::new();
        for s in statuses.iter().filter(|s| s.listed(now)) {
            entries.insert(s.serial.clone(), listed(s, now));
        }
        self.issuers.insert(issuer.to_owned(), entries);
    }

    /// Applies one committed status change. Changes of issuers not loaded are skipped: their
    /// load will read them from the store.
    pub fn apply(&mut self, change: &RevocationStatus, now: i64) {
        let Some(entries) = self.issuers.get_mut(&change.issuer_id) else {
            return;
        };
        if change.listed(now) {
            entries.insert(change.serial.clone(), listed(change, now));
        } else {
            entries.remove(&change.serial);
        }
    }

    /// Forgets everything: every issuer is loaded again at its next use.
    pub fn clear(&mut self) {
        self.issuers.clear();
    }

    /// `issuer`'s entries at `now`, in serial order, after dropping those of expired
    /// certificates; `None` when the issuer is not loaded.
    pub fn entries(&mut self, issuer: &str, now: i64) -> Option<Vec<RevokedEntry>> {
        let entries = self.issuers.get_mut(issuer)?;
        entries.retain(|_, l| l.not_after > now);
        Some(
            entries
                .iter()
                .map(|(serial, l)| RevokedEntry {
                    serial: serial.clone(),
                    revoked_at: l.revoked_at,
                    reason: l.reason,
                })
                .collect(),
        )
    }
}

fn listed(s: &RevocationStatus, now: i64) -> Listed {
    Listed {
        revoked_at: s.revoked_at.unwrap_or(now),
        reason: s.reason,
        not_after: s.not_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CertStatus;

    fn status(serial: &str, status: CertStatus, not_after: i64) -> RevocationStatus {
        RevocationStatus {
            serial: serial.into(),
            issuer_id: "iss".into(),
            not_after,
            status,
            revoked_at: (status != CertStatus::Active).then_some(10),
            reason: Some(1),
        }
    }

    fn serials(list: &mut RevocationList, now: i64) -> Vec<String> {
        list.entries("iss", now)
            .unwrap()
            .into_iter()
            .map(|e| e.serial)
            .collect()
    }

    #[test]
    fn changes_apply_to_loaded_issuers_and_expired_entries_leave() {
        let mut list = RevocationList::new();
        // Not loaded: changes are skipped and there are no entries to build from.
        list.apply(&status("01", CertStatus::Revoked, 100), 20);
        assert!(list.entries("iss", 20).is_none());

        list.load(
            "iss",
            &[
                status("02", CertStatus::Revoked, 100),
                status("03", CertStatus::Suspended, 50),
                // Already expired: never listed.
                status("04", CertStatus::Revoked, 20),
            ],
            20,
        );
        assert_eq!(serials(&mut list, 20), ["02", "03"]);
        list.apply(&status("05", CertStatus::Revoked, 100), 21);
        list.apply(&status("03", CertStatus::Active, 50), 22);
        assert_eq!(serials(&mut list, 22), ["02", "05"]);
        // A held certificate revoked for good keeps one entry, with the new reason.
        list.apply(&status("06", CertStatus::Suspended, 100), 23);
        let mut revoked = status("06", CertStatus::Revoked, 100);
        revoked.reason = Some(4);
        list.apply(&revoked, 24);
        let e = list.entries("iss", 24).unwrap();
        assert_eq!(e.iter().filter(|e| e.serial == "06").count(), 1);
        assert_eq!(e.iter().find(|e| e.serial == "06").unwrap().reason, Some(4));
        // Time passes beyond 100: everything has expired.
        assert!(serials(&mut list, 100).is_empty());
        list.clear();
        assert!(!list.is_loaded("iss"));
    }
}
