//! CRL publication: one CRL per valid issuing CA (the active one and retired ones until they
//! expire or are revoked), rebuilt shortly after every revocation (debounced) and at half of
//! its validity, and the root's CRL ([`crate::root_crl`]: stored, re-signed here when the root
//! key is in the data dir), handed to the HTTP distribution point and watchers through a watch
//! channel.

pub mod list;
mod root;

// CRL checks moved to hallmark-core (the broker agent runs them); re-exported here.
pub use hallmark_core::crl::check;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::authority::crl::{CrlHeader, build_crl_from_async, crl_window, distribution_point};
use crate::clock::SharedClock;
use crate::keyring::Keyring;
use crate::store::{IssuerKind, IssuingCrlRecord, StatusBatch, Store};

use self::list::RevocationList;

/// Revocations arriving within this window share one rebuild.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// First wait before a failed CRL build is tried again; it doubles up to [`RETRY_LAST`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between tries of a failed CRL build.
const RETRY_LAST: Duration = Duration::from_secs(30);

/// A published CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCrl {
    /// Issuer id.
    pub issuer_id: String,
    /// CRL number.
    pub number: u64,
    /// `thisUpdate`, Unix seconds.
    pub this_update: i64,
    /// `nextUpdate`, Unix seconds.
    pub next_update: i64,
    /// Number of entries.
    pub entries: usize,
    /// The CRL, DER.
    pub der: Vec<u8>,
}

impl PublishedCrl {
    /// The CRL, PEM.
    pub fn pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("X509 CRL", self.der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }
}

/// The CRLs in force, by issuer id.
pub type CrlSet = BTreeMap<String, Arc<PublishedCrl>>;

/// What the publisher needs.
#[derive(Debug, Clone)]
pub struct CrlSources {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The issuer keys (of the active issuing CA, of retired ones, and of the root when it is
    /// in the data dir).
    pub keyring: Keyring,
    /// The clock.
    pub clock: SharedClock,
    /// `nextUpdate - now`.
    pub validity: Duration,
    /// `nextUpdate - now` of the root's CRL.
    pub root_validity: Duration,
    /// Base URL of the distribution points.
    pub base_url: String,
}

/// Handle to the publisher; cheap to clone.
#[derive(Debug, Clone)]
pub struct CrlPublisher {
    current: watch::Receiver<Arc<CrlSet>>,
    trigger: mpsc::Sender<()>,
}

impl CrlPublisher {
    /// Builds every CRL once, then keeps them fresh in a task until `shutdown`.
    pub async fn start(
        sources: CrlSources,
        mut shutdown: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        // Subscribed before the first load, so that no committed change falls in between.
        let mut feed = sources.store.status_changes();
        let mut remote = sources.store.remote_changes();
        let mut builder = Builder {
            sources,
            list: RevocationList::new(),
            known: HashMap::new(),
            roots: root::Roots::default(),
            failed: false,
        };
        let first = builder.rebuild(&CrlSet::new()).await;
        let (tx, rx) = watch::channel(Arc::new(first));
        let (trigger, mut triggers) = mpsc::channel::<()>(1);
        let refresh = builder.sources.validity.min(builder.sources.root_validity) / 2;
        let task = tokio::spawn(async move {
            let mut feed_open = true;
            let mut remote_open = true;
            // An interval, not a sleep per loop: steady revocation traffic must not keep
            // postponing the periodic reread.
            let mut refresh_tick =
                tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
            refresh_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A CRL that could not be built (database away, another replica's build lock held
            // too long) is tried again, sooner than the next change or refresh.
            let mut retry = RETRY_FIRST;
            loop {
                let retrying = builder.failed;
                tokio::select! {
                    _ = tokio::time::sleep(retry), if retrying => {
                        retry = (retry * 2).min(RETRY_LAST);
                    }
                    changed = feed.recv(), if feed_open => {
                        match changed {
                            Ok(batch) => builder.apply(&batch),
                            Err(broadcast::error::RecvError::Lagged(n)) => builder.lagged(n),
                            Err(broadcast::error::RecvError::Closed) => {
                                feed_open = false;
                                continue;
                            }
                        }
                        tokio::time::sleep(DEBOUNCE).await;
                    }
                    // Another replica changed statuses: rebuild (or take up the CRL it built).
                    changed = remote.changed(), if remote_open => {
                        if changed.is_err() {
                            remote_open = false;
                            continue;
                        }
                        tokio::time::sleep(DEBOUNCE).await;
                    }
                    t = triggers.recv() => {
                        if t.is_none() {
                            return;
                        }
                        tokio::time::sleep(DEBOUNCE).await;
                    }
                    // The periodic refresh also rereads the store: a safety net against any
                    // change that did not come through the feed.
                    _ = refresh_tick.tick() => builder.forget(),
                    _ = async { let _ = shutdown.wait_for(|v| *v).await; } => return,
                }
                // Everything that arrived during the debounce shares this rebuild.
                while triggers.try_recv().is_ok() {}
                loop {
                    match feed.try_recv() {
                        Ok(batch) => builder.apply(&batch),
                        Err(TryRecvError::Lagged(n)) => builder.lagged(n),
                        Err(_) => break,
                    }
                }
                let previous = tx.borrow().clone();
                let next = builder.rebuild(&previous).await;
                tx.send_replace(Arc::new(next));
                if !builder.failed {
                    retry = RETRY_FIRST;
                }
            }
        });
        (
            Self {
                current: rx,
                trigger,
            },
            task,
        )
    }

    /// The CRLs in force.
    pub fn current(&self) -> Arc<CrlSet> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new set of CRLs.
    pub fn subscribe(&self) -> watch::Receiver<Arc<CrlSet>> {
        self.current.clone()
    }

    /// Asks for a rebuild (after a revocation); returns at once.
    pub fn request_rebuild(&self) {
        let _ = self.trigger.try_send(());
    }
}

struct Builder {
    sources: CrlSources,
    list: RevocationList,
    /// On a shared database: per loaded issuer, the status version up to which its entries in
    /// `list` hold every change (read at its load, advanced by each feed batch that follows
    /// without a gap; a gap is another replica's change, and a build reloads then).
    known: HashMap<String, i64>,
    roots: root::Roots,
    /// Whether the last rebuild left a CRL unbuilt (tried again with backoff).
    failed: bool,
}

impl Builder {
    fn apply(&mut self, batch: &StatusBatch) {
        let now = self.sources.clock.now();
        for change in &batch.changes {
            // Entries reread at a version this batch does not exceed hold its change already,
            // or a later one of another replica's that applying it would undo.
            if self
                .known
                .get(&change.issuer_id)
                .is_some_and(|k| batch.version <= *k)
            {
                continue;
            }
            self.list.apply(change, now);
        }
        for known in self.known.values_mut() {
            if batch.version == *known + 1 {
                *known = batch.version;
            }
        }
    }

    fn lagged(&mut self, missed: u64) {
        tracing::warn!(
            missed,
            "the CRL publisher fell behind the store's status feed; rereading the entries"
        );
        self.forget();
    }

    /// Drops every loaded entry: each issuer is read from the store again at its next build.
    fn forget(&mut self) {
        self.list.clear();
        self.known.clear();
    }

    /// Rebuilds every issuer's CRL; an issuer that fails keeps its previous CRL.
    async fn rebuild(&mut self, previous: &CrlSet) -> CrlSet {
        let s = &self.sources;
        let now = s.clock.now();
        self.failed = false;
        let issuers = match s.store.issuers().await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot read issuers; CRLs not rebuilt");
                self.failed = true;
                return previous.clone();
            }
        };
        let mut out = CrlSet::new();
        // A revoked issuing CA signs nothing more, its CRL included: its root's CRL refuses
        // everything below it.
        for rec in issuers
            .iter()
            .filter(|i| i.kind == IssuerKind::Issuing && i.not_after > now && !i.is_revoked())
        {
            match self.build_one(rec, now).await {
                Ok(crl) => {
                    out.insert(rec.id.clone(), Arc::new(crl));
                }
                Err(e) => {
                    self.failed = true;
                    tracing::error!(issuer = %rec.id, error = %e, "CRL not rebuilt; the previous one stays");
                    if let Some(p) = previous.get(&rec.id) {
                        out.insert(rec.id.clone(), p.clone());
                    }
                }
            }
        }
        for rec in issuers
            .iter()
            .filter(|i| i.kind == IssuerKind::Root && i.not_after > now)
        {
            if let Some(crl) = self.roots.crl(&self.sources, rec, &issuers, now).await {
                out.insert(rec.id.clone(), crl);
            }
        }
        out
    }

    /// A fresh CRL of issuing CA `rec`: built here from the entries in memory on a database of
    /// one process; on a shared one, built by one replica at a time and stored for all (see
    /// [`Builder::build_shared`]).
    async fn build_one(
        &mut self,
        rec: &crate::store::IssuerRecord,
        now: i64,
    ) -> Result<PublishedCrl, String> {
        if self.sources.store.is_shared() {
            return self.build_shared(rec, now).await;
        }
        if !self.list.is_loaded(&rec.id) {
            self.load(rec, now).await?;
        }
        self.sign(rec, now).await
    }

    /// The CRL of `rec` among replicas: under the issuer's build lock, the stored CRL is taken
    /// as it is when it holds every status change committed so far (its basis is the status
    /// version now) and has three quarters of its validity left; otherwise this replica builds
    /// one (rereading the entries unless it knows them up to the version now) and stores it.
    /// So every replica serves the newest CRL, each CRL number is built once, and a change
    /// made anywhere is in the next CRL whoever builds it.
    async fn build_shared(
        &mut self,
        rec: &crate::store::IssuerRecord,
        now: i64,
    ) -> Result<PublishedCrl, String> {
        let store = self.sources.store.clone();
        let _lock = store
            .lock_crl_build(&rec.id)
            .await
            .map_err(|e| e.to_string())?;
        let version = store.status_version().await.map_err(|e| e.to_string())?;
        let keep_at_least = (self.sources.validity.as_secs() as i64) * 3 / 4;
        if let Some(stored) = store
            .issuing_crl(&rec.id)
            .await
            .map_err(|e| e.to_string())?
            && stored.basis >= version
            && stored.next_update - now >= keep_at_least
        {
            tracing::debug!(issuer = %rec.id, number = stored.number, "CRL taken from the store");
            return Ok(stored_crl(stored));
        }
        // Also when unloaded since (a status change the list could not apply unloads it).
        if !self.list.is_loaded(&rec.id) || self.known.get(&rec.id).is_none_or(|k| *k < version) {
            self.load(rec, now).await?;
        }
        let basis = self.known.get(&rec.id).copied().unwrap_or(version);
        let crl = self.sign(rec, now).await?;
        let record = IssuingCrlRecord {
            issuer_id: crl.issuer_id.clone(),
            number: crl.number,
            basis,
            this_update: crl.this_update,
            next_update: crl.next_update,
            entries: crl.entries,
            der: crl.der.clone(),
            built_at: now,
        };
        if let Err(e) = store.store_issuing_crl(record).await {
            // Served here all the same; the other replicas build their own at their next turn.
            tracing::warn!(issuer = %rec.id, error = %e, "CRL not stored for the other replicas");
        }
        Ok(crl)
    }

    /// Reads `rec`'s entries from the store; on a shared database the status version is read
    /// first, so the entries hold at least every change up to it.
    async fn load(&mut self, rec: &crate::store::IssuerRecord, now: i64) -> Result<(), String> {
        let store = &self.sources.store;
        let version = if store.is_shared() {
            Some(store.status_version().await.map_err(|e| e.to_string())?)
        } else {
            None
        };
        let statuses = store
            .revocation_entries(&rec.id, now)
            .await
            .map_err(|e| e.to_string())?;
        self.list
            .load(&rec.id, statuses, now)
            .map_err(|e| e.to_string())?;
        if let Some(v) = version {
            self.known.insert(rec.id.clone(), v);
        }
        Ok(())
    }

    /// Takes the next CRL number of `rec` and signs its CRL from the loaded entries.
    async fn sign(
        &mut self,
        rec: &crate::store::IssuerRecord,
        now: i64,
    ) -> Result<PublishedCrl, String> {
        let s = &self.sources;
        let ca = s.keyring.issuer(rec).map_err(|e| e.to_string())?;
        if !self.list.is_loaded(&rec.id) {
            return Err(format!("the entries of {} are not loaded", rec.id));
        }
        let number = s
            .store
            .next_crl_number(&rec.id, now)
            .await
            .map_err(|e| e.to_string())?;
        let entries = self
            .list
            .entries(&rec.id, now)
            .ok_or_else(|| format!("the entries of {} are not loaded", rec.id))?;
        let header = CrlHeader {
            number,
            now,
            validity: s.validity,
            distribution_point: Some(distribution_point(&s.base_url, &rec.id)),
        };
        let der = build_crl_from_async(&ca, &header, entries)
            .await
            .map_err(|e| e.to_string())?;
        let (this_update, next_update) = crl_window(now, s.validity);
        tracing::debug!(issuer = %rec.id, number, entries = entries.len(), "CRL built");
        Ok(PublishedCrl {
            issuer_id: rec.id.clone(),
            number,
            this_update,
            next_update,
            entries: entries.len(),
            der,
        })
    }
}

/// A CRL another replica built, as published here.
fn stored_crl(stored: IssuingCrlRecord) -> PublishedCrl {
    PublishedCrl {
        issuer_id: stored.issuer_id,
        number: stored.number,
        this_update: stored.this_update,
        next_update: stored.next_update,
        entries: stored.entries,
        der: stored.der,
    }
}
