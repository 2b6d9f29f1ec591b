//! One write at a time: the SQL of every [`WriteOp`], run inside a savepoint by the writer.

use std::collections::HashSet;

use sqlx::sqlite::Sqlite;
use sqlx::{QueryBuilder, Row, SqliteConnection};

use super::lifecycle::{
    AdminGuard, check_idevid_admission, readmit_device, select_for_change, set_device_status,
};
use super::writer::{WriteOp, WriteOutput};
use super::{
    CertStatus, DeviceClaim, DeviceStatus, NewCertificate, NewDevice, RevocationStatus,
    StatusChange, StoreError,
};
use crate::audit::AuditEvent;
use crate::clock::human_duration;

pub(super) fn check_claim(
    claim: &DeviceClaim,
    zone: &str,
    profile: &str,
    status: DeviceStatus,
    serial_number: Option<&str>,
    manufacturer: Option<&str>,
) -> Result<(), StoreError> {
    if let (Some(wanted), Some(bound)) = (claim.manufacturer.as_deref(), manufacturer)
        && wanted != bound
    {
        return Err(StoreError::Conflict(format!(
            "device {} belongs to manufacturer {bound}, not {wanted}",
            claim.id
        )));
    }
    if let Some(wanted) = claim.serial_number.as_deref()
        && serial_number != Some(wanted)
    {
        return Err(StoreError::Conflict(format!(
            "device id {} is taken by a device without serial number {wanted}",
            claim.id
        )));
    }
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

pub(super) fn scope_json(c: &NewCertificate) -> Result<Option<String>, StoreError> {
    c.scope
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

pub(super) fn issued_event(cert: &NewCertificate, actor: &str) -> AuditEvent {
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

pub(super) fn device_registered_event(claim: &DeviceClaim, at: i64, actor: &str) -> AuditEvent {
    AuditEvent::new(
        at,
        actor,
        "device.register",
        claim.id.as_str(),
        serde_json::json!({"zone": claim.zone, "profile": claim.profile, "via": "issue"}),
    )
}

/// Applies one write inside the caller's savepoint.
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    op: &WriteOp,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    match op {
        WriteOp::All(ops) => {
            let mut outs = Vec::with_capacity(ops.len());
            for op in ops {
                if matches!(op, WriteOp::All(_)) {
                    return Err(StoreError::Invalid("nested WriteOp::All".into()));
                }
                outs.push(Box::pin(apply(conn, op, chain)).await?);
            }
            Ok(WriteOutput::All(outs))
        }
        WriteOp::Issue {
            device,
            cert,
            actor,
        } => issue(conn, device, cert, actor, chain).await,
        WriteOp::IssueReplacing {
            device,
            cert,
            actor,
        } => {
            issue(conn, device, cert, actor, chain).await?;
            const SUPERSEDED: i64 = 4;
            let at = cert.issued_at;
            let rows = sqlx::query(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?1, \
                 revocation_reason = ?2, superseded_by = ?3 \
                 WHERE device_id = ?4 AND serial <> ?3 AND status IN ('active', 'suspended') \
                 AND not_after > ?1 RETURNING serial, issuer_id, not_after",
            )
            .bind(at)
            .bind(SUPERSEDED)
            .bind(&cert.serial)
            .bind(&device.id)
            .fetch_all(&mut *conn)
            .await?;
            let replaced: Vec<RevocationStatus> = rows
                .iter()
                .map(|r| RevocationStatus {
                    serial: r.get("serial"),
                    issuer_id: r.get("issuer_id"),
                    not_after: r.get("not_after"),
                    status: CertStatus::Revoked,
                    revoked_at: Some(at),
                    reason: Some(SUPERSEDED),
                })
                .collect();
            let events = replaced
                .iter()
                .map(|r| {
                    AuditEvent::new(
                        at,
                        actor.as_str(),
                        "certificate.revoke",
                        r.serial.as_str(),
                        serde_json::json!({"reason": SUPERSEDED, "superseded_by": cert.serial}),
                    )
                })
                .collect();
            audit_many(conn, events, chain).await?;
            Ok(WriteOutput::StatusChanged(replaced))
        }
        WriteOp::IssueLimited {
            supersedes,
            min_interval,
            key_compromise,
            device,
            cert,
            actor,
        } => {
            issue_limited(
                conn,
                IssueLimited {
                    supersedes: supersedes.as_deref(),
                    min_interval: *min_interval,
                    key_compromise: *key_compromise,
                    device,
                    cert,
                    actor,
                },
                chain,
            )
            .await
        }
        WriteOp::MarkAuthenticated { serial, at } => {
            sqlx::query(
                "UPDATE certificates SET first_authenticated_at = ?2 \
                 WHERE serial = ?1 AND first_authenticated_at IS NULL",
            )
            .bind(serial)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            Ok(WriteOutput::Done)
        }
        WriteOp::ChangeStatus {
            selector,
            change,
            operators,
            at,
            actor,
        } => {
            let guard = AdminGuard::before(conn, &operators.admin_profiles, *at).await?;
            let rows = select_for_change(conn, selector, *change, operators, *at)
                .await?
                .certificates;
            let serials: Vec<String> = rows.iter().map(|r| r.get("serial")).collect();
            let (revoked_at, reason) = match change {
                StatusChange::Resume => (None, None),
                _ => (Some(*at), change.reason()),
            };
            let changed = rows
                .iter()
                .map(|r| RevocationStatus {
                    serial: r.get("serial"),
                    issuer_id: r.get("issuer_id"),
                    not_after: r.get("not_after"),
                    status: change.to_status(),
                    revoked_at,
                    reason,
                })
                .collect();
            for chunk in serials.chunks(500) {
                let mut q = QueryBuilder::<Sqlite>::new("UPDATE certificates SET status = ");
                q.push_bind(change.to_status().as_str())
                    .push(", revoked_at = ")
                    .push_bind(revoked_at)
                    .push(", revocation_reason = ")
                    .push_bind(reason)
                    .push(" WHERE serial IN (");
                let mut list = q.separated(", ");
                for s in chunk {
                    list.push_bind(s);
                }
                q.push(")");
                q.build().execute(&mut *conn).await?;
            }
            let events = serials
                .iter()
                .map(|s| {
                    AuditEvent::new(
                        *at,
                        actor.as_str(),
                        change.action(),
                        s.as_str(),
                        serde_json::json!({"selector": selector.kind(), "value": selector.value(), "reason": reason}),
                    )
                })
                .collect();
            audit_many(conn, events, chain).await?;
            guard.check(conn).await?;
            Ok(WriteOutput::StatusChanged(changed))
        }
        WriteOp::NextCrlNumber { issuer_id, at } => {
            let n: i64 = sqlx::query_scalar(
                "INSERT INTO crl_state (issuer_id, crl_number, updated_at) VALUES (?1, 1, ?2) \
                 ON CONFLICT (issuer_id) DO UPDATE SET crl_number = crl_number + 1, updated_at = ?2 \
                 RETURNING crl_number",
            )
            .bind(issuer_id)
            .bind(at)
            .fetch_one(&mut *conn)
            .await?;
            Ok(WriteOutput::Count(n as u64))
        }
        WriteOp::Audit(event) => {
            audit(conn, event, chain).await?;
            Ok(WriteOutput::Done)
        }
        WriteOp::Enroll {
            token_hash,
            device,
            cert,
            actor,
        } => {
            let used = sqlx::query(
                "UPDATE enrollment_tokens SET used_at = ?1 \
                 WHERE hash = ?2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?1 \
                 AND device_id = ?3",
            )
            .bind(cert.issued_at)
            .bind(token_hash.as_slice())
            .bind(&device.id)
            .execute(&mut *conn)
            .await?;
            if used.rows_affected() != 1 {
                return Err(StoreError::Conflict(
                    "the enrollment token was used, revoked or expired meanwhile".into(),
                ));
            }
            issue(conn, device, cert, actor, chain).await
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
            let row = sqlx::query(
                "UPDATE certificates SET status = ?1, revoked_at = ?2, revocation_reason = ?3 \
                 WHERE serial = ?4 AND status <> 'revoked' RETURNING serial, issuer_id, not_after",
            )
            .bind(status.as_str())
            .bind(revoked_at)
            .bind(reason)
            .bind(serial)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!(
                    "certificate {serial} does not exist or is revoked for good"
                )));
            };
            let event = AuditEvent::new(
                *at,
                actor.as_str(),
                "certificate.status",
                serial.as_str(),
                serde_json::json!({"status": status.as_str(), "reason": reason}),
            );
            audit(conn, &event, chain).await?;
            Ok(WriteOutput::StatusChanged(vec![RevocationStatus {
                serial: row.get("serial"),
                issuer_id: row.get("issuer_id"),
                not_after: row.get("not_after"),
                status: *status,
                revoked_at,
                reason,
            }]))
        }
        WriteOp::RetireIssuer { id, at, actor } => {
            let done = sqlx::query(
                "UPDATE issuers SET status = 'retired' WHERE id = ?1 AND kind = 'issuing' AND status = 'active'",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::NotFound(format!(
                    "issuer {id} is not an active issuing CA"
                )));
            }
            let event = AuditEvent::new(
                *at,
                actor.as_str(),
                "issuer.retire",
                id.as_str(),
                serde_json::json!({}),
            );
            audit(conn, &event, chain).await?;
            Ok(WriteOutput::Done)
        }
        WriteOp::RevokeIssuer {
            id,
            reason,
            admin_profiles,
            at,
            actor,
            details,
        } => {
            super::issuers::revoke_issuer(
                conn,
                id,
                *reason,
                admin_profiles,
                *at,
                actor,
                details,
                chain,
            )
            .await
        }
        WriteOp::StoreRootCrl {
            crl,
            revoked_issuers,
        } => super::issuers::store_root_crl(conn, crl, revoked_issuers, chain).await,
        WriteOp::AddIssuer { issuer, at, actor } => {
            sqlx::query(
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
            .await
            .map_err(|e| unique_or(e, || format!("issuer {} exists already", issuer.id)))?;
            let event = AuditEvent::new(
                *at,
                actor.as_str(),
                "issuer.add",
                issuer.id.as_str(),
                serde_json::json!({"kind": issuer.kind.as_str(), "subject": issuer.subject, "not_after": issuer.not_after}),
            );
            audit(conn, &event, chain).await?;
            Ok(WriteOutput::Done)
        }
        WriteOp::RegisterDevices { devices, at, actor } => {
            register_devices(conn, devices, *at, actor, chain).await
        }
        WriteOp::SetDeviceStatus {
            id,
            status,
            admin_profiles,
            at,
            actor,
        } => set_device_status(conn, id, *status, admin_profiles, *at, actor, chain).await,
        WriteOp::ReadmitDevice { id, at, actor } => {
            readmit_device(conn, id, *at, actor, chain).await
        }
        WriteOp::CreateToken { token } => {
            sqlx::query(
                "INSERT INTO enrollment_tokens (hash, device_id, profile, expires_at, created_at, created_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(token.hash.as_slice())
            .bind(&token.device_id)
            .bind(&token.profile)
            .bind(token.expires_at)
            .bind(token.created_at)
            .bind(&token.created_by)
            .execute(&mut *conn)
            .await?;
            // The audit names the token by a prefix of its hash, never by the token itself.
            let event = AuditEvent::new(
                token.created_at,
                token.created_by.as_str(),
                "token.create",
                token.device_id.as_str(),
                serde_json::json!({"hash_prefix": hex::encode(&token.hash[..4]), "expires_at": token.expires_at, "profile": token.profile}),
            );
            audit(conn, &event, chain).await?;
            Ok(WriteOutput::Done)
        }
        WriteOp::RevokeTokens {
            device_id,
            at,
            actor,
        } => {
            let done = sqlx::query(
                "UPDATE enrollment_tokens SET revoked_at = ?1 \
                 WHERE device_id = ?2 AND used_at IS NULL AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(device_id)
            .execute(&mut *conn)
            .await?;
            let event = AuditEvent::new(
                *at,
                actor.as_str(),
                "token.revoke",
                device_id.as_str(),
                serde_json::json!({"revoked": done.rows_affected()}),
            );
            audit(conn, &event, chain).await?;
            Ok(WriteOutput::Count(done.rows_affected()))
        }
        WriteOp::AddManufacturerCa { record, actor } => {
            sqlx::query(
                "INSERT INTO manufacturer_cas (id, name, cert_der, zone, profile, auto_register, created_at, subject, not_after) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(&record.id)
            .bind(&record.name)
            .bind(&record.cert_der)
            .bind(&record.zone)
            .bind(&record.profile)
            .bind(record.auto_register)
            .bind(record.created_at)
            .bind(&record.subject)
            .bind(record.not_after)
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                unique_or(e, || {
                    format!(
                        "a manufacturer CA named {} or with this certificate is registered already",
                        record.name
                    )
                })
            })?;
            let event = AuditEvent::new(
                record.created_at,
                actor.as_str(),
                "manufacturer.add",
                record.name.as_str(),
                serde_json::json!({"id": record.id, "subject": record.subject, "zone": record.zone, "profile": record.profile, "auto_register": record.auto_register}),
            );
            audit(conn, &event, chain).await?;
            Ok(WriteOutput::Done)
        }
    }
}

async fn issue(
    conn: &mut SqliteConnection,
    device: &DeviceClaim,
    cert: &NewCertificate,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let registered = claim_device(conn, device, cert.issued_at, actor, chain).await?;
    insert_certificate(conn, device, cert).await?;
    audit(conn, &issued_event(cert, actor), chain).await?;
    Ok(WriteOutput::Issued {
        device_registered: registered,
    })
}

/// RFC 5280 reason codes the store writes itself.
const KEY_COMPROMISE: i64 = 1;

/// The parts of a [`WriteOp::IssueLimited`].
struct IssueLimited<'a> {
    supersedes: Option<&'a str>,
    min_interval: i64,
    key_compromise: bool,
    device: &'a DeviceClaim,
    cert: &'a NewCertificate,
    actor: &'a str,
}

/// A renewal or IDevID enrollment: at most one new certificate per device per `min_interval`
/// (checked inside the transaction, so concurrent requests cannot both pass). A renewal marks
/// the renewed certificate superseded; with `key_compromise` it revokes it instead, together
/// with a successor of it that never authenticated (the exposed key could have minted it).
async fn issue_limited(
    conn: &mut SqliteConnection,
    op: IssueLimited<'_>,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let IssueLimited {
        supersedes,
        min_interval,
        key_compromise,
        device,
        cert,
        actor,
    } = op;
    let now = cert.issued_at;
    // Only IDevID enrollments name a manufacturer.
    if device.manufacturer.is_some() {
        check_idevid_admission(conn, &device.id, now).await?;
    }
    let mut exposed: Vec<&str> = Vec::new();
    let mut unused_successor: Option<String> = None;
    if let Some(old_serial) = supersedes {
        let old = sqlx::query("SELECT status, superseded_by FROM certificates WHERE serial = ?1")
            .bind(old_serial)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("certificate {old_serial} is unknown")))?;
        if CertStatus::parse(old.get("status")) != CertStatus::Active {
            return Err(StoreError::Conflict(format!(
                "certificate {old_serial} is no longer active; it cannot be renewed"
            )));
        }
        let successor: Option<String> = old.get("superseded_by");
        if let Some(successor) = successor {
            let used: Option<i64> = sqlx::query_scalar(
                "SELECT first_authenticated_at FROM certificates WHERE serial = ?1",
            )
            .bind(&successor)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
            if let Some(used) = used {
                // The device moved on to the successor; only a copy of the old key can be
                // asking now.
                return Err(StoreError::Superseded(format!(
                    "certificate {old_serial} was replaced by {successor}, which has been in use \
                     since {} ago; renew with {successor} (if its key may be exposed, renew it \
                     with key_compromise set)",
                    human_duration(now - used)
                )));
            }
            unused_successor = Some(successor);
        }
        if key_compromise {
            exposed.push(old_serial);
        }
    }
    if key_compromise {
        // Exempt from the interval once: a second key-compromise renewal within it is refused,
        // so a stolen key cannot mint in a loop by claiming exposure.
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(revoked_at) FROM certificates WHERE device_id = ?1 \
             AND revocation_reason = ?2 AND superseded_by IS NOT NULL",
        )
        .bind(&device.id)
        .bind(KEY_COMPROMISE)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(last) = last
            && now < last + min_interval
        {
            return Err(StoreError::TooSoon(format!(
                "device {} already replaced a compromised key {} ago; its profile allows that \
                 once every {} (retry in {}, or ask an admin to revoke the device and issue a \
                 new certificate)",
                device.id,
                human_duration(now - last),
                human_duration(min_interval),
                human_duration(last + min_interval - now)
            )));
        }
    } else {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(issued_at) FROM certificates WHERE device_id = ?1")
                .bind(&device.id)
                .fetch_one(&mut *conn)
                .await?;
        if let Some(last) = last
            && now < last + min_interval
        {
            return Err(StoreError::TooSoon(format!(
                "device {} got a certificate {} ago; its profile allows one new certificate \
                 every {} (retry in {})",
                device.id,
                human_duration(now - last),
                human_duration(min_interval),
                human_duration(last + min_interval - now)
            )));
        }
    }
    let issued = issue(conn, device, cert, actor, chain).await?;
    let Some(old_serial) = supersedes else {
        return Ok(issued);
    };
    if key_compromise && let Some(s) = unused_successor.as_deref() {
        exposed.push(s);
    }
    // An earlier successor that was never used (its answer lost, or minted by a copy of the
    // key) is replaced too, so no second line of certificates stays visible as active.
    let mut mark = vec![old_serial];
    mark.extend(unused_successor.as_deref());
    for serial in &mark {
        sqlx::query("UPDATE certificates SET superseded_by = ?1 WHERE serial = ?2")
            .bind(&cert.serial)
            .bind(serial)
            .execute(&mut *conn)
            .await?;
    }
    let event = AuditEvent::new(
        now,
        actor,
        "certificate.renew",
        old_serial,
        serde_json::json!({"new_serial": cert.serial, "device": device.id, "key_compromise": key_compromise}),
    );
    audit(conn, &event, chain).await?;
    let mut revoked = Vec::new();
    for serial in exposed {
        let row = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?1, revocation_reason = ?2 \
             WHERE serial = ?3 AND status IN ('active', 'suspended') \
             RETURNING serial, issuer_id, not_after",
        )
        .bind(now)
        .bind(KEY_COMPROMISE)
        .bind(serial)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(r) = row else { continue };
        let event = AuditEvent::new(
            now,
            actor,
            "certificate.revoke",
            serial,
            serde_json::json!({"reason": KEY_COMPROMISE, "superseded_by": cert.serial, "via": "renewal"}),
        );
        audit(conn, &event, chain).await?;
        revoked.push(RevocationStatus {
            serial: r.get("serial"),
            issuer_id: r.get("issuer_id"),
            not_after: r.get("not_after"),
            status: CertStatus::Revoked,
            revoked_at: Some(now),
            reason: Some(KEY_COMPROMISE),
        });
    }
    Ok(WriteOutput::All(vec![
        issued,
        WriteOutput::StatusChanged(revoked),
    ]))
}

/// Inserts the devices with one statement; rows colliding with an existing id or serial
/// number are not inserted and are explained one by one.
async fn register_devices(
    conn: &mut SqliteConnection,
    devices: &[NewDevice],
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    if devices.is_empty() {
        return Ok(WriteOutput::Registered {
            registered: 0,
            rejected: Vec::new(),
        });
    }
    let rows: Vec<(&NewDevice, i64)> = devices.iter().map(|d| (d, at)).collect();
    let inserted = insert_devices(conn, &rows, SkipConflicts::AnyUnique).await?;

    // Explain every refused row; `seen` catches repeats of an id or serial within the request.
    let mut rejected = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut seen_serials = HashSet::new();
    let mut events = Vec::with_capacity(inserted.len());
    for (i, d) in devices.iter().enumerate() {
        let first_of_id = seen_ids.insert(d.id.as_str());
        let first_of_serial = d
            .serial_number
            .as_deref()
            .is_none_or(|s| seen_serials.insert(s));
        if inserted.contains(&d.id) && first_of_id && first_of_serial {
            events.push(AuditEvent::new(
                at,
                actor,
                "device.register",
                d.id.as_str(),
                serde_json::json!({"zone": d.zone, "profile": d.profile, "lot": d.lot, "serial_number": d.serial_number}),
            ));
            continue;
        }
        let reason = if !first_of_id {
            format!("device {} appears twice in this import", d.id)
        } else if !first_of_serial {
            format!(
                "serial number {} appears twice in this import",
                d.serial_number.as_deref().unwrap_or("")
            )
        } else if inserted.contains(&d.id) {
            // Inserted although a repeat: cannot happen (ids are the primary key).
            continue;
        } else {
            let holder: Option<String> = sqlx::query_scalar("SELECT id FROM devices WHERE id = ?1")
                .bind(&d.id)
                .fetch_optional(&mut *conn)
                .await?;
            match holder {
                Some(_) => format!("device {} is already registered", d.id),
                None => format!(
                    "serial number {} is already registered to another device",
                    d.serial_number.as_deref().unwrap_or("")
                ),
            }
        };
        rejected.push((i, reason));
    }
    let registered = events.len();
    audit_many(conn, events, chain).await?;
    Ok(WriteOutput::Registered {
        registered,
        rejected,
    })
}

/// Which uniqueness conflicts [`insert_devices`] skips silently.
#[derive(Debug, Clone, Copy)]
pub(super) enum SkipConflicts {
    /// An existing id only (a serial-number clash fails the statement).
    Id,
    /// Any unique constraint (id or serial number).
    AnyUnique,
}

/// Inserts active devices (each with its creation time) in one statement; returns the ids
/// actually inserted.
pub(super) async fn insert_devices(
    conn: &mut SqliteConnection,
    rows: &[(&NewDevice, i64)],
    skip: SkipConflicts,
) -> Result<HashSet<String>, StoreError> {
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO devices (id, zone, lot, profile, model, serial_number, manufacturer, status, created_at, updated_at) ",
    );
    insert.push_values(rows, |mut b, (d, at)| {
        b.push_bind(&d.id)
            .push_bind(&d.zone)
            .push_bind(d.lot.as_deref())
            .push_bind(&d.profile)
            .push_bind(d.model.as_deref())
            .push_bind(d.serial_number.as_deref())
            .push_bind(d.manufacturer.as_deref())
            .push_bind(DeviceStatus::Active.as_str())
            .push_bind(*at)
            .push_bind(*at);
    });
    insert.push(match skip {
        SkipConflicts::Id => " ON CONFLICT (id) DO NOTHING RETURNING id",
        SkipConflicts::AnyUnique => " ON CONFLICT DO NOTHING RETURNING id",
    });
    Ok(insert
        .build()
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.get("id"))
        .collect())
}

/// Appends events to the chain with one statement.
pub(super) async fn audit_many(
    conn: &mut SqliteConnection,
    events: Vec<AuditEvent>,
    chain: &mut [u8; 32],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        let hash = e.chain_hash(chain);
        rows.push((e, *chain, hash));
        *chain = hash;
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO audit_events (at, actor, action, target, details, prev_hash, hash) ",
    );
    q.push_values(&rows, |mut b, (e, prev, hash)| {
        b.push_bind(e.at)
            .push_bind(&e.actor)
            .push_bind(&e.action)
            .push_bind(&e.target)
            .push_bind(&e.details)
            .push_bind(prev.as_slice())
            .push_bind(hash.as_slice());
    });
    q.build().execute(&mut *conn).await?;
    Ok(())
}

pub(super) fn unique_or(e: sqlx::Error, msg: impl FnOnce() -> String) -> StoreError {
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
    let existing = sqlx::query(
        "SELECT zone, profile, status, serial_number, manufacturer FROM devices WHERE id = ?1",
    )
    .bind(&claim.id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = existing {
        let zone: String = row.get("zone");
        let profile: String = row.get("profile");
        let serial: Option<String> = row.get("serial_number");
        let manufacturer: Option<String> = row.get("manufacturer");
        check_claim(
            claim,
            &zone,
            &profile,
            DeviceStatus::parse(row.get("status")),
            serial.as_deref(),
            manufacturer.as_deref(),
        )?;
        if manufacturer.is_none()
            && let Some(m) = &claim.manufacturer
        {
            // First IDevID enrollment of a device registered without its manufacturer.
            sqlx::query("UPDATE devices SET manufacturer = ?1, updated_at = ?2 WHERE id = ?3")
                .bind(m)
                .bind(now)
                .bind(&claim.id)
                .execute(&mut *conn)
                .await?;
        }
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO devices (id, zone, lot, profile, model, serial_number, manufacturer, status, created_at, updated_at) \
         VALUES (?1, ?2, NULL, ?3, NULL, ?4, ?6, 'active', ?5, ?5)",
    )
    .bind(&claim.id)
    .bind(&claim.zone)
    .bind(&claim.profile)
    .bind(claim.serial_number.as_deref())
    .bind(now)
    .bind(claim.manufacturer.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        unique_or(e, || {
            format!(
                "serial number {} is already registered to another device",
                claim.serial_number.as_deref().unwrap_or("")
            )
        })
    })?;
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
    .map_err(|e| match super::issuers::revoked_issuer(&e, &c.issuer_id) {
        Some(refused) => refused,
        None => unique_or(e, || format!("serial {} exists already", c.serial)),
    })?;
    Ok(())
}

pub(super) async fn audit(
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
