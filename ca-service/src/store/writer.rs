//! The single writer: batches concurrent write requests into one transaction (group commit).
//! Each request runs in its own savepoint, so one failing request (a duplicate, a conflict)
//! rolls back only itself; the batch commits once and every caller is answered after the commit.

use std::collections::{HashMap, HashSet};

use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{Acquire, Connection, QueryBuilder, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{CertStatus, DeviceClaim, DeviceStatus, IssuerRecord, NewCertificate, StoreError};
use crate::audit::{AuditEvent, GENESIS_HASH};

/// A state change. Every variant writes its audit event(s) in the same transaction.
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
    /// Record a CA certificate.
    AddIssuer {
        /// The issuer.
        issuer: IssuerRecord,
        /// Unix seconds.
        at: i64,
        /// Caller.
        actor: String,
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
    /// Several changes, all or nothing (no nesting).
    All(Vec<WriteOp>),
}

/// What a write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutput {
    /// A certificate was recorded; `device_registered` tells whether its device was new.
    Issued {
        /// Whether the device row was created by this write.
        device_registered: bool,
    },
    /// An issuer was recorded.
    IssuerAdded,
    /// A certificate's status changed.
    StatusChanged,
    /// The outputs of an [`WriteOp::All`].
    All(Vec<WriteOutput>),
}

pub(super) struct Request {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteOutput, StoreError>>,
}

pub(super) async fn last_audit_hash(pool: &SqlitePool) -> Result<[u8; 32], StoreError> {
    let row = sqlx::query("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1")
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(r) => {
            let v: Vec<u8> = r.get("hash");
            v.try_into().unwrap_or(GENESIS_HASH)
        }
        None => GENESIS_HASH,
    })
}

pub(super) async fn run(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
    mut chain: [u8; 32],
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
        let chain_at_start = chain;
        match commit_batch(&pool, &batch, &mut chain).await {
            Ok(results) => {
                for (req, res) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; {} writes refused", batch.len());
                chain = chain_at_start;
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

async fn commit_batch(
    pool: &SqlitePool,
    batch: &[Request],
    chain: &mut [u8; 32],
) -> Result<Vec<Result<WriteOutput, StoreError>>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // BEGIN IMMEDIATE takes the write lock up front instead of failing on upgrade.
    let mut tx = Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut i = 0;
    while i < batch.len() {
        // Consecutive issuances (the hot path) are written with a handful of multi-row
        // statements; everything else, and a run whose fast path failed, one by one.
        let run_end = batch[i..]
            .iter()
            .position(|r| !matches!(r.op, WriteOp::Issue { .. }))
            .map_or(batch.len(), |n| i + n);
        if run_end - i > 1 {
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
    tx.commit().await?;
    Ok(results)
}

async fn apply_in_savepoint(
    conn: &mut SqliteConnection,
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

/// Writes a run of `Issue` requests with one statement per table: devices (insert-if-new),
/// a device check, certificates and audit events. A request whose device does not match fails
/// alone; any statement error fails the run, which the caller then retries one by one.
async fn issue_run(
    conn: &mut SqliteConnection,
    run: &[Request],
    chain: &mut [u8; 32],
) -> Result<Vec<Result<WriteOutput, StoreError>>, StoreError> {
    let items: Vec<(&DeviceClaim, &NewCertificate, &str)> = run
        .iter()
        .filter_map(|r| match &r.op {
            WriteOp::Issue {
                device,
                cert,
                actor,
            } => Some((device, cert.as_ref(), actor.as_str())),
            _ => None,
        })
        .collect();

    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO devices (id, zone, lot, profile, model, serial_number, status, created_at, updated_at) ",
    );
    insert.push_values(&items, |mut b, (d, c, _)| {
        b.push_bind(&d.id)
            .push_bind(&d.zone)
            .push_bind(None::<String>)
            .push_bind(&d.profile)
            .push_bind(None::<String>)
            .push_bind(None::<String>)
            .push_bind(DeviceStatus::Active.as_str())
            .push_bind(c.issued_at)
            .push_bind(c.issued_at);
    });
    insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
    let new_ids: HashSet<String> = insert
        .build()
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.get("id"))
        .collect();

    let ids: HashSet<&str> = items.iter().map(|(d, _, _)| d.id.as_str()).collect();
    let mut select =
        QueryBuilder::<Sqlite>::new("SELECT id, zone, profile, status FROM devices WHERE id IN (");
    let mut list = select.separated(", ");
    for id in &ids {
        list.push_bind(*id);
    }
    select.push(")");
    let registry: HashMap<String, (String, String, DeviceStatus)> = select
        .build()
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            (
                r.get("id"),
                (
                    r.get("zone"),
                    r.get("profile"),
                    DeviceStatus::parse(r.get("status")),
                ),
            )
        })
        .collect();

    let mut results = Vec::with_capacity(items.len());
    let mut accepted = Vec::with_capacity(items.len());
    let mut registered: HashSet<&str> = HashSet::new();
    for (d, c, actor) in &items {
        let check = match registry.get(&d.id) {
            None => Err(StoreError::DeviceConflict(format!(
                "device {} vanished",
                d.id
            ))),
            Some((zone, profile, status)) => check_claim(d, zone, profile, *status),
        };
        match check {
            Ok(()) => {
                // The first claimant of a device inserted by this run registered it.
                let new = new_ids.contains(&d.id) && registered.insert(d.id.as_str());
                accepted.push((*d, *c, *actor, new));
                results.push(Ok(WriteOutput::Issued {
                    device_registered: new,
                }));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if accepted.is_empty() {
        return Ok(results);
    }

    let mut certs = QueryBuilder::<Sqlite>::new(
        "INSERT INTO certificates (serial, device_id, profile, zone, issuer_id, subject, not_before, \
         not_after, status, revoked_at, revocation_reason, scope, requested_by, spki_sha256, der, issued_at) ",
    );
    let mut scopes = Vec::with_capacity(accepted.len());
    for (_, c, _, _) in &accepted {
        scopes.push(scope_json(c)?);
    }
    certs.push_values(
        accepted.iter().zip(&scopes),
        |mut b, ((d, c, _, _), scope)| {
            b.push_bind(&c.serial)
                .push_bind(&d.id)
                .push_bind(&c.profile)
                .push_bind(&c.zone)
                .push_bind(&c.issuer_id)
                .push_bind(&c.subject)
                .push_bind(c.not_before)
                .push_bind(c.not_after)
                .push_bind("active")
                .push_bind(None::<i64>)
                .push_bind(None::<i64>)
                .push_bind(scope.as_deref())
                .push_bind(&c.requested_by)
                .push_bind(&c.spki_sha256)
                .push_bind(&c.der)
                .push_bind(c.issued_at);
        },
    );
    certs.build().execute(&mut *conn).await?;

    let mut events = Vec::with_capacity(accepted.len() * 2);
    for (d, c, actor, new) in &accepted {
        if *new {
            events.push(device_registered_event(d, c.issued_at, actor));
        }
        events.push(issued_event(c, actor));
    }
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        let hash = e.chain_hash(chain);
        rows.push((e, *chain, hash));
        *chain = hash;
    }
    let mut audit = QueryBuilder::<Sqlite>::new(
        "INSERT INTO audit_events (at, actor, action, target, details, prev_hash, hash) ",
    );
    audit.push_values(&rows, |mut b, (e, prev, hash)| {
        b.push_bind(e.at)
            .push_bind(&e.actor)
            .push_bind(&e.action)
            .push_bind(&e.target)
            .push_bind(&e.details)
            .push_bind(prev.as_slice())
            .push_bind(hash.as_slice());
    });
    audit.build().execute(&mut *conn).await?;
    Ok(results)
}

fn check_claim(
    claim: &DeviceClaim,
    zone: &str,
    profile: &str,
    status: DeviceStatus,
) -> Result<(), StoreError> {
    if status != DeviceStatus::Active {
        return Err(StoreError::DeviceConflict(format!(
            "device {} is {}; resume it before issuing",
            claim.id,
            status.as_str()
        )));
    }
    if zone != claim.zone || profile != claim.profile {
        return Err(StoreError::DeviceConflict(format!(
            "device {} is registered in zone {zone} with profile {profile}, not zone {} with profile {}",
            claim.id, claim.zone, claim.profile
        )));
    }
    Ok(())
}

fn scope_json(c: &NewCertificate) -> Result<Option<String>, StoreError> {
    c.scope
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

fn issued_event(cert: &NewCertificate, actor: &str) -> AuditEvent {
    AuditEvent::new(
        cert.issued_at,
        actor,
        "certificate.issue",
        cert.serial.as_str(),
        serde_json::json!({
            "device": cert.device_id,
            "profile": cert.profile,
            "zone": cert.zone,
            "issuer": cert.issuer_id,
            "not_after": cert.not_after,
        }),
    )
}

fn device_registered_event(claim: &DeviceClaim, at: i64, actor: &str) -> AuditEvent {
    AuditEvent::new(
        at,
        actor,
        "device.register",
        claim.id.as_str(),
        serde_json::json!({"zone": claim.zone, "profile": claim.profile, "via": "issue"}),
    )
}

async fn apply(
    conn: &mut SqliteConnection,
    op: &WriteOp,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    match op {
        WriteOp::All(ops) => {
            let mut outs = Vec::with_capacity(ops.len());
            for op in ops {
                if matches!(op, WriteOp::All(_)) {
                    return Err(StoreError::DeviceConflict(
                        "nested WriteOp::All is not supported".into(),
                    ));
                }
                outs.push(Box::pin(apply(conn, op, chain)).await?);
            }
            Ok(WriteOutput::All(outs))
        }
        WriteOp::Issue {
            device,
            cert,
            actor,
        } => {
            let registered = claim_device(conn, device, cert.issued_at, actor, chain).await?;
            insert_certificate(conn, device, cert).await?;
            audit(conn, &issued_event(cert, actor), chain).await?;
            Ok(WriteOutput::Issued {
                device_registered: registered,
            })
        }
        WriteOp::SetCertificateStatus {
            serial,
            status,
            reason,
            at,
            actor,
        } => {
            let (revoked_at, reason) = match status {
                CertStatus::Active => (None, None),
                _ => (Some(*at), *reason),
            };
            let done = sqlx::query(
                "UPDATE certificates SET status = ?1, revoked_at = ?2, revocation_reason = ?3 \
                 WHERE serial = ?4 AND status <> 'revoked'",
            )
            .bind(status.as_str())
            .bind(revoked_at)
            .bind(reason)
            .bind(serial)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!(
                    "certificate {serial} does not exist or is revoked for good"
                )));
            }
            let event = AuditEvent::new(
                *at,
                actor.as_str(),
                "certificate.status",
                serial.as_str(),
                serde_json::json!({"status": status.as_str(), "reason": reason}),
            );
            audit(conn, &event, chain).await?;
            Ok(WriteOutput::StatusChanged)
        }
        WriteOp::AddIssuer { issuer, at, actor } => {
            let result = sqlx::query(
                "INSERT INTO issuers (id, kind, subject, cert_der, not_before, not_after, status, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(&issuer.id)
            .bind(issuer.kind.as_str())
            .bind(&issuer.subject)
            .bind(&issuer.cert_der)
            .bind(issuer.not_before)
            .bind(issuer.not_after)
            .bind(if issuer.active { "active" } else { "retired" })
            .bind(at)
            .execute(&mut *conn)
            .await;
            if let Err(e) = result {
                return Err(unique_or(e, || {
                    format!("issuer {} exists already", issuer.id)
                }));
            }
            let event = AuditEvent::new(
                *at,
                actor.as_str(),
                "issuer.add",
                issuer.id.as_str(),
                serde_json::json!({"kind": issuer.kind.as_str(), "subject": issuer.subject, "not_after": issuer.not_after}),
            );
            audit(conn, &event, chain).await?;
            Ok(WriteOutput::IssuerAdded)
        }
    }
}

fn unique_or(e: sqlx::Error, msg: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate(msg()),
        _ => StoreError::Database(e),
    }
}

/// Registers the device if new; otherwise checks it is active and matches zone and profile.
async fn claim_device(
    conn: &mut SqliteConnection,
    claim: &DeviceClaim,
    now: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<bool, StoreError> {
    let existing = sqlx::query("SELECT zone, profile, status FROM devices WHERE id = ?1")
        .bind(&claim.id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = existing {
        let zone: String = row.get("zone");
        let profile: String = row.get("profile");
        check_claim(
            claim,
            &zone,
            &profile,
            DeviceStatus::parse(row.get("status")),
        )?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO devices (id, zone, lot, profile, model, serial_number, status, created_at, updated_at) \
         VALUES (?1, ?2, NULL, ?3, NULL, NULL, 'active', ?4, ?4)",
    )
    .bind(&claim.id)
    .bind(&claim.zone)
    .bind(&claim.profile)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    audit(conn, &device_registered_event(claim, now, actor), chain).await?;
    Ok(true)
}

async fn insert_certificate(
    conn: &mut SqliteConnection,
    device: &DeviceClaim,
    c: &NewCertificate,
) -> Result<(), StoreError> {
    let scope = scope_json(c)?;
    sqlx::query(
        "INSERT INTO certificates (serial, device_id, profile, zone, issuer_id, subject, not_before, \
         not_after, status, revoked_at, revocation_reason, scope, requested_by, spki_sha256, der, issued_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', NULL, NULL, ?9, ?10, ?11, ?12, ?13)",
    )
    .bind(&c.serial)
    .bind(&device.id)
    .bind(&c.profile)
    .bind(&c.zone)
    .bind(&c.issuer_id)
    .bind(&c.subject)
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(scope)
    .bind(&c.requested_by)
    .bind(&c.spki_sha256)
    .bind(&c.der)
    .bind(c.issued_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| unique_or(e, || format!("serial {} exists already", c.serial)))?;
    Ok(())
}

async fn audit(
    conn: &mut SqliteConnection,
    event: &AuditEvent,
    chain: &mut [u8; 32],
) -> Result<(), StoreError> {
    let hash = event.chain_hash(chain);
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, target, details, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(event.at)
    .bind(&event.actor)
    .bind(&event.action)
    .bind(&event.target)
    .bind(&event.details)
    .bind(chain.as_slice())
    .bind(hash.as_slice())
    .execute(&mut *conn)
    .await?;
    *chain = hash;
    Ok(())
}
