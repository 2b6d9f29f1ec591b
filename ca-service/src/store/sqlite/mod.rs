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

    /// Copies the WAL into the database file beside the writer, every [`CHECKPOINT_EVERY`],
    /// until the store is no longer in use. SQLite's own checkpoint runs inside the commit
    /// that crosses `wal_autocheckpoint`: that commit, and every request waiting on the writer
    /// behind it, pays for writing the pages back into the file and syncing it (at a million
    /// certificates, random pages of a 1.7 GB file). A PASSIVE checkpoint on another
    /// connection takes neither the write lock nor a reader's snapshot; the commit path keeps
    /// SQLite's own checkpoint only as a bound on the WAL ([`WAL_BOUND_PAGES`]).
    pub(crate) fn start_checkpointer(pool: Pool, in_use: watch::Sender<()>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(super::CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = in_use.closed() => return,
                }
                if pool.is_closed() {
                    return;
                }
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                    && !pool.is_closed()
                {
                    tracing::warn!(error = %e, "WAL checkpoint failed; the commits do it meanwhile");
                }
            }
        });
    }

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

/// How often the WAL is copied into the database file beside the writer (see
/// `dialect::start_checkpointer`).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The WAL size (pages of 4 KiB) at which a commit checkpoints by itself after all: 40 MiB,
/// reached only if the checkpointer falls behind.
const WAL_BOUND_PAGES: u32 = 10_000;

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
            .busy_timeout(Duration::from_secs(10))
            // A bound only: the checkpointer beside the writer keeps the WAL far below it.
            .pragma("wal_autocheckpoint", WAL_BOUND_PAGES.to_string());
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

    // A commit below the WAL bound leaves its pages in the WAL; the checkpointer beside the
    // writer copies them into the database file within a few ticks.
    #[tokio::test]
    async fn the_wal_is_copied_into_the_database_file_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path, 8).await.unwrap();
        sqlx::query("CREATE TABLE filler (x BLOB)")
            .execute(&store.pool)
            .await
            .unwrap();
        let written = std::fs::metadata(&path).unwrap().len();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
             INSERT INTO filler SELECT randomblob(3000) FROM n",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let start = std::time::Instant::now();
        while std::fs::metadata(&path).unwrap().len() < written + 200 * 3000 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the database file did not grow: nothing checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

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
