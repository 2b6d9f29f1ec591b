//! Certificate status changes: by selector (revoke, suspend, resume), one certificate set
//! directly, and the first authentication of a certificate.

use super::super::{Conn, Db};
use sqlx::{QueryBuilder, Row};

use super::super::lifecycle::{AdminGuard, select_for_change};
use super::super::writer::WriteOutput;
use super::audit::{audit, audit_many};
use crate::audit::AuditEvent;
use crate::store::{
    CertSelector, CertStatus, Operators, RevocationStatus, StatusChange, StoreError,
};

/// Notes that a certificate authenticated a call for the first time (no audit event: it
/// observes use and changes no status; see docs/decisions.md).
pub(super) async fn mark_authenticated(
    conn: &mut Conn,
    serial: &str,
    at: i64,
) -> Result<WriteOutput, StoreError> {
    sqlx::query(
        "UPDATE certificates SET first_authenticated_at = $2 \
         WHERE serial = $1 AND first_authenticated_at IS NULL",
    )
    .bind(serial)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(WriteOutput::Done)
}

/// Revokes, suspends or resumes every certificate `selector` picks that `change` applies to,
/// leaving out what `operators` and device holds leave out; refused whole if it takes the last
/// valid admin credential.
pub(super) async fn change_status(
    conn: &mut Conn,
    selector: &CertSelector,
    change: StatusChange,
    operators: &Operators,
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let guard = AdminGuard::before(conn, &operators.admin_profiles, at).await?;
    let rows = select_for_change(conn, selector, change, operators, at)
        .await?
        .certificates;
    let serials: Vec<String> = rows.iter().map(|r| r.get("serial")).collect();
    let (revoked_at, reason) = match change {
        StatusChange::Resume => (None, None),
        _ => (Some(at), change.reason()),
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
        let mut q = QueryBuilder::<Db>::new("UPDATE certificates SET status = ");
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
                at,
                actor,
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

/// Changes one certificate's status (revoke, suspend, resume); a revoked one stays revoked.
pub(super) async fn set_certificate_status(
    conn: &mut Conn,
    serial: &str,
    status: CertStatus,
    reason: Option<i64>,
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let (revoked_at, reason) = match status {
        CertStatus::Active => (None, None),
        _ => (Some(at), reason),
    };
    let row = sqlx::query(
        "UPDATE certificates SET status = $1, revoked_at = $2, revocation_reason = $3 \
         WHERE serial = $4 AND status <> 'revoked' RETURNING serial, issuer_id, not_after",
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
        at,
        actor,
        "certificate.status",
        serial,
        serde_json::json!({"status": status.as_str(), "reason": reason}),
    );
    audit(conn, &event, chain).await?;
    Ok(WriteOutput::StatusChanged(vec![RevocationStatus {
        serial: row.get("serial"),
        issuer_id: row.get("issuer_id"),
        not_after: row.get("not_after"),
        status,
        revoked_at,
        reason,
    }]))
}
