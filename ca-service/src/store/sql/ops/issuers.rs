//! Writes about CAs: adding, retiring and revoking them, their CRL numbers, storing the CRL
//! of a root that lists the revoked issuing CAs and the shared CRLs of issuing CAs, and the
//! status version.

use super::super::{Conn, announce_status_version};
use sqlx::Row;

use super::super::lifecycle::AdminGuard;
use super::super::writer::WriteOutput;
use super::audit::audit;
use super::unique_or;
use crate::audit::AuditEvent;
use crate::store::{IssuerRecord, IssuingCrlRecord, RootCrlRecord, StoreError};

/// What the trigger of migration 0007 says when a certificate of a revoked issuer is inserted.
const REVOKED_ISSUER_TRIGGER: &str = "the issuing CA is revoked";

/// Counts a committed batch of status changes: the next status version, announced to the other
/// replicas (as `replica:version`) when the transaction commits.
pub(crate) async fn next_status_version(conn: &mut Conn, replica: u64) -> Result<i64, sqlx::Error> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE status_version SET version = version + 1 WHERE id = 1 RETURNING version",
    )
    .fetch_one(&mut *conn)
    .await?;
    announce_status_version(conn, replica, version).await?;
    Ok(version)
}

/// Stores a CRL of an issuing CA unless one numbered as high is stored already, and announces
/// it: a CRL renewed at a replica's refresh (no status change) reaches the others too.
pub(super) async fn store_issuing_crl(
    conn: &mut Conn,
    crl: &IssuingCrlRecord,
    replica: u64,
) -> Result<WriteOutput, StoreError> {
    let stored = sqlx::query(
        "INSERT INTO issuing_crls (issuer_id, crl_number, basis, this_update, next_update, \
         entries, der, built_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (issuer_id) DO UPDATE SET crl_number = excluded.crl_number, \
         basis = excluded.basis, this_update = excluded.this_update, \
         next_update = excluded.next_update, entries = excluded.entries, der = excluded.der, \
         built_at = excluded.built_at WHERE excluded.crl_number > issuing_crls.crl_number",
    )
    .bind(&crl.issuer_id)
    .bind(crl.number as i64)
    .bind(crl.basis)
    .bind(crl.this_update)
    .bind(crl.next_update)
    .bind(crl.entries as i64)
    .bind(&crl.der)
    .bind(crl.built_at)
    .execute(&mut *conn)
    .await?;
    if stored.rows_affected() == 0 {
        return Err(StoreError::Changed(format!(
            "a CRL of {} numbered {} or higher is stored already",
            crl.issuer_id, crl.number
        )));
    }
    announce_status_version(conn, replica, crl.basis).await?;
    Ok(WriteOutput::Done)
}

/// Refuses with [`StoreError::Conflict`] when any issuer is recorded.
pub(super) async fn expect_no_issuers(conn: &mut Conn) -> Result<WriteOutput, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM issuers")
        .fetch_one(&mut *conn)
        .await?;
    if n > 0 {
        return Err(StoreError::Conflict(
            "the database holds a CA already; nothing was recorded".into(),
        ));
    }
    Ok(WriteOutput::Done)
}

/// The refusal of the revoked-issuer trigger, as a conflict a caller can act on; `None` for
/// any other error.
pub(super) fn revoked_issuer(e: &sqlx::Error, issuer_id: &str) -> Option<StoreError> {
    match e {
        sqlx::Error::Database(db) if db.message().contains(REVOKED_ISSUER_TRIGGER) => {
            Some(StoreError::Conflict(format!(
                "issuing CA {issuer_id} is revoked and signs nothing more; nothing was recorded, \
                 retry (the CA switches to the active issuing CA within seconds)"
            )))
        }
        _ => None,
    }
}

/// Records a CA certificate.
pub(super) async fn add_issuer(
    conn: &mut Conn,
    issuer: &IssuerRecord,
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    sqlx::query(
        "INSERT INTO issuers (id, kind, subject, cert_der, not_before, not_after, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
        at,
        actor,
        "issuer.add",
        issuer.id.as_str(),
        serde_json::json!({"kind": issuer.kind.as_str(), "subject": issuer.subject, "not_after": issuer.not_after}),
    );
    audit(conn, &event, chain).await?;
    Ok(WriteOutput::Done)
}

/// Stops an issuing CA from signing; it stays valid (and publishes CRLs) until it expires.
pub(super) async fn retire_issuer(
    conn: &mut Conn,
    id: &str,
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let done = sqlx::query(
        "UPDATE issuers SET status = 'retired' WHERE id = $1 AND kind = 'issuing' AND status = 'active'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::NotFound(format!(
            "issuer {id} is not an active issuing CA"
        )));
    }
    let event = AuditEvent::new(at, actor, "issuer.retire", id, serde_json::json!({}));
    audit(conn, &event, chain).await?;
    Ok(WriteOutput::Done)
}

/// Takes the next CRL number of an issuer (strictly increasing, across restarts).
pub(super) async fn next_crl_number(
    conn: &mut Conn,
    issuer_id: &str,
    at: i64,
) -> Result<WriteOutput, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "INSERT INTO crl_state (issuer_id, crl_number, updated_at) VALUES ($1, 1, $2) \
         ON CONFLICT (issuer_id) DO UPDATE SET crl_number = crl_state.crl_number + 1, updated_at = $2 \
         RETURNING crl_number",
    )
    .bind(issuer_id)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(WriteOutput::Count(n as u64))
}

/// Revokes the retired issuing CA `id` (see [`crate::store::WriteOp::RevokeIssuer`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn revoke_issuer(
    conn: &mut Conn,
    id: &str,
    reason: Option<i64>,
    admin_profiles: &[String],
    at: i64,
    actor: &str,
    details: &serde_json::Value,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let row = sqlx::query("SELECT kind, status, revoked_at FROM issuers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("there is no issuer {id}")))?;
    let (kind, status, revoked_at): (String, String, Option<i64>) =
        (row.get("kind"), row.get("status"), row.get("revoked_at"));
    if kind != "issuing" {
        return Err(StoreError::Conflict(format!(
            "{id} is a root CA; only issuing CAs are revoked (on their root's CRL)"
        )));
    }
    if revoked_at.is_some() {
        return Err(StoreError::Conflict(format!(
            "issuing CA {id} is revoked already"
        )));
    }
    if status == "active" {
        return Err(StoreError::Conflict(format!(
            "issuing CA {id} is the active one, which signs every new certificate; roll over \
             first (`hallmark-ca issuer rotate`), then revoke it"
        )));
    }
    let guard = AdminGuard::before(conn, admin_profiles, at).await?;
    sqlx::query("UPDATE issuers SET revoked_at = $1, revocation_reason = $2 WHERE id = $3")
        .bind(at)
        .bind(reason)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let mut details = details.clone();
    if let Some(map) = details.as_object_mut() {
        map.insert("reason".into(), reason.into());
    }
    audit(
        conn,
        &AuditEvent::new(at, actor, "issuer.revoke", id, details),
        chain,
    )
    .await?;
    guard.check(conn).await?;
    Ok(WriteOutput::Done)
}

/// Stores `crl` as the CRL root `crl.issuer_id` publishes (see
/// [`crate::store::WriteOp::StoreRootCrl`]).
pub(super) async fn store_root_crl(
    conn: &mut Conn,
    crl: &RootCrlRecord,
    revoked_issuers: &[String],
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let now_revoked: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM issuers WHERE kind = 'issuing' AND revoked_at IS NOT NULL ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    if now_revoked != revoked_issuers {
        return Err(StoreError::Changed(format!(
            "the revoked issuing CAs changed while the CRL of {} was signed (now: [{}]); sign it again",
            crl.issuer_id,
            now_revoked.join(", ")
        )));
    }
    let stored = sqlx::query(
        "INSERT INTO root_crls (issuer_id, crl_number, this_update, next_update, entries, der, \
         signed_at, signed_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (issuer_id) DO UPDATE SET crl_number = excluded.crl_number, \
         this_update = excluded.this_update, next_update = excluded.next_update, \
         entries = excluded.entries, der = excluded.der, signed_at = excluded.signed_at, \
         signed_by = excluded.signed_by WHERE excluded.crl_number > root_crls.crl_number",
    )
    .bind(&crl.issuer_id)
    .bind(crl.number as i64)
    .bind(crl.this_update)
    .bind(crl.next_update)
    .bind(crl.entries as i64)
    .bind(&crl.der)
    .bind(crl.signed_at)
    .bind(&crl.signed_by)
    .execute(&mut *conn)
    .await?;
    if stored.rows_affected() != 1 {
        return Err(StoreError::Changed(format!(
            "a CRL of {} numbered {} or higher is stored already; sign it again",
            crl.issuer_id, crl.number
        )));
    }
    let event = AuditEvent::new(
        crl.signed_at,
        crl.signed_by.as_str(),
        "root_crl.sign",
        crl.issuer_id.as_str(),
        serde_json::json!({
            "number": crl.number,
            "next_update": crl.next_update,
            "entries": crl.entries,
            "revoked_issuers": revoked_issuers,
        }),
    );
    audit(conn, &event, chain).await?;
    Ok(WriteOutput::Done)
}
