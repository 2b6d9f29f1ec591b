//! The sessions the agent still has to cut: serials newly listed on an applied CRL, kept in a
//! file beside the broker's CRL file so that a restart of the agent (or a `--once` run that
//! could not reach the broker) does not forget them.
//!
//! Cutting runs beside the CRL loop, never in it: the plugin takes one client entry per
//! device, so a zone of 100,000 devices revoked at once takes minutes to cut, and no newer CRL
//! may wait for that. The newest serials are cut first, a batch at a time, so that a device
//! revoked during such a bulk cut is off the broker as fast as ever; the file is saved as the
//! batches go, so a long cut resumes where it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hallmark_core::fsutil::write_atomic;
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use tokio::sync::Notify;

use super::dynsec;
use hallmark_core::client::{Connection, status_error};

/// Attempts per serial before the agent gives up on it (and says so). Only attempts the
/// plugin answered count: while the broker or the CA cannot be reached, serials wait.
const MAX_ATTEMPTS: u32 = 5;
/// How long one batch may take, CA lookups included.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Serials per batch: the newest serials wait at most for one batch before theirs.
const BATCH: usize = 200;
/// The wait before a serial whose device the plugin did not cut is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest wait while the broker or the CA cannot be reached (it doubles from
/// [`RETRY_AFTER`]).
const MAX_OUTAGE_WAIT: Duration = Duration::from_secs(60);
/// The file is saved at most this often while a cut goes on (a crash then cuts some devices a
/// second time, which only makes them reconnect).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Serials named in one "giving up" line.
const NAMED: usize = 10;

/// Where and how to cut.
pub struct CutConfig {
    /// `host:port` of the broker's TLS listener.
    pub address: String,
    /// The name the broker's certificate must carry.
    pub server_name: Option<String>,
}

/// One serial still to cut.
#[derive(Debug, Clone, Copy)]
struct Pending {
    attempts: u32,
    /// Higher for serials listed later: those are cut first. A serial listed again gets a new
    /// one, so an older batch's outcome no longer applies to it.
    order: u64,
    /// Not tried again before this.
    retry_at: Option<Instant>,
}

/// Serials to cut, with the attempts made so far.
struct PendingCuts {
    file: PathBuf,
    serials: BTreeMap<String, Pending>,
    next_order: u64,
    /// Serials were added whose CRL the broker has not reloaded yet: a device cut now could
    /// come straight back in, so nothing is cut until [`CutQueue::release`].
    held: bool,
    /// The trust bundle the broker's certificate is checked against.
    ca_pem: String,
    /// Batches in a row that failed whole (broker or CA unreachable).
    outage: u32,
    saved_at: Option<Instant>,
}

impl PendingCuts {
    /// Saves, reporting a failure (the serials stay in memory and are cut all the same).
    fn save(&mut self) {
        self.saved_at = Some(Instant::now());
        if let Err(e) = self.try_save() {
            eprintln!(
                "error: could not save the pending cuts ({} serials, kept in memory): {e:#}",
                self.serials.len()
            );
        }
    }

    fn try_save(&self) -> Result<()> {
        if self.serials.is_empty() {
            match std::fs::remove_file(&self.file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", self.file.display()));
                }
                _ => return Ok(()),
            }
        }
        // The file keeps the attempts only (the format of earlier versions): after a restart
        // every serial left is older than any the new run lists.
        let attempts: BTreeMap<&str, u32> = self
            .serials
            .iter()
            .map(|(s, p)| (s.as_str(), p.attempts))
            .collect();
        let json = serde_json::to_vec(&attempts)?;
        write_atomic(&self.file, &json, 0o600)
            .with_context(|| format!("writing {}", self.file.display()))
    }
}

/// The serials whose devices' sessions are to be cut, shared by the CRL loop (which adds and
/// releases them) and the cutter (which takes them a batch at a time).
#[derive(Clone)]
pub struct CutQueue {
    inner: Arc<Mutex<PendingCuts>>,
    wake: Arc<Notify>,
}

/// One batch taken from the queue: serials with the order they had when taken.
struct Batch {
    serials: Vec<(String, u64)>,
    ca_pem: String,
}

/// How a batch went.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Every device cut (or not the CA's).
    Done,
    /// The plugin did not cut some: they are tried again after [`RETRY_AFTER`].
    SomeFailed,
    /// The broker or the CA could not be reached, or the batch ran out of time.
    Unreachable,
}

impl CutQueue {
    /// Loads what a previous run left in `file`. Nothing is cut before the first
    /// [`CutQueue::release`] (the broker has reloaded the files that list them).
    pub fn load(file: PathBuf) -> Self {
        let serials = match std::fs::read(&file) {
            Ok(bytes) => {
                serde_json::from_slice::<BTreeMap<String, u32>>(&bytes).unwrap_or_else(|e| {
                    eprintln!(
                        "error: {} is not a list of pending cuts ({e}); starting without it",
                        file.display()
                    );
                    BTreeMap::new()
                })
            }
            Err(_) => BTreeMap::new(),
        };
        let serials = serials
            .into_iter()
            .map(|(s, attempts)| {
                let pending = Pending {
                    attempts,
                    order: 0,
                    retry_at: None,
                };
                (s, pending)
            })
            .collect();
        let pending = PendingCuts {
            file,
            serials,
            next_order: 1,
            held: true,
            ca_pem: String::new(),
            outage: 0,
            saved_at: None,
        };
        Self {
            inner: Arc::new(Mutex::new(pending)),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PendingCuts> {
        // A panic elsewhere while holding the lock leaves a consistent map (every change is
        // one insert or remove): keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `serials` (newly listed on CRLs written but not yet reloaded by the broker) and
    /// saves. A serial already pending starts over, as the newest. Cutting waits until
    /// [`CutQueue::release`].
    pub fn add(&self, serials: impl IntoIterator<Item = String>) {
        let mut p = self.lock();
        let order = p.next_order;
        let mut added = false;
        for s in serials {
            let pending = Pending {
                attempts: 0,
                order,
                retry_at: None,
            };
            p.serials.insert(s, pending);
            added = true;
        }
        if added {
            p.next_order += 1;
            p.held = true;
            p.save();
        }
    }

    /// The broker has reloaded the files written last (checked against `ca_pem`): their
    /// serials may be cut.
    pub fn release(&self, ca_pem: &str) {
        let mut p = self.lock();
        p.held = false;
        if p.ca_pem != ca_pem {
            p.ca_pem = ca_pem.to_owned();
        }
        if !p.serials.is_empty() {
            self.wake.notify_one();
        }
    }

    /// The newest `max` serials due at `now`, unless cutting is held.
    fn take(&self, max: usize, now: Instant) -> Option<Batch> {
        let p = self.lock();
        if p.held {
            return None;
        }
        let mut due: Vec<(&String, u64)> = p
            .serials
            .iter()
            .filter(|(_, e)| e.retry_at.is_none_or(|t| t <= now))
            .map(|(s, e)| (s, e.order))
            .collect();
        if due.is_empty() {
            return None;
        }
        if due.len() > max {
            due.select_nth_unstable_by(max - 1, |a, b| b.1.cmp(&a.1));
            due.truncate(max);
        }
        Some(Batch {
            serials: due.into_iter().map(|(s, o)| (s.clone(), o)).collect(),
            ca_pem: p.ca_pem.clone(),
        })
    }

    /// When the next serial waiting to be tried again is due (`None`: none waits, or cutting
    /// is held).
    fn next_retry(&self) -> Option<Instant> {
        let p = self.lock();
        if p.held {
            return None;
        }
        p.serials.values().filter_map(|e| e.retry_at).min()
    }

    /// Records the outcome of `batch` at `now`: the serials not in `failed` are done; the
    /// failed ones wait and are tried again, up to [`MAX_ATTEMPTS`] times when the plugin
    /// answered (`outcome` [`Outcome::SomeFailed`]), without limit while it could not be
    /// reached. A serial listed again since the batch was taken is left as it is.
    fn finish(&self, batch: &Batch, failed: &BTreeSet<String>, outcome: &Outcome, now: Instant) {
        let mut p = self.lock();
        let wait = if *outcome == Outcome::Unreachable {
            p.outage = p.outage.saturating_add(1);
            RETRY_AFTER
                .saturating_mul(1 << p.outage.min(8).saturating_sub(1))
                .min(MAX_OUTAGE_WAIT)
        } else {
            p.outage = 0;
            RETRY_AFTER
        };
        if *outcome == Outcome::Unreachable {
            // The broker or the CA is down for every serial, not only this batch's.
            for entry in p.serials.values_mut() {
                entry.retry_at = Some(entry.retry_at.map_or(now + wait, |t| t.max(now + wait)));
            }
        }
        let mut given_up = Vec::new();
        for (serial, order) in &batch.serials {
            let Some(entry) = p.serials.get_mut(serial).filter(|e| e.order == *order) else {
                continue;
            };
            if !failed.contains(serial) {
                p.serials.remove(serial);
                continue;
            }
            entry.retry_at = Some(now + wait);
            if *outcome == Outcome::Unreachable {
                continue;
            }
            entry.attempts = entry.attempts.saturating_add(1);
            if entry.attempts >= MAX_ATTEMPTS {
                p.serials.remove(serial);
                given_up.push(serial.as_str());
            }
        }
        if !given_up.is_empty() {
            let more = given_up.len().saturating_sub(NAMED);
            eprintln!(
                "giving up cutting the sessions of {} certificate(s) after {MAX_ATTEMPTS} \
                 attempts; the broker still refuses their new connections: {}{}",
                given_up.len(),
                given_up[..given_up.len().min(NAMED)].join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
        if p.serials.is_empty() || p.saved_at.is_none_or(|t| t.elapsed() >= SAVE_EVERY) {
            p.save();
        }
    }

    /// Cuts one batch and records how it went.
    async fn cut_batch(&self, conn: &Connection, config: &CutConfig, batch: &Batch) -> Outcome {
        let outcome = tokio::time::timeout(BATCH_TIMEOUT, round(conn, config, batch)).await;
        let all = || batch.serials.iter().map(|(s, _)| s.clone()).collect();
        let (failed, outcome) = match outcome {
            Ok(Ok(failed)) if failed.is_empty() => (failed, Outcome::Done),
            Ok(Ok(failed)) => (failed, Outcome::SomeFailed),
            Ok(Err(e)) => {
                eprintln!(
                    "could not cut open sessions yet ({} serials pending): {e:#}",
                    self.lock().serials.len()
                );
                (all(), Outcome::Unreachable)
            }
            Err(_) => {
                eprintln!(
                    "cutting the open sessions of {} certificate(s) took over {}s; they stay \
                     pending",
                    batch.serials.len(),
                    BATCH_TIMEOUT.as_secs()
                );
                (all(), Outcome::Unreachable)
            }
        };
        self.finish(batch, &failed, &outcome, Instant::now());
        outcome
    }

    /// The cutter of the daemon: cuts whatever is released and due, newest first, until the
    /// agent stops. It never holds up the CRL loop.
    pub async fn run(self, conn: Connection, config: CutConfig) {
        loop {
            if let Some(batch) = self.take(BATCH, Instant::now()) {
                self.cut_batch(&conn, &config, &batch).await;
                continue;
            }
            // Nothing due: wait for new serials, or for the first one due again.
            match self.next_retry() {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), self.wake.notified()).await;
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// For `--once`: cuts what is released and due, batch after batch, until none is left, a
    /// batch fails whole or `budget` is spent (what is left stays in the file for the next
    /// run).
    pub async fn drain(&self, conn: &Connection, config: &CutConfig, budget: Duration) {
        let start = Instant::now();
        while start.elapsed() < budget {
            let Some(batch) = self.take(BATCH, Instant::now()) else {
                break;
            };
            if self.cut_batch(conn, config, &batch).await == Outcome::Unreachable {
                break;
            }
        }
        let mut p = self.lock();
        p.save();
        if !p.serials.is_empty() {
            eprintln!(
                "{} certificate(s) still to cut: the next run goes on with them",
                p.serials.len()
            );
        }
    }
}

/// Asks the CA which devices the serials of `batch` belong to and cuts their sessions.
/// Returns the serials that are still to be done.
async fn round(conn: &Connection, config: &CutConfig, batch: &Batch) -> Result<BTreeSet<String>> {
    let (Some(cert), Some(key)) = (&conn.cert, &conn.key) else {
        bail!("--dynsec needs the agent's credential (--cert and --key)");
    };
    let target = dynsec::DynsecTarget::new(
        &config.address,
        config.server_name.as_deref(),
        cert,
        key,
        &batch.ca_pem,
    )?;
    let serials: Vec<String> = batch.serials.iter().map(|(s, _)| s.clone()).collect();
    let mut by_device = devices_of(conn, &serials).await?;
    // Never cut the agent's own connection (its old credential may be on the CRL).
    // The CN of the agent's certificate is its MQTT username.
    let own = std::fs::read(cert)
        .ok()
        .and_then(|pem| hallmark_core::bundle::certificate_cn(&pem));
    if let Some(own) = &own
        && by_device.remove(own).is_some()
    {
        eprintln!("not cutting the agent's own username `{own}`");
    }
    let devices: Vec<String> = by_device.keys().cloned().collect();
    let report = dynsec::cut_sessions(&target, &devices).await?;
    if !report.cut.is_empty() {
        eprintln!(
            "cut the broker sessions of {} device(s): {}",
            report.cut.len(),
            report.cut.join(", ")
        );
    }
    let mut pending = BTreeSet::new();
    for (device, why) in &report.failed {
        eprintln!("could not cut the sessions of `{device}`: {why}");
        pending.extend(by_device.get(device).into_iter().flatten().cloned());
    }
    Ok(pending)
}

/// The serials of each device (MQTT username) among `serials`, asked of the CA 1000 at a time.
async fn devices_of(
    conn: &Connection,
    serials: &[String],
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut ca = CertificateAuthorityClient::new(conn.channel().await?);
    let mut devices: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chunk in serials.chunks(1000) {
        let mut page_token = String::new();
        loop {
            let page = ca
                .list_certificates(pb::ListCertificatesRequest {
                    serials: chunk.to_vec(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            for c in page.certificates {
                devices.entry(c.device_id).or_default().push(c.serial);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serials(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:06}")).collect()
    }

    fn names(batch: &Batch) -> Vec<&str> {
        batch.serials.iter().map(|(s, _)| s.as_str()).collect()
    }

    #[test]
    fn nothing_is_cut_before_the_broker_has_reloaded_the_crl_listing_it() {
        let dir = tempfile::tempdir().unwrap();
        let queue = CutQueue::load(dir.path().join("pending"));
        let now = Instant::now();
        queue.release("ca");
        queue.add(serials("a", 3));
        assert!(queue.take(BATCH, now).is_none(), "held until the reload");
        queue.release("ca-2");
        let batch = queue.take(BATCH, now).expect("released");
        assert_eq!((batch.serials.len(), batch.ca_pem.as_str()), (3, "ca-2"));
        // A later CRL holds everything again until its reload, the older serials included.
        queue.add(serials("b", 1));
        assert!(queue.take(BATCH, now).is_none());
    }

    #[test]
    fn a_serial_listed_during_a_bulk_cut_is_in_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let queue = CutQueue::load(dir.path().join("pending"));
        let now = Instant::now();
        queue.add(serials("zone-", 10 * BATCH));
        queue.release("ca");
        let first = queue.take(BATCH, now).unwrap();
        assert_eq!(first.serials.len(), BATCH);
        queue.finish(&first, &BTreeSet::new(), &Outcome::Done, now);
        queue.add(["single".to_owned()]);
        queue.release("ca");
        let next = queue.take(BATCH, now).unwrap();
        assert!(names(&next).contains(&"single"));
        assert_eq!(next.serials.len(), BATCH);
        assert!(
            next.serials.iter().all(|s| !first.serials.contains(s)),
            "a batch done is not cut again"
        );
    }

    #[test]
    fn a_serial_listed_again_while_its_batch_is_out_is_held_and_kept() {
        // Suspended, resumed and suspended again while a cut of it was under way: that cut
        // may have landed before the broker reloaded the CRL listing it again.
        let dir = tempfile::tempdir().unwrap();
        let queue = CutQueue::load(dir.path().join("pending"));
        let now = Instant::now();
        queue.add(["s".to_owned()]);
        queue.release("ca");
        let out = queue.take(BATCH, now).unwrap();
        queue.add(["s".to_owned()]);
        queue.finish(&out, &BTreeSet::new(), &Outcome::Done, now);
        assert!(
            queue.take(BATCH, now).is_none(),
            "held until the new reload"
        );
        queue.release("ca");
        assert_eq!(names(&queue.take(BATCH, now).unwrap()), ["s"], "cut again");
    }

    #[test]
    fn a_failing_serial_waits_between_attempts_gives_up_after_five_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pending");
        let queue = CutQueue::load(file.clone());
        let mut now = Instant::now();
        queue.add(serials("s", 3));
        queue.release("ca");
        let failing: BTreeSet<String> = ["s000000".to_owned()].into();
        let batch = queue.take(BATCH, now).unwrap();
        queue.finish(&batch, &failing, &Outcome::SomeFailed, now);
        // Done ones are gone from the file at its next save (at most a second later); the
        // failing one stays with its attempt.
        queue.lock().save();
        let saved: BTreeMap<String, u32> =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(saved, [("s000000".to_owned(), 1)].into());
        assert!(queue.take(BATCH, now).is_none(), "not at once again");
        assert_eq!(queue.next_retry(), Some(now + RETRY_AFTER));
        let restarted = CutQueue::load(file.clone());
        assert!(restarted.take(BATCH, now).is_none(), "held after a restart");
        restarted.release("ca");
        for attempt in 2..=MAX_ATTEMPTS {
            let batch = restarted.take(BATCH, now).expect("due");
            assert_eq!(names(&batch), ["s000000"], "attempt {attempt}");
            restarted.finish(&batch, &failing, &Outcome::SomeFailed, now);
            now += RETRY_AFTER;
        }
        assert!(restarted.take(BATCH, now).is_none(), "given up");
        assert!(!file.exists(), "an empty queue leaves no file");
    }

    #[test]
    fn an_unreachable_broker_uses_no_attempts_and_holds_every_serial_back() {
        let dir = tempfile::tempdir().unwrap();
        let queue = CutQueue::load(dir.path().join("pending"));
        let mut now = Instant::now();
        queue.add(serials("s", 2 * BATCH));
        queue.release("ca");
        let mut waits = Vec::new();
        for _ in 0..10 {
            let batch = queue.take(BATCH, now).expect("due again");
            let all = batch.serials.iter().map(|(s, _)| s.clone()).collect();
            queue.finish(&batch, &all, &Outcome::Unreachable, now);
            assert!(
                queue.take(BATCH, now).is_none(),
                "the other batch waits too"
            );
            let at = queue.next_retry().unwrap();
            waits.push((at - now).as_secs());
            now = at;
        }
        assert_eq!(waits, [5, 10, 20, 40, 60, 60, 60, 60, 60, 60]);
        let p = queue.lock();
        assert_eq!(p.serials.len(), 2 * BATCH, "nothing given up");
        assert!(p.serials.values().all(|e| e.attempts == 0));
    }
}
