//! Lifecycle rules, checked inside the write transaction: operator credentials stay out of bulk
//! selections unless asked for (see [`Operators`]), and no change takes the last valid admin
//! credential; a device's registry status carries over to its certificates (suspend holds,
//! resume releases those holds, decommission revokes); an IDevID enrollment of a device whose
//! certificates were revoked since its last re-admission is refused.

use super::{Conn, DbRow, Pool};
use std::collections::HashSet;

use sqlx::Row;

use super::ops::{audit, audit_many};
use super::rows::{cert_columns, cert_from_row};
use super::writer::WriteOutput;
use crate::audit::AuditEvent;
use crate::clock::rfc3339;
use crate::store::{
    CertSelector, CertStatus, CertificateRecord, DeviceStatus, Operators, RevocationStatus,
    Selection, StatusChange, StoreError,
};

/// RFC 5280 reason cessationOfOperation: what decommissioning records.
const CESSATION_OF_OPERATION: i64 = 5;
/// RFC 5280 reason certificateHold: what suspending a device records.
const CERTIFICATE_HOLD: i64 = 6;

/// Unexpired certificates (other than the CA's own) that `selector` picks and `change` applies
/// to, in issue order, read on `conn` inside the write that changes them.
async fn matching_query(
    selector: &CertSelector,
    change: StatusChange,
    now: i64,
    conn: &mut Conn,
) -> Result<Vec<DbRow>, StoreError> {
    macro_rules! select {
        ($cond:literal) => {
            concat!(
                "SELECT ",
                cert_columns!(),
                " FROM certificates WHERE ",
                $cond,
                " AND status IN ($2, $3) AND not_after > $4 AND profile <> 'ca-server' ORDER BY seq"
            )
        };
    }
    let sql = match selector {
        CertSelector::Serial(_) => select!("serial = $1"),
        CertSelector::Device(_) => select!("device_id = $1"),
        CertSelector::Lot(_) => select!("device_id IN (SELECT id FROM devices WHERE lot = $1)"),
        CertSelector::Zone(_) => select!("zone = $1"),
        CertSelector::Profile(_) => select!("profile = $1"),
    };
    let (a, b) = change.from_statuses();
    let value = match selector {
        CertSelector::Serial(s) => s.to_ascii_lowercase(),
        other => other.value().to_owned(),
    };
    Ok(sqlx::query(sql)
        .bind(value)
        .bind(a.as_str())
        .bind(b.as_str())
        .bind(now)
        .fetch_all(&mut *conn)
        .await?)
}

/// The selection of a status change on `conn` (the same for a dry run and inside the write).
pub(super) async fn select_for_change(
    conn: &mut Conn,
    selector: &CertSelector,
    change: StatusChange,
    operators: &Operators,
    now: i64,
) -> Result<Selection<DbRow>, StoreError> {
    let rows = matching_query(selector, change, now, conn).await?;
    let device_held: HashSet<String> = if change == StatusChange::Resume && !rows.is_empty() {
        let serials: Vec<String> = rows.iter().map(|r| r.get("serial")).collect();
        sqlx::query_scalar(concat!(
            "SELECT serial FROM certificates WHERE device_hold = TRUE AND serial IN (",
            json_values!("$1"),
            ")"
        ))
        .bind(serde_json::Value::from(serials).to_string())
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    } else {
        HashSet::new()
    };
    let mut selection = Selection {
        certificates: Vec::with_capacity(rows.len()),
        operators_left_out: 0,
        device_holds_left_out: 0,
    };
    for row in rows {
        if operators.leaves_out(selector, row.get("profile")) {
            selection.operators_left_out += 1;
        } else if device_held.contains(row.get::<&str, _>("serial")) {
            selection.device_holds_left_out += 1;
        } else {
            selection.certificates.push(row);
        }
    }
    Ok(selection)
}

/// Unexpired certificates (other than the CA's own) that `selector` picks and `change` applies
/// to, without what `operators` and device holds leave out, in issue order: what
/// [`crate::store::WriteOp::ChangeStatus`] changes, for a dry run.
pub(crate) async fn certificates_selected(
    pool: &Pool,
    selector: &CertSelector,
    change: StatusChange,
    operators: &Operators,
    now: i64,
) -> Result<Selection<CertificateRecord>, StoreError> {
    let mut conn = pool.acquire().await?;
    let selection = select_for_change(&mut conn, selector, change, operators, now).await?;
    Ok(Selection {
        certificates: selection
            .certificates
            .iter()
            .map(cert_from_row)
            .collect::<Result<_, _>>()?,
        operators_left_out: selection.operators_left_out,
        device_holds_left_out: selection.device_holds_left_out,
    })
}

/// Valid admin credentials at `now` (active, within validity, of an active registry entry) as
/// `(name, serial)`.
async fn valid_admins(
    conn: &mut Conn,
    admin_profiles: &[String],
    now: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    if admin_profiles.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(concat!(
        "SELECT c.device_id, c.serial FROM certificates c JOIN devices d ON d.id = c.device_id \
         WHERE c.profile IN (",
        json_values!("$1"),
        ") AND c.status = 'active' \
         AND c.not_before <= $2 AND c.not_after > $2 AND d.status = 'active' \
         AND NOT EXISTS (SELECT 1 FROM issuers i WHERE i.id = c.issuer_id AND i.revoked_at IS NOT NULL) \
         ORDER BY c.seq"
    ))
    .bind(serde_json::Value::from(admin_profiles.to_vec()).to_string())
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("device_id"), r.get("serial")))
        .collect())
}

/// Taken before a change; [`AdminGuard::check`] afterwards refuses the change (the savepoint
/// rolls it back) if it took the last valid admin credentials.
pub(super) struct AdminGuard<'a> {
    admin_profiles: &'a [String],
    now: i64,
    before: Vec<(String, String)>,
}

impl<'a> AdminGuard<'a> {
    /// Notes the valid admin credentials before the change.
    pub(super) async fn before(
        conn: &mut Conn,
        admin_profiles: &'a [String],
        now: i64,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            before: valid_admins(conn, admin_profiles, now).await?,
            admin_profiles,
            now,
        })
    }

    /// Refuses when there were valid admin credentials and none is left.
    pub(super) async fn check(&self, conn: &mut Conn) -> Result<(), StoreError> {
        if self.before.is_empty()
            || !valid_admins(conn, self.admin_profiles, self.now)
                .await?
                .is_empty()
        {
            return Ok(());
        }
        let named: Vec<String> = self
            .before
            .iter()
            .take(5)
            .map(|(name, serial)| format!("{name}, serial {serial}"))
            .collect();
        Err(StoreError::Conflict(format!(
            "this would take the last valid admin credential out of service ({}), and nobody \
             could administer the CA any more; nothing was changed. Create another admin first \
             (`hallmark credential create --role admin`, or on the CA host \
             `hallmark-ca admin create --data-dir DIR --name NAME --out DIR`), then retry",
            named.join("; ")
        )))
    }
}

fn status_changes(
    rows: &[DbRow],
    status: CertStatus,
    at: Option<i64>,
    reason: Option<i64>,
) -> Vec<RevocationStatus> {
    rows.iter()
        .map(|r| RevocationStatus {
            serial: r.get("serial"),
            issuer_id: r.get("issuer_id"),
            not_after: r.get("not_after"),
            status,
            revoked_at: at,
            reason,
        })
        .collect()
}

/// Suspends, resumes or decommissions a device and its certificates with it: suspending holds
/// its active certificates (marked as the device's holds), resuming releases those holds only,
/// decommissioning revokes its active and held certificates. Repeating a status applies it to
/// the certificates again (e.g. to a device set before this rule existed). One audit event per
/// certificate.
pub(super) async fn set_device_status(
    conn: &mut Conn,
    id: &str,
    status: DeviceStatus,
    admin_profiles: &[String],
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let row = sqlx::query("SELECT status FROM devices WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("device {id} is not registered")))?;
    let current = DeviceStatus::parse(row.get("status"));
    if current == DeviceStatus::Decommissioned && status != DeviceStatus::Decommissioned {
        return Err(StoreError::Conflict(format!(
            "device {id} is decommissioned, which is final unless an admin re-admits it \
             (Readmit, `hallmark device readmit {id}`)"
        )));
    }
    let guard = AdminGuard::before(conn, admin_profiles, at).await?;
    sqlx::query("UPDATE devices SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(at)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let (changed, action, reason) = match status {
        DeviceStatus::Suspended => {
            let rows = sqlx::query(
                "UPDATE certificates SET status = 'suspended', revoked_at = $1, \
                 revocation_reason = $2, device_hold = TRUE \
                 WHERE device_id = $3 AND status = 'active' AND not_after > $1 \
                 RETURNING serial, issuer_id, not_after",
            )
            .bind(at)
            .bind(CERTIFICATE_HOLD)
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
            let c = status_changes(
                &rows,
                CertStatus::Suspended,
                Some(at),
                Some(CERTIFICATE_HOLD),
            );
            (c, "certificate.suspend", Some(CERTIFICATE_HOLD))
        }
        DeviceStatus::Active => {
            let rows = sqlx::query(
                "UPDATE certificates SET status = 'active', revoked_at = NULL, \
                 revocation_reason = NULL, device_hold = FALSE \
                 WHERE device_id = $1 AND status = 'suspended' AND device_hold = TRUE \
                 RETURNING serial, issuer_id, not_after",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
            (
                status_changes(&rows, CertStatus::Active, None, None),
                "certificate.resume",
                None,
            )
        }
        DeviceStatus::Decommissioned => {
            let rows = sqlx::query(
                "UPDATE certificates SET status = 'revoked', revoked_at = $1, \
                 revocation_reason = $2, device_hold = FALSE \
                 WHERE device_id = $3 AND status IN ('active', 'suspended') AND not_after > $1 \
                 RETURNING serial, issuer_id, not_after",
            )
            .bind(at)
            .bind(CESSATION_OF_OPERATION)
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
            let c = status_changes(
                &rows,
                CertStatus::Revoked,
                Some(at),
                Some(CESSATION_OF_OPERATION),
            );
            (c, "certificate.revoke", Some(CESSATION_OF_OPERATION))
        }
    };
    let mut events: Vec<AuditEvent> = changed
        .iter()
        .map(|c| {
            AuditEvent::new(
                at,
                actor,
                action,
                c.serial.as_str(),
                serde_json::json!({"device": id, "via": "device.status", "to": status.as_str(), "reason": reason}),
            )
        })
        .collect();
    events.push(AuditEvent::new(
        at,
        actor,
        "device.status",
        id,
        serde_json::json!({"from": current.as_str(), "to": status.as_str(), "certificates": changed.len()}),
    ));
    audit_many(conn, events, chain).await?;
    guard.check(conn).await?;
    Ok(WriteOutput::StatusChanged(changed))
}

/// The condition on a device's certificates (`$1` device, `$2` its re-admission time or
/// NULL) that keeps its IDevID out: revoked at or after the re-admission (times are in
/// seconds: a revocation in the same second counts, fail-closed), unless it was a routine
/// replacement: reason superseded (4) with the certificate that replaced it recorded. An
/// admin's revocation with reason superseded records none and counts like any other.
macro_rules! revoked_since_readmission {
    () => {
        "device_id = $1 AND status = 'revoked' \
         AND NOT (COALESCE(revocation_reason, 0) = 4 AND superseded_by IS NOT NULL) \
         AND revoked_at >= COALESCE($2, revoked_at)"
    };
}

/// Re-admits a device: active again if decommissioned, and its IDevID may enroll again.
pub(super) async fn readmit_device(
    conn: &mut Conn,
    id: &str,
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let row = sqlx::query("SELECT status FROM devices WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("device {id} is not registered")))?;
    let current = DeviceStatus::parse(row.get("status"));
    if current == DeviceStatus::Suspended {
        return Err(StoreError::Conflict(format!(
            "device {id} is suspended; resume it (SetStatus, `hallmark device resume {id}`) \
             instead of re-admitting it"
        )));
    }
    // A revocation within this second would still keep the device out after the re-admission:
    // refuse rather than re-admit in vain.
    let same_second: Option<String> = sqlx::query_scalar(concat!(
        "SELECT serial FROM certificates WHERE ",
        revoked_since_readmission!(),
        " LIMIT 1"
    ))
    .bind(id)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(serial) = same_second {
        return Err(StoreError::TooSoon(format!(
            "certificate {serial} of device {id} was revoked within this second; re-admit the \
             device again in a second (retry in 1s)"
        )));
    }
    let revoked: i64 = sqlx::query_scalar(concat!(
        "SELECT COUNT(*) FROM certificates WHERE ",
        revoked_since_readmission!()
    ))
    .bind(id)
    .bind(
        sqlx::query_scalar::<_, Option<i64>>("SELECT readmitted_at FROM devices WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE devices SET status = 'active', readmitted_at = $1, updated_at = $1 WHERE id = $2",
    )
    .bind(at)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let event = AuditEvent::new(
        at,
        actor,
        "device.readmit",
        id,
        serde_json::json!({"from": current.as_str(), "revoked_certificates": revoked}),
    );
    audit(conn, &event, chain).await?;
    Ok(WriteOutput::Done)
}

/// RFC 5280 name of a reason code, for messages.
fn reason_name(code: Option<i64>) -> &'static str {
    match code {
        Some(1) => "keyCompromise",
        Some(2) => "cACompromise",
        Some(3) => "affiliationChanged",
        Some(4) => "superseded",
        Some(5) => "cessationOfOperation",
        Some(6) => "certificateHold",
        Some(9) => "privilegeWithdrawn",
        _ => "unspecified",
    }
}

/// Refuses an IDevID enrollment of a device that had a certificate revoked (other than
/// superseded) since its last re-admission, or has one on hold: the birth certificate must
/// not undo a revocation or bypass a hold.
pub(super) async fn check_idevid_admission(
    conn: &mut Conn,
    device_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let readmitted: Option<i64> =
        sqlx::query_scalar("SELECT readmitted_at FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let revoked = sqlx::query(concat!(
        "SELECT serial, revoked_at, revocation_reason FROM certificates WHERE ",
        revoked_since_readmission!(),
        " ORDER BY seq DESC LIMIT 1"
    ))
    .bind(device_id)
    .bind(readmitted)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = revoked {
        let serial: String = r.get("serial");
        let at: Option<i64> = r.get("revoked_at");
        let since = readmitted
            .map(|t| format!(" (re-admitted last at {})", rfc3339(t)))
            .unwrap_or_default();
        return Err(StoreError::Conflict(format!(
            "certificate {serial} of device {device_id} was revoked ({}) at {}{since}; its \
             IDevID enrolls it again only after an admin re-admits it (Readmit, \
             `hallmark device readmit {device_id}`)",
            reason_name(r.get("revocation_reason")),
            rfc3339(at.unwrap_or(now)),
        )));
    }
    let held: Option<String> = sqlx::query_scalar(
        "SELECT serial FROM certificates WHERE device_id = $1 AND status = 'suspended' \
         AND not_after > $2 ORDER BY seq DESC LIMIT 1",
    )
    .bind(device_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(serial) = held {
        return Err(StoreError::Conflict(format!(
            "certificate {serial} of device {device_id} is on hold; release it (Resume) or \
             revoke it before the device enrolls with its IDevID again"
        )));
    }
    Ok(())
}
