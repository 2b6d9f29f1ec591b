//! The SQL both backends run: reads, the group-commit writer and every write, written once in
//! SQL that SQLite and PostgreSQL both accept (`$n` parameters, `TRUE`/`FALSE`, `COALESCE`,
//! `RETURNING`, the same column types: see the two schemas). Each backend compiles this module
//! into itself (`#[path]` in `sqlite/mod.rs` and `postgres/mod.rs`) beside its `dialect`: the
//! database types, how a write transaction starts (SQLite's write lock, PostgreSQL's advisory
//! lock that serializes replicas) and the `json_values!` list expansion, the only statements
//! that differ. Including the source twice, rather than making it generic over
//! `sqlx::Database`, keeps every query a plain `&'static str` on a concrete connection type.

mod batch;
pub(super) mod lifecycle;
mod methods;
mod ops;
pub(super) mod reads;
mod rows;
pub(super) mod writer;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub(super) use super::dialect::{
    Conn, Db, DbRow, Pool, SHARED, announce_status_version, begin_write, lock_crl_build,
    start_checkpointer, start_listener,
};
use crate::store::StoreError;
use writer::{WriteOp, WriteOutput};

/// Committed batches of status changes a feed subscriber may fall behind by before it is told
/// it lagged (and must reload).
const FEED_CAPACITY: usize = 1024;

/// Writes waiting for the writer task before senders wait too.
const WRITE_QUEUE: usize = 4096;

/// A store on one database: reads query the pool; every write goes through one writer task
/// that batches concurrent requests into one transaction (group commit). A cheap handle to
/// clone.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(in crate::store) pool: Pool,
    writer: mpsc::Sender<writer::Request>,
    feed: writer::StatusFeed,
    /// Moves when another replica committed status changes (see `dialect::start_listener`).
    remote: watch::Receiver<u64>,
    /// This process among the replicas (random), in its announcements.
    replica: u64,
    /// Moves after each commit that may change a caller's record (see
    /// [`crate::store::interface::Store::caller_generation`]).
    generation: Arc<AtomicU64>,
    /// Held while the store is in use: its background work (`dialect::start_checkpointer`)
    /// ends when the last handle goes.
    _in_use: Arc<watch::Receiver<()>>,
}

impl SqlStore {
    /// Starts the writer task on a migrated `pool`; it batches at most `max_batch` writes per
    /// transaction.
    pub(super) fn start(pool: Pool, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        // Tells this process's announcements of status changes from other replicas' (in
        // containers every replica may be pid 1, so not the pid).
        let mut id = [0u8; 8];
        let replica = match aws_lc_rs::rand::fill(&mut id) {
            Ok(()) => u64::from_le_bytes(id),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        let generation = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer::run(
            pool.clone(),
            rx,
            max_batch.max(1),
            feed.clone(),
            replica,
            generation.clone(),
        ));
        let (remote_tx, remote) = watch::channel(0);
        start_listener(pool.clone(), replica, remote_tx);
        let (in_use_tx, in_use) = watch::channel(());
        start_checkpointer(pool.clone(), in_use_tx);
        Self {
            pool,
            writer: tx,
            feed,
            remote,
            replica,
            generation,
            _in_use: Arc::new(in_use),
        }
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
