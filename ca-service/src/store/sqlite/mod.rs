//! The SQLite store (WAL, one file): the shared SQL (`store/sql`) on an embedded database.
//! Every write goes through one writer task that batches concurrent requests into one
//! transaction (group commit), so a certificate is returned only after its row is durably
//! committed, without one fsync per row.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;

/// What the shared SQL needs to know of SQLite.
mod dialect {
    use sqlx::Connection;
    use tokio::sync::watch;

    use crate::store::{CrlBuildLock, StoreError};

    /// The database.
    pub(crate) type Db = sqlx::Sqlite;
    /// One connection.
    pub(crate) type Conn = sqlx::SqliteConnection;
    /// A result row.
    pub(crate) type DbRow = sqlx::sqlite::SqliteRow;
    /// The pool.
    pub(crate) type Pool = sqlx::SqlitePool;

    /// Opens a group-commit transaction. BEGIN IMMEDIATE takes the write lock up front instead
    /// of failing on upgrade; holding it, the writer reads the audit chain head another process
    /// (`hallmark-ca issuer rotate`) may have moved.
    pub(crate) async fn begin_write(
        conn: &mut Conn,
    ) -> Result<sqlx::Transaction<'_, Db>, sqlx::Error> {
        Connection::begin_with(conn, "BEGIN IMMEDIATE").await
    }

    /// One process serves an SQLite database: it keeps its CRLs to itself.
    pub(crate) const SHARED: bool = false;

    /// Nobody else to tell of status changes.
    pub(crate) async fn announce_status_version(
        _conn: &mut Conn,
        _replica: u64,
        _version: i64,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// Nobody else to hear status changes from: the counter never moves.
    pub(crate) fn start_listener(_pool: Pool, _replica: u64, _changes: watch::Sender<u64>) {}

    /// Nobody else builds CRLs.
    pub(crate) async fn lock_crl_build(
        _pool: &Pool,
        _issuer_id: &str,
    ) -> Result<CrlBuildLock, StoreError> {
        Ok(CrlBuildLock::alone())
    }
}

/// `SELECT` of the text values of a JSON array parameter (`$n`), for `x IN (...)` over a list
/// bound as one JSON text.
macro_rules! json_values {
    ($param:literal) => {
        concat!("SELECT value FROM json_each(", $param, ")")
    };
}

// The shared SQL, compiled into each backend on purpose (see `store/sql/mod.rs`).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/mod.rs"]
mod sql;

/// The SQLite implementation of [`super::interface::Store`]; a cheap handle to clone.
pub type SqliteStore = sql::SqlStore;

impl SqliteStore {
    /// Opens (creating if needed) the SQLite database at `path`, migrates it and starts the
    /// writer task, which batches at most `max_batch` writes per transaction.
    pub async fn open(path: &Path, max_batch: usize) -> Result<Self, StoreError> {
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
        Ok(Self::start(pool, max_batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // At a million certificates the read went through `certificates_issuer` and fetched every
    // certificate of the issuer to look at its status: 1.3 s at every start.
    #[tokio::test]
    async fn an_issuers_crl_entries_are_read_through_the_index_of_listed_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let _store = SqliteStore::open(&path, 8).await.unwrap();
        let pool = SqlitePoolOptions::new()
            .connect_with(
                SqliteConnectOptions::from_str("sqlite://")
                    .unwrap()
                    .filename(&path),
            )
            .await
            .unwrap();
        let explain: &'static str = Box::leak(
            format!("EXPLAIN QUERY PLAN {}", sql::reads::REVOCATION_ENTRIES).into_boxed_str(),
        );
        let plan: Vec<String> = sqlx::query(explain)
            .bind("issuing-1")
            .bind(0i64)
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
            .collect();
        assert!(
            plan.iter().any(|d| d.contains("certificates_listed")),
            "{plan:?}"
        );
    }
}
