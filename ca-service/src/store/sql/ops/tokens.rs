//! Enrollment tokens: storing one (its hash) and revoking a device's unused ones; counting
//! failed enrollments against their peers (the throttle).

use super::super::Conn;
use super::super::writer::WriteOutput;
use super::audit::audit;
use crate::audit::AuditEvent;
use crate::store::{EnrollFailure, StoreError, TokenRecord};
use sqlx::Row;

/// Stores a new enrollment token (its hash).
pub(super) async fn create_token(
    conn: &mut Conn,
    token: &TokenRecord,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    sqlx::query(
        "INSERT INTO enrollment_tokens (hash, device_id, profile, expires_at, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
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

/// Revokes every unused token of a device.
pub(super) async fn revoke_tokens(
    conn: &mut Conn,
    device_id: &str,
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let done = sqlx::query(
        "UPDATE enrollment_tokens SET revoked_at = $1 \
         WHERE device_id = $2 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(at)
    .bind(device_id)
    .execute(&mut *conn)
    .await?;
    let event = AuditEvent::new(
        at,
        actor,
        "token.revoke",
        device_id,
        serde_json::json!({"revoked": done.rows_affected()}),
    );
    audit(conn, &event, chain).await?;
    Ok(WriteOutput::Count(done.rows_affected()))
}

/// Counts a failed enrollment against its peer: windows that ended are dropped first (so a
/// row found is the open window), then the peer's count goes up; the failure that reaches the
/// limit marks the window reported and audits the throttle.
pub(super) async fn record_enroll_failure(
    conn: &mut Conn,
    failure: &EnrollFailure,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    sqlx::query("DELETE FROM enroll_failures WHERE window_start <= $1")
        .bind(failure.at - failure.window)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(
        "INSERT INTO enroll_failures (peer, window_start, failures, reported) \
         VALUES ($1, $2, 1, FALSE) ON CONFLICT (peer) DO UPDATE \
         SET failures = enroll_failures.failures + 1 RETURNING failures, reported",
    )
    .bind(&failure.peer)
    .bind(failure.at)
    .fetch_one(&mut *conn)
    .await?;
    let (failures, reported): (i64, bool) = (row.get("failures"), row.get("reported"));
    if failures < failure.max_failures || reported {
        return Ok(WriteOutput::Flag(false));
    }
    sqlx::query("UPDATE enroll_failures SET reported = TRUE WHERE peer = $1")
        .bind(&failure.peer)
        .execute(&mut *conn)
        .await?;
    audit(conn, &failure.throttled_event, chain).await?;
    Ok(WriteOutput::Flag(true))
}
