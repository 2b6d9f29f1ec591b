//! Recording issued certificates: plain, replacing a device's others, consuming an enrollment
//! token, or under the renewal and IDevID interval rules.

use super::super::Conn;
use sqlx::Row;

use super::super::lifecycle::check_idevid_admission;
use super::super::writer::WriteOutput;
use super::audit::{audit, audit_many};
use super::{issuers, unique_or};
use crate::audit::AuditEvent;
use crate::clock::human_duration;
use crate::store::{
    CertStatus, DeviceClaim, DeviceStatus, NewCertificate, RevocationStatus, StoreError,
};

/// Checks that an existing device is what the certificate was signed for: same manufacturer
/// and serial number (when claimed), active, same zone and profile.
pub(crate) fn check_claim(
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

/// The provisioner scope as stored (JSON text).
pub(crate) fn scope_json(c: &NewCertificate) -> Result<Option<String>, StoreError> {
    c.scope
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

/// The audit event of a recorded certificate.
pub(crate) fn issued_event(cert: &NewCertificate, actor: &str) -> AuditEvent {
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

/// The audit event of a device registered by its first certificate.
pub(crate) fn device_registered_event(claim: &DeviceClaim, at: i64, actor: &str) -> AuditEvent {
    AuditEvent::new(
        at,
        actor,
        "device.register",
        claim.id.as_str(),
        serde_json::json!({"zone": claim.zone, "profile": claim.profile, "via": "issue"}),
    )
}

/// Records an issued certificate, registering its device if it is new.
pub(super) async fn issue(
    conn: &mut Conn,
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

/// Records an issued certificate and revokes (reason superseded) the device's other unexpired
/// active or held certificates, atomically: a re-provisioned device keeps exactly one.
pub(super) async fn issue_replacing(
    conn: &mut Conn,
    device: &DeviceClaim,
    cert: &NewCertificate,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let issued = issue(conn, device, cert, actor, chain).await?;
    const SUPERSEDED: i64 = 4;
    let at = cert.issued_at;
    let rows = sqlx::query(
        "UPDATE certificates SET status = 'revoked', revoked_at = $1, \
         revocation_reason = $2, superseded_by = $3 \
         WHERE device_id = $4 AND serial <> $3 AND status IN ('active', 'suspended') \
         AND not_after > $1 RETURNING serial, issuer_id, not_after",
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
                actor,
                "certificate.revoke",
                r.serial.as_str(),
                serde_json::json!({"reason": SUPERSEDED, "superseded_by": cert.serial}),
            )
        })
        .collect();
    audit_many(conn, events, chain).await?;
    Ok(WriteOutput::All(vec![
        issued,
        WriteOutput::StatusChanged(replaced),
    ]))
}

/// Consumes a one-time enrollment token and records the certificate it bought, atomically: a
/// token that is used, revoked or expired by now fails the whole write.
pub(super) async fn enroll(
    conn: &mut Conn,
    token_hash: &[u8],
    device: &DeviceClaim,
    cert: &NewCertificate,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let used = sqlx::query(
        "UPDATE enrollment_tokens SET used_at = $1 \
         WHERE hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
         AND device_id = $3",
    )
    .bind(cert.issued_at)
    .bind(token_hash)
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

/// RFC 5280 reason codes the store writes itself.
const KEY_COMPROMISE: i64 = 1;

/// The parts of a [`crate::store::WriteOp::IssueLimited`].
pub(super) struct IssueLimited<'a> {
    pub(super) supersedes: Option<&'a str>,
    pub(super) min_interval: i64,
    pub(super) key_compromise: bool,
    pub(super) device: &'a DeviceClaim,
    pub(super) cert: &'a NewCertificate,
    pub(super) actor: &'a str,
}

/// A renewal or IDevID enrollment: at most one new certificate per device per `min_interval`
/// (checked inside the transaction, so concurrent requests cannot both pass). A renewal marks
/// the renewed certificate superseded; with `key_compromise` it revokes it instead, together
/// with a successor of it that never authenticated (the exposed key could have minted it).
pub(super) async fn issue_limited(
    conn: &mut Conn,
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
        let old = sqlx::query("SELECT status, superseded_by FROM certificates WHERE serial = $1")
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
                "SELECT first_authenticated_at FROM certificates WHERE serial = $1",
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
            "SELECT MAX(revoked_at) FROM certificates WHERE device_id = $1 \
             AND revocation_reason = $2 AND superseded_by IS NOT NULL",
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
            sqlx::query_scalar("SELECT MAX(issued_at) FROM certificates WHERE device_id = $1")
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
        sqlx::query("UPDATE certificates SET superseded_by = $1 WHERE serial = $2")
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
            "UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = $2 \
             WHERE serial = $3 AND status IN ('active', 'suspended') \
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

/// Registers the device if new; otherwise checks it is active and matches zone and profile.
async fn claim_device(
    conn: &mut Conn,
    claim: &DeviceClaim,
    now: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<bool, StoreError> {
    let existing = sqlx::query(
        "SELECT zone, profile, status, serial_number, manufacturer FROM devices WHERE id = $1",
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
            sqlx::query("UPDATE devices SET manufacturer = $1, updated_at = $2 WHERE id = $3")
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
         VALUES ($1, $2, NULL, $3, NULL, $4, $6, 'active', $5, $5)",
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
    conn: &mut Conn,
    device: &DeviceClaim,
    c: &NewCertificate,
) -> Result<(), StoreError> {
    let scope = scope_json(c)?;
    sqlx::query(
        "INSERT INTO certificates (serial, device_id, profile, zone, issuer_id, subject, not_before, \
         not_after, status, revoked_at, revocation_reason, scope, requested_by, spki_sha256, der, issued_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', NULL, NULL, $9, $10, $11, $12, $13)",
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
    .map_err(|e| match issuers::revoked_issuer(&e, &c.issuer_id) {
        Some(refused) => refused,
        None => unique_or(e, || format!("serial {} exists already", c.serial)),
    })?;
    Ok(())
}
