//! The store: the only module with SQL. The interface ([`interface::Store`]) has one method per
//! operation with typed inputs, results and conflicts. Two backends implement it with the same
//! SQL (`store/sql`): [`SqliteStore`] (WAL, one file, the default) and [`PgStore`] (several
//! replicas on one database). Both send every write through one writer task that batches
//! concurrent requests into one transaction (group commit), so a certificate is returned only
//! after its row is durably committed, without one commit per row.

pub mod interface;
mod postgres;
mod records;
mod selection;
mod sqlite;

pub use interface::Store;
pub use interface::{
    CertificateStatusUpdate, CrlBuildLock, DeviceStatusUpdate, InitialHierarchy, IssuanceRecord,
    IssuanceRule, IssuerRevocation, IssuerRotation, Recorded, Registration, RootCrlUpdate,
    StatusChangeRequest, SystemCertificate,
};
pub use postgres::PgStore;
pub use records::*;
pub use selection::{Operators, Selection};
pub use sqlite::SqliteStore;

/// Where the store lives.
#[derive(Clone)]
pub enum Database {
    /// An SQLite file (created if needed).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database, by URL (`postgres://user:password@host:port/db?sslmode=...`).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    /// The URL without its password: it ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&redacted(url)).finish(),
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

/// `url` with any password (in the user part, or a query parameter such as `password=` or
/// `sslpassword=`) replaced by `redacted`; an unparsable URL as a whole (it may hold one).
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let secret = k.to_ascii_lowercase().contains("pass");
                    let v = if secret {
                        "redacted".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparsable database URL>".to_owned(),
    }
}

impl Database {
    /// Opens the store, migrating it, as a shared handle; writes are batched at most
    /// `max_batch` to a transaction.
    pub async fn open(&self, max_batch: usize) -> Result<std::sync::Arc<dyn Store>, StoreError> {
        Ok(match self {
            Self::Sqlite(path) => std::sync::Arc::new(SqliteStore::open(path, max_batch).await?),
            Self::Postgres(url) => std::sync::Arc::new(PgStore::open(url, max_batch).await?),
        })
    }
}

/// Opens (creating if needed) the SQLite database at `path` (see [`SqliteStore::open`]) as a
/// shared store handle.
pub async fn open_sqlite(
    path: &std::path::Path,
    max_batch: usize,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(std::sync::Arc::new(
        SqliteStore::open(path, max_batch).await?,
    ))
}

/// Name of the database file inside the data dir.
pub const DB_FILE: &str = "hallmark.db";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database cannot be reached at start (the message names where and why).
    #[error("{0}")]
    Connect(String),
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

/// Tables [`interface::Store::count`] can count.
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
mod suite;
#[cfg(test)]
mod tests;
