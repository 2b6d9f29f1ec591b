//! The roots' CRLs in the publisher. The CA serves the newest stored CRL of each root (after
//! checking it verifies with the root: a damaged or planted row is never served). When the root
//! key is in the data dir it signs a new one itself whenever the stored one is missing, no
//! longer lists what is revoked, or is half used; otherwise it says, loudly and at most hourly,
//! when the stored one misses a revocation, nears its `nextUpdate` or has expired (then it is
//! no longer served).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::check::check_crl;
use super::{CrlSources, PublishedCrl};
use crate::authority::IssuingCa;
use crate::clock::{human_duration, rfc3339};
use crate::root_crl::{self, RootCrlError};
use crate::store::{IssuerRecord, RootCrlRecord, StoreError};

/// Least time between two warnings about one root's CRL.
const WARN_EVERY: Duration = Duration::from_secs(3600);

/// What an operator runs to sign a root's CRL with a key kept offline.
const HOW_TO_SIGN: &str = "sign a new one with the root key: `hallmark-ca issuer root-crl --data-dir DIR --root-key FILE`";

/// A stored root CRL that verified, with its entries.
#[derive(Debug, Clone)]
struct Checked {
    crl: Arc<PublishedCrl>,
    serials: Vec<String>,
}

/// What the publisher keeps about roots between builds.
#[derive(Debug, Default)]
pub(super) struct Roots {
    /// Roots said to publish no CRL (said once).
    noted: HashSet<String>,
    /// When a root's CRL was last warned about.
    warned: HashMap<String, Instant>,
    /// The last stored CRL of each root that verified.
    checked: HashMap<String, Checked>,
}

fn published(issuer_id: &str, der: Vec<u8>, c: &super::check::CheckedCrl) -> PublishedCrl {
    PublishedCrl {
        issuer_id: issuer_id.to_owned(),
        number: c.number,
        this_update: c.this_update,
        next_update: c.next_update,
        entries: c.serials.len(),
        der,
    }
}

impl Roots {
    /// The CRL of `root` to serve at `now`, signing a new one first when it is due and the
    /// root key is in the data dir.
    pub(super) async fn crl(
        &mut self,
        s: &CrlSources,
        root: &IssuerRecord,
        issuers: &[IssuerRecord],
        now: i64,
    ) -> Option<Arc<PublishedCrl>> {
        let stored = match s.store.root_crl(&root.id).await {
            Ok(c) => c.and_then(|c| self.check(root, c)),
            Err(e) => {
                tracing::error!(root = %root.id, error = %e, "cannot read the root's CRL; the one served stays");
                self.checked.get(&root.id).cloned()
            }
        };
        let wanted: Vec<String> = root_crl::entries(&root.cert_der, issuers, now)
            .into_iter()
            .map(|e| e.serial)
            .collect();
        let fresh = stored.as_ref().is_some_and(|c| {
            let half = c.crl.this_update + (c.crl.next_update - c.crl.this_update) / 2;
            c.serials == wanted && now < half
        });
        if !fresh {
            match s.keyring.root(root) {
                Some(key) => match self.sign(s, &key, root, issuers, now).await {
                    Ok(c) => return Some(c.crl),
                    // A command signed one meanwhile: served at the next build, which its
                    // change triggers.
                    Err(RootCrlError::Store(StoreError::Changed(m))) => {
                        tracing::info!(root = %root.id, "root CRL not re-signed here: {m}")
                    }
                    Err(e) => {
                        tracing::error!(root = %root.id, error = %e, "the root's CRL was not re-signed; the stored one stays")
                    }
                },
                None => self.warn_offline(root, stored.as_ref(), &wanted, now),
            }
        }
        let c = stored?;
        (c.crl.next_update > now).then_some(c.crl)
    }

    /// `stored` when it verifies with `root` (checked once per CRL number).
    fn check(&mut self, root: &IssuerRecord, stored: RootCrlRecord) -> Option<Checked> {
        if let Some(c) = self.checked.get(&root.id)
            && c.crl.number == stored.number
            && c.crl.der == stored.der
        {
            return Some(c.clone());
        }
        match check_crl(&stored.der, std::slice::from_ref(&root.cert_der), i64::MIN) {
            Ok(facts) => {
                let c = Checked {
                    crl: Arc::new(published(&root.id, stored.der, &facts)),
                    serials: facts.serials,
                };
                self.checked.insert(root.id.clone(), c.clone());
                Some(c)
            }
            Err(e) => {
                tracing::error!(root = %root.id, number = stored.number, error = %e, "the stored CRL of the root does not verify with the root; not served");
                None
            }
        }
    }

    async fn sign(
        &mut self,
        s: &CrlSources,
        key: &Arc<IssuingCa>,
        root: &IssuerRecord,
        issuers: &[IssuerRecord],
        now: i64,
    ) -> Result<Checked, RootCrlError> {
        let rec = root_crl::sign(
            s.store.as_ref(),
            key,
            issuers,
            s.root_validity,
            now,
            "system",
            root_crl::CommitWith::Nothing,
        )
        .await?;
        tracing::info!(root = %root.id, number = rec.number, entries = rec.entries, next_update = %rfc3339(rec.next_update), "root CRL signed");
        self.check(root, rec).ok_or_else(|| {
            RootCrlError::Sign(root.id.clone(), "the new CRL does not verify".into())
        })
    }

    /// Says what is wrong with the CRL of a root whose key is not at hand, at most hourly.
    fn warn_offline(
        &mut self,
        root: &IssuerRecord,
        stored: Option<&Checked>,
        wanted: &[String],
        now: i64,
    ) {
        let Some(c) = stored else {
            if self.noted.insert(root.id.clone()) {
                tracing::info!(root = %root.id, "the root publishes no CRL: its key is not in the data dir (an imported root publishes its own elsewhere; for a root kept offline, {HOW_TO_SIGN})");
            }
            return;
        };
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|w| !c.serials.contains(w))
            .map(String::as_str)
            .collect();
        let left = c.crl.next_update - now;
        let ending = left.saturating_mul(4) < c.crl.next_update - c.crl.this_update;
        if missing.is_empty() && !ending {
            return;
        }
        if self
            .warned
            .get(&root.id)
            .is_some_and(|t| t.elapsed() < WARN_EVERY)
        {
            return;
        }
        self.warned.insert(root.id.clone(), Instant::now());
        let (number, until) = (c.crl.number, rfc3339(c.crl.next_update));
        if !missing.is_empty() {
            tracing::error!(root = %root.id, number, "the root's CRL does not list the revoked issuing CAs with serials {}; {HOW_TO_SIGN}", missing.join(", "));
        }
        if left <= 0 {
            tracing::error!(root = %root.id, number, "the root's CRL EXPIRED at {until} and is no longer served: verifiers that check the whole chain refuse every certificate below this root; {HOW_TO_SIGN}");
        } else if ending {
            tracing::warn!(root = %root.id, number, "the root's CRL reaches its nextUpdate at {until}, in {}, and the root key is not in the data dir to re-sign it; {HOW_TO_SIGN}", human_duration(left));
        }
    }
}
