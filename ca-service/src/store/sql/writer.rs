//! The single writer: batches concurrent write requests into one transaction (group commit).
//! Each request runs in its own savepoint, so one failing request (a duplicate, a conflict)
//! rolls back only itself; the batch commits once and every caller is answered after the commit.

use super::{Conn, Pool, announce_status_version, begin_write};
use sqlx::Acquire;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::batch::issue_run;
use super::ops::{apply, last_audit_hash, next_status_version};
use crate::audit::AuditEvent;
use crate::store::{
    CertSelector, CertStatus, DeviceClaim, DeviceStatus, IssuerRecord, ManufacturerCaRecord,
    NewCertificate, NewDevice, Operators, RevocationStatus, StatusBatch, StatusChange, StoreError,
    TokenRecord,
};

/// A state change: the writer's message, one per typed write of
/// [`crate::store::interface::Store`] (private to the store). Every variant writes its
/// audit event(s) in the same transaction.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Record an issued certificate, registering its device if it is new.
    Issue {
        /// The registry entry the certificate was signed for.
        device: DeviceClaim,
        /// The certificate (boxed: it is by far the largest variant).
        cert: Box<NewCertificate>,
        /// Caller (`name/serial` or `system`).
        actor: String,
    },
    /// Record an issued certificate and revoke (reason superseded) the device's other unexpired
    /// active or held certificates, atomically: a re-provisioned device keeps exactly one.
    IssueReplacing {
        /// The registry entry the certificate was signed for.
        device: DeviceClaim,
        /// The certificate.
        cert: Box<NewCertificate>,
        /// Caller.
        actor: String,
    },
    /// Consume a one-time enrollment token and record the certificate it bought, atomically:
    /// a token that is used, revoked or expired by commit time fails the whole write.
    Enroll {
        /// SHA-256 of the token.
        token_hash: Vec<u8>,
        /// The registry entry the certificate was signed for.
        device: DeviceClaim,
        /// The certificate.
        cert: Box<NewCertificate>,
        /// Caller.
        actor: String,
    },
    /// Record a certificate that may be issued only if the device got none within
    /// `min_interval` seconds (checked inside the transaction, so concurrent requests cannot
    /// both pass): renewals, which also mark the renewed certificate superseded, and IDevID
    /// enrollments.
    IssueLimited {
        /// Serial of the certificate this one renews, which must still be active.
        supersedes: Option<String>,
        /// Minimum seconds between two certificates of one device.
        min_interval: i64,
        /// The renewed certificate's key may be exposed: revoke it (and a successor of it that
        /// never authenticated) as keyCompromise; exempt from `min_interval` once.
        key_compromise: bool,
        /// The registry entry the new certificate was signed for.
        device: DeviceClaim,
        /// The new certificate.
        cert: Box<NewCertificate>,
        /// Caller.
        actor: String,
    },
    /// Note that a certificate authenticated a call for the first time (no audit event: it
    /// observes use and changes no status; see docs/decisions.md).
    MarkAuthenticated {
        /// Serial, hex.
        serial: String,
        /// Unix seconds.
        at: i64,
    },
    /// Refuse the write (all of a [`WriteOp::All`]) when any issuer is recorded: the first
    /// hierarchy of a database, against two `init`s racing on one shared database.
    ExpectNoIssuers,
    /// Record a CA certificate.
    AddIssuer {
        /// The issuer.
        issuer: IssuerRecord,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
    },
    /// Revoke, suspend or resume every certificate `selector` picks that `change` applies to,
    /// leaving out what `operators` and device holds leave out (see
    /// [`crate::store::interface::Store::certificates_selected`]); refused whole if it takes the last valid admin
    /// credential.
    ChangeStatus {
        /// Which certificates.
        selector: CertSelector,
        /// What to do.
        change: StatusChange,
        /// Which profiles are operator credentials, and whether a bulk selection takes them.
        operators: Operators,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
    },
    /// Count a failed enrollment against its peer (see
    /// [`crate::store::interface::Store::record_enroll_failure`]).
    RecordEnrollFailure {
        /// The failure.
        failure: crate::store::EnrollFailure,
    },
    /// Store a CRL of an issuing CA for every replica; refused with
    /// [`crate::store::StoreError::Changed`] when one numbered as high is stored already.
    StoreIssuingCrl {
        /// The CRL.
        crl: crate::store::IssuingCrlRecord,
        /// The storing replica, announced with it (the others take it up).
        replica: u64,
    },
    /// Take the next CRL number of an issuer (strictly increasing, across restarts).
    NextCrlNumber {
        /// Issuer id.
        issuer_id: String,
        /// Unix seconds.
        at: i64,
    },
    /// Stop an issuing CA from signing; it stays valid (and publishes CRLs) until it expires.
    RetireIssuer {
        /// Issuer id.
        id: String,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
    },
    /// Revoke a retired issuing CA: it signs nothing more (no certificate of it is recorded
    /// from now on) and leaves the trust bundle. Refused for the active issuing CA, a root, an
    /// issuer revoked already, and when it would take the last valid admin credential (every
    /// certificate of a revoked issuer is refused as a caller).
    RevokeIssuer {
        /// Issuer id.
        id: String,
        /// RFC 5280 reason code.
        reason: Option<i64>,
        /// Profiles whose role is `admin`.
        admin_profiles: Vec<String>,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
        /// Particulars for the audit event (serial, who ran it).
        details: serde_json::Value,
    },
    /// Store a newly signed CRL of a root as the one it publishes. Refused with
    /// [`crate::store::StoreError::Changed`] when a CRL with a number as high is stored already, or
    /// when the revoked issuing CAs are no longer `revoked_issuers` (another signer got there
    /// first, or a revocation committed while it was signed: sign again).
    StoreRootCrl {
        /// The CRL.
        crl: crate::store::RootCrlRecord,
        /// Ids of every revoked issuing CA, sorted, as the signer saw them.
        revoked_issuers: Vec<String>,
    },
    /// Change a certificate's status (revoke, suspend, resume).
    SetCertificateStatus {
        /// Serial, hex.
        serial: String,
        /// New status.
        status: CertStatus,
        /// RFC 5280 reason code (ignored when resuming).
        reason: Option<i64>,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
    },
    /// Register devices (at most 1000); rows that collide with existing ids or serial numbers
    /// are refused one by one, the others kept.
    RegisterDevices {
        /// The devices.
        devices: Vec<NewDevice>,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
    },
    /// Suspend, resume or decommission a device, holding, releasing or revoking its
    /// certificates with it. Decommissioning is final except for [`WriteOp::ReadmitDevice`].
    /// Refused if it takes the last valid admin credential.
    SetDeviceStatus {
        /// Device id.
        id: String,
        /// New status.
        status: DeviceStatus,
        /// Profiles whose role is `admin`.
        admin_profiles: Vec<String>,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
    },
    /// Re-admit a device: active again if decommissioned, and its IDevID may enroll it again
    /// although certificates of it were revoked before.
    ReadmitDevice {
        /// Device id.
        id: String,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
    },
    /// Store a new enrollment token (its hash).
    CreateToken {
        /// The token row.
        token: TokenRecord,
    },
    /// Revoke every unused token of a device.
    RevokeTokens {
        /// Device id.
        device_id: String,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
    },
    /// Register a manufacturer CA.
    AddManufacturerCa {
        /// The record.
        record: ManufacturerCaRecord,
        /// Caller.
        actor: String,
    },
    /// Record an event that changes no other state (e.g. an enrollment throttle).
    Audit(AuditEvent),
    /// Several changes, all or nothing (no nesting).
    All(Vec<WriteOp>),
}

/// What a write produced (public only as long as [`WriteOp`] is).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutput {
    /// A certificate was recorded; `device_registered` tells whether its device was new.
    Issued {
        /// Whether the device row was created by this write.
        device_registered: bool,
    },
    /// Devices were registered; `rejected` lists `(index, reason)` of refused rows.
    Registered {
        /// How many rows were registered.
        registered: usize,
        /// Refused rows by index in the request.
        rejected: Vec<(usize, String)>,
    },
    /// A yes-or-no outcome (whether a failed enrollment started the throttle).
    Flag(bool),
    /// A number of rows changed.
    Count(u64),
    /// These certificates changed status (in order); also sent on the status feed.
    StatusChanged(Vec<RevocationStatus>),
    /// The write was done.
    Done,
    /// The outputs of an [`WriteOp::All`].
    All(Vec<WriteOutput>),
}

pub(super) struct Request {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteOutput, StoreError>>,
}

/// Committed status changes, in commit order (see [`crate::store::interface::Store::status_changes`]).
pub(super) type StatusFeed = broadcast::Sender<Arc<StatusBatch>>;

fn collect_status_changes(out: &WriteOutput, into: &mut Vec<RevocationStatus>) {
    match out {
        WriteOutput::StatusChanged(c) => into.extend(c.iter().cloned()),
        WriteOutput::All(outs) => outs.iter().for_each(|o| collect_status_changes(o, into)),
        _ => {}
    }
}

/// Whether `op` may change what the per-call check of a caller already recorded reads
/// (certificate or device status, issuers): see
/// [`crate::store::interface::Store::caller_generation`]. Issuances, tokens and counters do not;
/// everything not named here is taken to.
fn may_change_callers(op: &WriteOp) -> bool {
    match op {
        // A renewal without key compromise only marks the renewed certificate superseded,
        // which the caller check does not read (so a device looping refused renewals cannot
        // keep everyone's records out of memory).
        WriteOp::IssueLimited {
            key_compromise: false,
            ..
        } => false,
        WriteOp::Issue { .. }
        | WriteOp::Enroll { .. }
        | WriteOp::MarkAuthenticated { .. }
        | WriteOp::ExpectNoIssuers
        | WriteOp::StoreIssuingCrl { .. }
        | WriteOp::NextCrlNumber { .. }
        | WriteOp::StoreRootCrl { .. }
        | WriteOp::RegisterDevices { .. }
        | WriteOp::CreateToken { .. }
        | WriteOp::AddManufacturerCa { .. }
        | WriteOp::RecordEnrollFailure { .. }
        | WriteOp::Audit(_) => false,
        WriteOp::All(ops) => ops.iter().any(may_change_callers),
        _ => true,
    }
}

pub(super) async fn run(
    pool: Pool,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
    feed: StatusFeed,
    replica: u64,
    generation: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let span = tracing::debug_span!("group_commit", size = batch.len());
        let _enter = span.enter();
        let callers_changed = batch.iter().any(|r| may_change_callers(&r.op));
        let outcome = commit_batch(&pool, &batch, replica, callers_changed).await;
        if callers_changed {
            // Before anyone is answered (also after a failure: whether a commit that failed
            // late took effect is not known here), so that no call after a revocation's answer
            // finds the revoked caller in memory.
            generation.fetch_add(1, Ordering::AcqRel);
        }
        match outcome {
            Ok((results, changed)) => {
                // On the feed before anyone hears of the commit: whoever reacts to an answer
                // finds the change already there.
                if let Some(changed) = changed {
                    // No receiver is fine: nobody publishes CRLs in this process.
                    let _ = feed.send(Arc::new(changed));
                }
                for (req, res) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; {} writes refused", batch.len());
                let msg = e.to_string();
                for req in batch {
                    let _ = req
                        .reply
                        .send(Err(StoreError::Database(sqlx::Error::Protocol(format!(
                            "commit failed: {msg}"
                        )))));
                }
            }
        }
    }
}

/// The outcome of each request, and the batch's status changes (if any) with the status version
/// their commit made.
type BatchOutcome = (Vec<Result<WriteOutput, StoreError>>, Option<StatusBatch>);

async fn commit_batch(
    pool: &Pool,
    batch: &[Request],
    replica: u64,
    callers_changed: bool,
) -> Result<BatchOutcome, sqlx::Error> {
    let only_issuances =
        batch.len() > 1 && batch.iter().all(|r| matches!(r.op, WriteOp::Issue { .. }));
    if only_issuances && let Some(results) = commit_issuances(pool, batch).await? {
        return Ok((results, None));
    }
    commit_one_by_one(pool, batch, replica, !only_issuances, callers_changed).await
}

/// The hot path: a batch of issuances only, written as one run straight in the transaction.
/// No savepoint: on SQLite a savepoint copies every page it touches into a sub-journal first
/// (profiled: about a fifth of the writer's time). `None` when the run failed and was rolled
/// back whole: the batch is then written one by one.
async fn commit_issuances(
    pool: &Pool,
    batch: &[Request],
) -> Result<Option<Vec<Result<WriteOutput, StoreError>>>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = begin_write(&mut conn).await?;
    let mut chain = last_audit_hash(&mut tx).await?;
    match issue_run(&mut tx, batch, &mut chain).await {
        Ok(results) => {
            tx.commit().await?;
            Ok(Some(results))
        }
        Err(e) => {
            tx.rollback().await?;
            tracing::debug!(error = %e, run = batch.len(), "batched insert failed; writing one by one");
            Ok(None)
        }
    }
}

/// Writes `batch` in one transaction, each request in its own savepoint (runs of issuances
/// batched first when `batch_runs`), so that a failing request rolls back only itself;
/// `callers_changed`: the batch may change a caller's record (announced even without a status
/// change).
async fn commit_one_by_one(
    pool: &Pool,
    batch: &[Request],
    replica: u64,
    batch_runs: bool,
    callers_changed: bool,
) -> Result<BatchOutcome, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // The dialect's write lock (one writer at a time across processes and replicas) is held
    // from here to the commit, so the chain head read next is the newest: another process or
    // replica may have appended events since our last batch.
    let mut tx = begin_write(&mut conn).await?;
    let mut chain = last_audit_hash(&mut tx).await?;
    let chain = &mut chain;
    let mut results = Vec::with_capacity(batch.len());
    let mut i = 0;
    while i < batch.len() {
        // Consecutive issuances (the hot path) are written with a handful of multi-row
        // statements; everything else, and a run whose fast path failed, one by one.
        let run_end = batch[i..]
            .iter()
            .position(|r| !matches!(r.op, WriteOp::Issue { .. }))
            .map_or(batch.len(), |n| i + n);
        if batch_runs && run_end - i > 1 {
            let before = *chain;
            let mut sp = Acquire::begin(&mut tx).await?;
            match issue_run(&mut sp, &batch[i..run_end], chain).await {
                Ok(run) => {
                    sp.commit().await?;
                    results.extend(run);
                    i = run_end;
                    continue;
                }
                Err(e) => {
                    sp.rollback().await?;
                    *chain = before;
                    tracing::debug!(error = %e, run = run_end - i, "batched insert failed; writing one by one");
                }
            }
        }
        let end = run_end.max(i + 1);
        for req in &batch[i..end] {
            results.push(apply_in_savepoint(&mut tx, &req.op, chain).await?);
        }
        i = end;
    }
    let mut changes = Vec::new();
    for out in results.iter().flatten() {
        collect_status_changes(out, &mut changes);
    }
    let changed = if changes.is_empty() {
        if callers_changed {
            // No status changed, but an issuer or a device may have (an issuing CA revoked,
            // a device re-admitted): other replicas drop the callers' records they keep.
            let version: i64 =
                sqlx::query_scalar("SELECT version FROM status_version WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            announce_status_version(&mut tx, replica, version).await?;
        }
        None
    } else {
        // One version per batch, counted in the same transaction: a replica that reads
        // version v knows every change up to v is committed (and, on PostgreSQL, announced).
        let version = next_status_version(&mut tx, replica).await?;
        Some(StatusBatch { version, changes })
    };
    tx.commit().await?;
    Ok((results, changed))
}

async fn apply_in_savepoint(
    conn: &mut Conn,
    op: &WriteOp,
    chain: &mut [u8; 32],
) -> Result<Result<WriteOutput, StoreError>, sqlx::Error> {
    let before = *chain;
    let mut sp = Acquire::begin(&mut *conn).await?;
    match apply(&mut sp, op, chain).await {
        Ok(out) => {
            sp.commit().await?;
            Ok(Ok(out))
        }
        Err(e) => {
            sp.rollback().await?;
            *chain = before;
            Ok(Err(e))
        }
    }
}
