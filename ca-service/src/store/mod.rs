//! The store: the only module with SQL. SQLite (WAL, one file) today; every write goes through
//! one writer task that batches concurrent requests into one transaction (group commit), so a
//! certificate is returned only after its row is durably committed, without one fsync per row.

mod batch;
mod issuers;
mod lifecycle;
mod ops;
mod records;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

pub use lifecycle::{Operators, Selection};
pub use records::*;
pub use writer::{WriteOp, WriteOutput};

use crate::audit::AuditEvent;

/// Name of the database file inside the data dir.
pub const DB_FILE: &str = "hallmark.db";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The device exists but does not match what the certificate was signed for.
    #[error("{0}")]
    DeviceConflict(String),
    /// The row to change does not exist (or may no longer change).
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts the current state (used token, final status...).
    #[error("{0}")]
    Conflict(String),
    /// A rate rule refuses the write for now.
    #[error("{0}")]
    TooSoon(String),
    /// A renewal with a certificate whose successor is already in use.
    #[error("{0}")]
    Superseded(String),
    /// The write itself is malformed (a programming error).
    #[error("invalid write: {0}")]
    Invalid(String),
    /// A unique value exists already.
    #[error("{0}")]
    Duplicate(String),
    /// What the write was prepared from changed meanwhile (another signer of a root CRL got
    /// there first): prepare it again from a fresh read.
    #[error("{0}")]
    Changed(String),
    /// The writer task has stopped (shutdown in progress).
    #[error("the store is shutting down")]
    Closed,
}

/// Handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    writer: mpsc::Sender<writer::Request>,
    feed: writer::StatusFeed,
}

/// Committed batches of status changes a feed subscriber may fall behind by before it is told
/// it lagged (and must reload).
const FEED_CAPACITY: usize = 1024;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`, migrates it and starts the
    /// writer task, which batches at most `max_batch` writes per transaction.
    pub async fn open_sqlite(path: &Path, max_batch: usize) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it returns, also across power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let (tx, rx) = mpsc::channel(4096);
        let (feed, _) = tokio::sync::broadcast::channel(FEED_CAPACITY);
        tokio::spawn(writer::run(
            pool.clone(),
            rx,
            max_batch.max(1),
            feed.clone(),
        ));
        Ok(Self {
            pool,
            writer: tx,
            feed,
        })
    }

    /// Every committed certificate status change from now on, in commit order, each batch sent
    /// before any of its writers is answered. A receiver that falls more than
    /// [`FEED_CAPACITY`] batches behind gets `Lagged` and must reload what it keeps.
    pub fn status_changes(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<RevocationStatus>>> {
        self.feed.subscribe()
    }

    /// Runs `op` in the next group commit and waits until it is durably committed.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutput, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(writer::Request { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// All issuers, roots first, oldest first.
    pub async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, subject, cert_der, not_before, not_after, status, revoked_at, \
             revocation_reason FROM issuers ORDER BY kind DESC, created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| IssuerRecord {
                id: r.get("id"),
                kind: if r.get::<String, _>("kind") == "root" {
                    IssuerKind::Root
                } else {
                    IssuerKind::Issuing
                },
                subject: r.get("subject"),
                cert_der: r.get("cert_der"),
                not_before: r.get("not_before"),
                not_after: r.get("not_after"),
                active: r.get::<String, _>("status") == "active",
                revoked_at: r.get("revoked_at"),
                revocation_reason: r.get("revocation_reason"),
            })
            .collect())
    }

    /// The newest stored CRL of root `issuer_id`, if it has one.
    pub async fn root_crl(&self, issuer_id: &str) -> Result<Option<RootCrlRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT issuer_id, crl_number, this_update, next_update, entries, der, signed_at, \
             signed_by FROM root_crls WHERE issuer_id = ?1",
        )
        .bind(issuer_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| RootCrlRecord {
            issuer_id: r.get("issuer_id"),
            number: r.get::<i64, _>("crl_number") as u64,
            this_update: r.get("this_update"),
            next_update: r.get("next_update"),
            entries: r.get::<i64, _>("entries") as usize,
            der: r.get("der"),
            signed_at: r.get("signed_at"),
            signed_by: r.get("signed_by"),
        }))
    }

    /// `(root id, CRL number)` of every stored root CRL: what a serving CA polls to notice a
    /// root CRL signed by another process.
    pub async fn root_crl_numbers(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT issuer_id, crl_number FROM root_crls ORDER BY issuer_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("issuer_id"), r.get::<i64, _>("crl_number") as u64))
            .collect())
    }

    /// How many certificates of issuer `issuer_id` are active and unexpired at `now`.
    pub async fn valid_certificates_of(
        &self,
        issuer_id: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM certificates WHERE issuer_id = ?1 AND status = 'active' \
             AND not_after > ?2",
        )
        .bind(issuer_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(device_from_row))
    }

    /// The device with this serial number of this manufacturer, or else one registered with
    /// this serial number and no manufacturer yet.
    pub async fn device_by_serial_number(
        &self,
        serial_number: &str,
        manufacturer: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE serial_number = ?1 AND (manufacturer = ?2 OR manufacturer IS NULL) \
              ORDER BY manufacturer IS NULL LIMIT 1"
        ))
        .bind(serial_number)
        .bind(manufacturer)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(device_from_row))
    }

    /// Devices matching `filter`, ordered by id, after id `after`, at most `limit`.
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<DeviceRecord>, Option<String>), StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE id > ?1 \
              AND (?2 IS NULL OR zone = ?2) AND (?3 IS NULL OR profile = ?3) \
              AND (?4 IS NULL OR lot = ?4) AND (?5 IS NULL OR status = ?5) \
              ORDER BY id LIMIT ?6"
        ))
        .bind(after)
        .bind(filter.zone.as_deref())
        .bind(filter.profile.as_deref())
        .bind(filter.lot.as_deref())
        .bind(filter.status.map(|s| s.as_str()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items: Vec<DeviceRecord> = rows.iter().map(device_from_row).collect();
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok((items, next))
    }

    /// The enrollment token with this hash.
    pub async fn token(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT hash, device_id, profile, expires_at, created_at, created_by, used_at, revoked_at \
             FROM enrollment_tokens WHERE hash = ?1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| TokenRecord {
            hash: r.get("hash"),
            device_id: r.get("device_id"),
            profile: r.get("profile"),
            expires_at: r.get("expires_at"),
            created_at: r.get("created_at"),
            created_by: r.get("created_by"),
            used_at: r.get("used_at"),
            revoked_at: r.get("revoked_at"),
        }))
    }

    /// All manufacturer CAs, by name.
    pub async fn manufacturer_cas(&self) -> Result<Vec<ManufacturerCaRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, cert_der, zone, profile, auto_register, subject, not_after, created_at \
             FROM manufacturer_cas ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ManufacturerCaRecord {
                id: r.get("id"),
                name: r.get("name"),
                cert_der: r.get("cert_der"),
                zone: r.get("zone"),
                profile: r.get("profile"),
                auto_register: r.get("auto_register"),
                subject: r.get("subject"),
                not_after: r.get("not_after"),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    /// One certificate by serial (hex, any case).
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            cert_columns!(),
            " FROM certificates WHERE serial = ?1"
        ))
        .bind(serial.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(cert_from_row).transpose()
    }

    /// The certificate with this serial, the registry status of its device and whether its
    /// issuing CA is revoked, in one query (the per-call caller check).
    pub async fn certificate_of_caller(
        &self,
        serial: &str,
    ) -> Result<Option<CallerCertificate>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            cert_columns!(),
            ", (SELECT status FROM devices WHERE devices.id = certificates.device_id) AS device_status, \
             (SELECT revoked_at FROM issuers WHERE issuers.id = certificates.issuer_id) AS issuer_revoked_at \
             FROM certificates WHERE serial = ?1"
        ))
        .bind(serial.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let status: Option<String> = r.get("device_status");
                let device_status = status
                    .as_deref()
                    .map_or(DeviceStatus::Decommissioned, DeviceStatus::parse);
                let issuer_revoked_at: Option<i64> = r.get("issuer_revoked_at");
                Ok(Some(CallerCertificate {
                    record: cert_from_row(&r)?,
                    device_status,
                    issuer_revoked: issuer_revoked_at.is_some(),
                }))
            }
        }
    }

    /// Entries of issuer `issuer_id`'s CRL: revoked or held certificates not yet expired.
    pub async fn revocation_entries(
        &self,
        issuer_id: &str,
        now: i64,
    ) -> Result<Vec<RevocationStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, not_after, status, revoked_at, revocation_reason FROM certificates \
             WHERE issuer_id = ?1 AND status IN ('revoked', 'suspended') AND not_after > ?2 \
             ORDER BY seq",
        )
        .bind(issuer_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RevocationStatus {
                serial: r.get("serial"),
                issuer_id: issuer_id.to_owned(),
                not_after: r.get("not_after"),
                status: CertStatus::parse(r.get("status")),
                revoked_at: r.get("revoked_at"),
                reason: r.get("revocation_reason"),
            })
            .collect())
    }

    /// Certificates matching `filter`, in issue order, after cursor `after`, at most `limit`.
    pub async fn list_certificates(
        &self,
        filter: &CertFilter,
        after: i64,
        limit: u32,
    ) -> Result<Page<CertificateRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            cert_columns!(),
            " FROM certificates WHERE seq > ?1 \
              AND (?2 IS NULL OR device_id = ?2) AND (?3 IS NULL OR profile = ?3) \
              AND (?4 IS NULL OR status = ?4) AND (?5 IS NULL OR issuer_id = ?5) \
              AND (?7 IS NULL OR (status = 'active' AND not_after > ?7 AND not_after <= ?8)) \
              AND (?9 IS NULL OR serial IN (SELECT value FROM json_each(?9))) \
              AND (?10 IS NULL OR (superseded_by IS NOT NULL) = ?10) \
              ORDER BY seq LIMIT ?6"
        ))
        .bind(after)
        .bind(filter.device_id.as_deref())
        .bind(filter.profile.as_deref())
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.issuer_id.as_deref())
        .bind(i64::from(limit) + 1)
        .bind(filter.expiring.map(|(from, _)| from))
        .bind(filter.expiring.map(|(_, to)| to))
        .bind(
            filter
                .serials
                .as_ref()
                .map(|s| serde_json::Value::from(s.clone()).to_string()),
        )
        .bind(filter.superseded)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows
            .iter()
            .map(cert_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|c| c.seq)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Audit events in order, from id `after` on, at most `limit`, with their stored hashes.
    pub async fn audit_events(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, AuditEvent, Vec<u8>, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, details, prev_hash, hash FROM audit_events \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("id"),
                    AuditEvent {
                        at: r.get("at"),
                        actor: r.get("actor"),
                        action: r.get("action"),
                        target: r.get("target"),
                        details: r.get("details"),
                    },
                    r.get("prev_hash"),
                    r.get("hash"),
                )
            })
            .collect())
    }

    /// Walks the whole audit chain and recomputes every hash. Returns the number of events, or
    /// the id of the first event whose hash or link does not match.
    pub async fn verify_audit_chain(&self) -> Result<Result<u64, i64>, StoreError> {
        let mut prev = crate::audit::GENESIS_HASH.to_vec();
        let mut after = 0;
        let mut count = 0u64;
        loop {
            let page = self.audit_events(after, 1000).await?;
            if page.is_empty() {
                return Ok(Ok(count));
            }
            for (id, event, prev_hash, hash) in page {
                if prev_hash != prev || event.chain_hash(&prev).as_slice() != hash.as_slice() {
                    return Ok(Err(id));
                }
                prev = hash;
                after = id;
                count += 1;
            }
        }
    }

    /// Number of rows in a table, for tests and health figures.
    pub async fn count(&self, table: CountedTable) -> Result<i64, StoreError> {
        let sql = match table {
            CountedTable::Certificates => "SELECT COUNT(*) FROM certificates",
            CountedTable::Devices => "SELECT COUNT(*) FROM devices",
            CountedTable::AuditEvents => "SELECT COUNT(*) FROM audit_events",
            CountedTable::EnrollmentTokens => "SELECT COUNT(*) FROM enrollment_tokens",
        };
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    /// Closes the pool after the writer has drained.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Tables [`Store::count`] can count.
#[derive(Debug, Clone, Copy)]
pub enum CountedTable {
    /// `certificates`.
    Certificates,
    /// `devices`.
    Devices,
    /// `audit_events`.
    AuditEvents,
    /// `enrollment_tokens`.
    EnrollmentTokens,
}

#[cfg(test)]
mod tests;

/// Unexpired certificates (other than the CA's own) that `selector` picks and `change` applies
/// to, in issue order, read on `conn` inside the write that changes them.
pub(super) async fn matching_query(
    selector: &CertSelector,
    change: StatusChange,
    now: i64,
    conn: &mut sqlx::SqliteConnection,
) -> Result<Vec<SqliteRow>, StoreError> {
    macro_rules! select {
        ($cond:literal) => {
            concat!(
                "SELECT ",
                cert_columns!(),
                " FROM certificates WHERE ",
                $cond,
                " AND status IN (?2, ?3) AND not_after > ?4 AND profile <> 'ca-server' ORDER BY seq"
            )
        };
    }
    let sql = match selector {
        CertSelector::Serial(_) => select!("serial = ?1"),
        CertSelector::Device(_) => select!("device_id = ?1"),
        CertSelector::Lot(_) => select!("device_id IN (SELECT id FROM devices WHERE lot = ?1)"),
        CertSelector::Zone(_) => select!("zone = ?1"),
        CertSelector::Profile(_) => select!("profile = ?1"),
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

macro_rules! device_columns {
    () => {
        "id, zone, lot, profile, model, serial_number, manufacturer, status, created_at, updated_at"
    };
}
use device_columns;

fn device_from_row(r: &SqliteRow) -> DeviceRecord {
    DeviceRecord {
        id: r.get("id"),
        zone: r.get("zone"),
        lot: r.get("lot"),
        profile: r.get("profile"),
        model: r.get("model"),
        serial_number: r.get("serial_number"),
        manufacturer: r.get("manufacturer"),
        status: DeviceStatus::parse(r.get("status")),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

macro_rules! cert_columns {
    () => {
        "seq, serial, device_id, profile, zone, issuer_id, subject, not_before, not_after, status, \
         revoked_at, revocation_reason, scope, requested_by, spki_sha256, der, issued_at, superseded_by, \
         first_authenticated_at"
    };
}
use cert_columns;

fn cert_from_row(r: &SqliteRow) -> Result<CertificateRecord, StoreError> {
    let scope: Option<String> = r.get("scope");
    let scope = scope
        .map(|s| serde_json::from_str::<Scope>(&s))
        .transpose()
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
    Ok(CertificateRecord {
        seq: r.get("seq"),
        serial: r.get("serial"),
        device_id: r.get("device_id"),
        profile: r.get("profile"),
        zone: r.get("zone"),
        issuer_id: r.get("issuer_id"),
        subject: r.get("subject"),
        not_before: r.get("not_before"),
        not_after: r.get("not_after"),
        status: CertStatus::parse(r.get("status")),
        revoked_at: r.get("revoked_at"),
        revocation_reason: r.get("revocation_reason"),
        scope,
        requested_by: r.get("requested_by"),
        spki_sha256: r.get("spki_sha256"),
        der: r.get("der"),
        issued_at: r.get("issued_at"),
        superseded_by: r.get("superseded_by"),
        first_authenticated_at: r.get("first_authenticated_at"),
    })
}
