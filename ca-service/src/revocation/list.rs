//! The revoked and held certificates of every issuer, kept in memory so that a revocation
//! costs a map update instead of a reread of the certificates table (DESIGN section 8).
//!
//! An issuer's entries are loaded from the store once (at the first build, and again after the
//! publisher falls behind the store's status feed or at the periodic refresh), then kept up to
//! date from the feed. Entries of expired certificates are dropped at every build. Each entry
//! is kept encoded as it goes on the CRL ([`EncodedEntry`], 64 bytes with its expiry), so a
//! build copies bytes instead of encoding a million entries again.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};

use crate::authority::crl::{CrlEntries, EncodedEntry};
use crate::store::RevocationStatus;

/// One entry: the CRL entry, and until when it matters. Equal, ordered and found by the
/// entry's serial only (consistent with `Borrow<[u8]>`): one serial, one entry.
#[derive(Debug, Clone)]
struct Listed {
    entry: EncodedEntry,
    not_after: i64,
}

impl PartialEq for Listed {
    fn eq(&self, other: &Self) -> bool {
        self.entry == other.entry
    }
}

impl Eq for Listed {}

impl PartialOrd for Listed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Listed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.entry.cmp(&other.entry)
    }
}

impl Borrow<[u8]> for Listed {
    fn borrow(&self) -> &[u8] {
        self.entry.borrow()
    }
}

/// A serial as the store writes it (hex) that is not hex.
#[derive(Debug, thiserror::Error)]
#[error("stored serial {0} is not hex")]
pub struct BadSerial(pub String);

/// One issuer's entries, in serial order: what its CRL lists.
#[derive(Debug, Default)]
pub struct IssuerEntries(BTreeSet<Listed>);

impl IssuerEntries {
    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl CrlEntries for IssuerEntries {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn each(&self, f: &mut dyn FnMut(&[u8])) {
        for l in &self.0 {
            f(l.entry.der());
        }
    }
}

/// Entries by issuer id.
#[derive(Debug, Default)]
pub struct RevocationList {
    issuers: HashMap<String, IssuerEntries>,
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

    /// Replaces `issuer`'s entries with `statuses` (what the store holds) as of `now`. On a
    /// serial that is not hex, nothing is loaded.
    ///
    /// Takes the statuses by value and inserts them one by one, each status freed as its entry
    /// goes in: at a million entries, collecting them first would hold a third copy.
    pub fn load(
        &mut self,
        issuer: &str,
        statuses: Vec<RevocationStatus>,
        now: i64,
    ) -> Result<(), BadSerial> {
        self.issuers.remove(issuer);
        let mut entries = BTreeSet::new();
        for s in statuses.into_iter().filter(|s| s.listed(now)) {
            entries.replace(listed(&s, now)?);
        }
        self.issuers
            .insert(issuer.to_owned(), IssuerEntries(entries));
        Ok(())
    }

    /// Applies one committed status change. Changes of issuers not loaded are skipped: their
    /// load will read them from the store. A serial that is not hex unloads its issuer, so
    /// that the next build reads the store and fails with the serial named.
    pub fn apply(&mut self, change: &RevocationStatus, now: i64) {
        let Some(entries) = self.issuers.get_mut(&change.issuer_id) else {
            return;
        };
        match listed(change, now) {
            Err(BadSerial(serial)) => {
                tracing::error!(%serial, "a status change names a serial that is not hex");
                self.issuers.remove(&change.issuer_id);
            }
            // Entries are equal by serial: the new one takes the old one's place.
            Ok(entry) if change.listed(now) => {
                entries.0.replace(entry);
            }
            Ok(entry) => {
                entries.0.remove(&entry);
            }
        }
    }

    /// Forgets everything: every issuer is loaded again at its next use.
    pub fn clear(&mut self) {
        self.issuers.clear();
    }

    /// `issuer`'s entries at `now`, after dropping those of expired certificates; `None` when
    /// the issuer is not loaded.
    pub fn entries(&mut self, issuer: &str, now: i64) -> Option<&IssuerEntries> {
        let entries = self.issuers.get_mut(issuer)?;
        entries.0.retain(|l| l.not_after > now);
        Some(entries)
    }
}

fn listed(s: &RevocationStatus, now: i64) -> Result<Listed, BadSerial> {
    let serial = hex::decode(&s.serial).map_err(|_| BadSerial(s.serial.clone()))?;
    Ok(Listed {
        entry: EncodedEntry::new(&serial, s.revoked_at.unwrap_or(now), s.reason),
        not_after: s.not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CertStatus;
    use x509_parser::prelude::FromDer;

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

    /// The serials and reasons the list's CRL entries carry.
    fn listed(list: &mut RevocationList, now: i64) -> Vec<(String, Option<i64>)> {
        let mut out = Vec::new();
        list.entries("iss", now).unwrap().each(&mut |der| {
            let (_, entry) =
                x509_parser::revocation_list::RevokedCertificate::from_der(der).expect("an entry");
            out.push((
                hex::encode(entry.raw_serial()),
                entry.reason_code().map(|(_, r)| i64::from(r.0)),
            ));
        });
        out
    }

    fn serials(list: &mut RevocationList, now: i64) -> Vec<String> {
        listed(list, now).into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn changes_apply_to_loaded_issuers_and_expired_entries_leave() {
        let mut list = RevocationList::new();
        // Not loaded: changes are skipped and there are no entries to build from.
        list.apply(&status("01", CertStatus::Revoked, 100), 20);
        assert!(list.entries("iss", 20).is_none());

        assert!(
            list.load("iss", vec![status("zz", CertStatus::Revoked, 100)], 20)
                .is_err()
        );
        assert!(!list.is_loaded("iss"), "nothing loaded from a bad serial");
        list.load(
            "iss",
            vec![
                status("02", CertStatus::Revoked, 100),
                status("03", CertStatus::Suspended, 50),
                // Already expired: never listed.
                status("04", CertStatus::Revoked, 20),
            ],
            20,
        )
        .unwrap();
        assert_eq!(serials(&mut list, 20), ["02", "03"]);
        list.apply(&status("05", CertStatus::Revoked, 100), 21);
        list.apply(&status("03", CertStatus::Active, 50), 22);
        assert_eq!(serials(&mut list, 22), ["02", "05"]);
        // A held certificate revoked for good keeps one entry, with the new reason.
        list.apply(&status("06", CertStatus::Suspended, 100), 23);
        let mut revoked = status("06", CertStatus::Revoked, 100);
        revoked.reason = Some(4);
        list.apply(&revoked, 24);
        let e = listed(&mut list, 24);
        assert_eq!(e.iter().filter(|(s, _)| s == "06").count(), 1);
        assert_eq!(e.iter().find(|(s, _)| s == "06").unwrap().1, Some(4));
        // Time passes beyond 100: everything has expired.
        assert!(serials(&mut list, 100).is_empty());
        list.clear();
        assert!(!list.is_loaded("iss"));
    }
}
