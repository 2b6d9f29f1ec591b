//! The sessions the agent still has to cut: serials newly listed on an applied CRL, kept in a
//! file beside the broker's CRL file so that a restart of the agent (or a `--once` run that
//! could not reach the broker) does not forget them.
//!
//! Cutting runs beside the CRL loop, never in it: the plugin takes one client entry per
//! device, so a zone of 100,000 devices revoked at once takes minutes to cut, and no newer CRL
//! may wait for that. The newest serials are cut first, a batch at a time, so that a device
//! revoked during such a bulk cut is off the broker as fast as ever; the file is saved after
//! every batch, so a long cut resumes where it stopped.

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

/// Attempts per serial before the agent gives up on it (and says so).
const MAX_ATTEMPTS: u32 = 5;
/// How long one batch may take, CA lookups included.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Serials per batch: the newest serials wait at most for one batch before theirs.
const BATCH: usize = 200;
/// The pause after a batch that failed whole (broker or CA unreachable), unless new serials
/// come in before.
const RETRY_AFTER: Duration = Duration::from_secs(5);
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
    /// Higher for serials listed later: those are cut first.
    order: u64,
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
}

impl PendingCuts {
    fn save(&self) -> Result<()> {
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

/// One batch taken from the queue.
struct Batch {
    serials: Vec<String>,
    ca_pem: String,
}

impl CutQueue {
    /// Loads what a previous run left in `file`. Nothing is cut before the first
    /// [`CutQueue::release`] (the broker has reloaded the files that list them).
    pub fn load(file: PathBuf) -> Self {
        let serials = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, u32>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(s, attempts)| (s, Pending { attempts, order: 0 }))
            .collect();
        let pending = PendingCuts {
            file,
            serials,
            next_order: 1,
            held: true,
            ca_pem: String::new(),
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
    /// saves. Cutting waits until [`CutQueue::release`].
    pub fn add(&self, serials: impl IntoIterator<Item = String>) -> Result<()> {
        let mut p = self.lock();
        let order = p.next_order;
        p.next_order += 1;
        let before = p.serials.len();
        for s in serials {
            p.serials.entry(s).or_insert(Pending { attempts: 0, order });
        }
        if p.serials.len() != before {
            p.held = true;
            p.save()?;
        }
        Ok(())
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

    /// The newest `max` serials, unless cutting is held.
    fn take(&self, max: usize) -> Option<Batch> {
        let p = self.lock();
        if p.held || p.serials.is_empty() {
            return None;
        }
        let mut by_order: Vec<(&String, u64)> =
            p.serials.iter().map(|(s, e)| (s, e.order)).collect();
        if by_order.len() > max {
            by_order.select_nth_unstable_by(max - 1, |a, b| b.1.cmp(&a.1));
            by_order.truncate(max);
        }
        Some(Batch {
            serials: by_order.into_iter().map(|(s, _)| s.clone()).collect(),
            ca_pem: p.ca_pem.clone(),
        })
    }

    /// Records the outcome of `batch`: the serials not in `failed` are done, the failed ones
    /// are tried again up to [`MAX_ATTEMPTS`] times.
    fn finish(&self, batch: &Batch, failed: &BTreeSet<String>) {
        let mut p = self.lock();
        let mut given_up = Vec::new();
        for serial in &batch.serials {
            if !failed.contains(serial) {
                p.serials.remove(serial);
                continue;
            }
            let Some(entry) = p.serials.get_mut(serial) else {
                continue;
            };
            entry.attempts += 1;
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
        if let Err(e) = p.save() {
            eprintln!("could not save the pending cuts: {e:#}");
        }
    }

    /// Cuts one batch; returns whether it went through whole (false: the rest should wait).
    async fn cut_batch(&self, conn: &Connection, config: &CutConfig, batch: &Batch) -> bool {
        let outcome = tokio::time::timeout(BATCH_TIMEOUT, round(conn, config, batch)).await;
        let (failed, whole) = match outcome {
            Ok(Ok(failed)) => (failed, true),
            Ok(Err(e)) => {
                eprintln!(
                    "could not cut open sessions yet ({} serials pending): {e:#}",
                    self.lock().serials.len()
                );
                (batch.serials.iter().cloned().collect(), false)
            }
            Err(_) => {
                eprintln!(
                    "cutting the open sessions of {} certificate(s) took over {}s; they stay \
                     pending",
                    batch.serials.len(),
                    BATCH_TIMEOUT.as_secs()
                );
                (batch.serials.iter().cloned().collect(), false)
            }
        };
        self.finish(batch, &failed);
        whole
    }

    /// The cutter of the daemon: cuts whatever is released, newest first, until the agent
    /// stops. It never holds up the CRL loop.
    pub async fn run(self, conn: Connection, config: CutConfig) {
        loop {
            let Some(batch) = self.take(BATCH) else {
                self.wake.notified().await;
                continue;
            };
            if !self.cut_batch(&conn, &config, &batch).await {
                // New serials end the pause: they may belong to devices the broker can cut.
                let _ = tokio::time::timeout(RETRY_AFTER, self.wake.notified()).await;
            }
        }
    }

    /// For `--once`: cuts what is released, batch after batch, until none is left, a batch
    /// fails whole or `budget` is spent (what is left stays in the file for the next run).
    pub async fn drain(&self, conn: &Connection, config: &CutConfig, budget: Duration) {
        let start = Instant::now();
        while start.elapsed() < budget {
            let Some(batch) = self.take(BATCH) else {
                return;
            };
            if !self.cut_batch(conn, config, &batch).await {
                return;
            }
        }
        let left = self.lock().serials.len();
        if left > 0 {
            eprintln!(
                "{left} certificate(s) still to cut after {}s: the next run goes on with them",
                budget.as_secs()
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
    let mut by_device = devices_of(conn, &batch.serials).await?;
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

    #[test]
    fn nothing_is_cut_before_the_broker_has_reloaded_the_crl_listing_it() {
        let dir = tempfile::tempdir().unwrap();
        let queue = CutQueue::load(dir.path().join("pending"));
        queue.release("ca");
        queue.add(serials("a", 3)).unwrap();
        assert!(queue.take(BATCH).is_none(), "held until the reload");
        queue.release("ca-2");
        let batch = queue.take(BATCH).expect("released");
        assert_eq!((batch.serials.len(), batch.ca_pem.as_str()), (3, "ca-2"));
        // A later CRL holds everything again until its reload, the older serials included.
        queue.add(serials("b", 1)).unwrap();
        assert!(queue.take(BATCH).is_none());
    }

    #[test]
    fn a_serial_listed_during_a_bulk_cut_is_in_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let queue = CutQueue::load(dir.path().join("pending"));
        queue.add(serials("zone-", 10 * BATCH)).unwrap();
        queue.release("ca");
        let first = queue.take(BATCH).unwrap();
        assert_eq!(first.serials.len(), BATCH);
        queue.finish(&first, &BTreeSet::new());
        queue.add(["single".to_owned()]).unwrap();
        queue.release("ca");
        let next = queue.take(BATCH).unwrap();
        assert!(next.serials.contains(&"single".to_owned()));
        assert_eq!(next.serials.len(), BATCH);
        assert!(
            next.serials.iter().all(|s| !first.serials.contains(s)),
            "a batch done is not cut again"
        );
    }

    #[test]
    fn a_failing_serial_is_tried_five_times_and_the_rest_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pending");
        let queue = CutQueue::load(file.clone());
        queue.add(serials("s", 3)).unwrap();
        queue.release("ca");
        let failing: BTreeSet<String> = ["s000000".to_owned()].into();
        let batch = queue.take(BATCH).unwrap();
        queue.finish(&batch, &failing);
        // Done ones are gone from the file at once; the failing one stays with its attempt.
        let saved: BTreeMap<String, u32> =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(saved, [("s000000".to_owned(), 1)].into());
        let restarted = CutQueue::load(file.clone());
        assert!(restarted.take(BATCH).is_none(), "held after a restart");
        restarted.release("ca");
        for attempt in 2..=MAX_ATTEMPTS {
            let batch = restarted.take(BATCH).expect("still pending");
            assert_eq!(batch.serials, ["s000000"], "attempt {attempt}");
            restarted.finish(&batch, &failing);
        }
        assert!(restarted.take(BATCH).is_none(), "given up");
        assert!(!file.exists(), "an empty queue leaves no file");
    }
}
