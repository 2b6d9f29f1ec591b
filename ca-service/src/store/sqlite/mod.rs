//! The SQLite store (WAL, one file): reads query the pool; every write goes through one writer
//! task that batches concurrent requests into one transaction (group commit), so a certificate
//! is returned only after its row is durably committed, without one fsync per row.

mod batch;
pub(super) mod lifecycle;
mod methods;
mod ops;
mod reads;
mod rows;
pub(super) mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use writer::{WriteOp, WriteOutput};

/// The SQLite implementation of [`super::interface::Store`]; a cheap handle to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    writer: mpsc::Sender<writer::Request>,
    feed: writer::StatusFeed,
}

/// Committed batches of status changes a feed subscriber may fall behind by before it is told
/// it lagged (and must reload).
const FEED_CAPACITY: usize = 1024;

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

    /// Runs `op` in the next group commit and waits until it is durably committed.
    pub(super) async fn submit(&self, op: WriteOp) -> Result<WriteOutput, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(writer::Request { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}
