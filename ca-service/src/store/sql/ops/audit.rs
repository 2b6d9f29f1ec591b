//! The audit chain: appending events, one or many, each hashed onto the one before.

use super::super::{Conn, Db};
use sqlx::{QueryBuilder, Row};

use crate::audit::{AuditEvent, GENESIS_HASH};
use crate::store::StoreError;

/// The hash of the newest audit event (the chain head), or the genesis hash of an empty chain.
pub(crate) async fn last_audit_hash(conn: &mut Conn) -> Result<[u8; 32], sqlx::Error> {
    let row = sqlx::query("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => {
            let v: Vec<u8> = r.get("hash");
            v.try_into().map_err(|v: Vec<u8>| {
                sqlx::Error::Protocol(format!(
                    "the last audit event has a {}-byte hash; the audit chain is damaged",
                    v.len()
                ))
            })?
        }
        None => GENESIS_HASH,
    })
}

/// Events per statement in [`audit_many`]: seven parameters each, well within SQLite's 32,766
/// and PostgreSQL's 65,535 parameters per statement (a zone revoked whole audits one event
/// per certificate).
const EVENTS_PER_STATEMENT: usize = 1000;

/// Appends events to the chain, a thousand per statement.
pub(crate) async fn audit_many(
    conn: &mut Conn,
    events: Vec<AuditEvent>,
    chain: &mut [u8; 32],
) -> Result<(), StoreError> {
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        let hash = e.chain_hash(chain);
        rows.push((e, *chain, hash));
        *chain = hash;
    }
    for chunk in rows.chunks(EVENTS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO audit_events (at, actor, action, target, details, prev_hash, hash) ",
        );
        q.push_values(chunk, |mut b, (e, prev, hash)| {
            b.push_bind(e.at)
                .push_bind(&e.actor)
                .push_bind(&e.action)
                .push_bind(&e.target)
                .push_bind(&e.details)
                .push_bind(prev.as_slice())
                .push_bind(hash.as_slice());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Appends one event to the chain.
pub(crate) async fn audit(
    conn: &mut Conn,
    event: &AuditEvent,
    chain: &mut [u8; 32],
) -> Result<(), StoreError> {
    let hash = event.chain_hash(chain);
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, target, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
