//! The PostgreSQL store, for several CA replicas on one database: the shared SQL
//! ([`super::sql`]) with its own schema (`migrations/postgres`, applied under sqlx's migration
//! lock, so replicas starting together migrate once). Every group commit takes one advisory
//! lock, so writes of all replicas are serialized like SQLite's: the audit chain stays one
//! chain, CRL numbers strictly increase, and the in-transaction checks (renewal interval,
//! enrollment throttle, last admin) hold across replicas.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use super::StoreError;

/// What the shared SQL needs to know of PostgreSQL.
mod dialect {
    use std::time::Duration;

    use sqlx::Connection;
    use sqlx::postgres::PgListener;
    use tokio::sync::watch;

    use crate::store::{CrlBuildLock, StoreError};

    /// The database.
    pub(crate) type Db = sqlx::Postgres;
    /// One connection.
    pub(crate) type Conn = sqlx::PgConnection;
    /// A result row.
    pub(crate) type DbRow = sqlx::postgres::PgRow;
    /// The pool.
    pub(crate) type Pool = sqlx::PgPool;

    /// The advisory lock every group commit holds until it commits ("hallmark" in ASCII).
    pub(crate) const WRITE_LOCK: i64 = 0x6861_6c6c_6d61_726b;

    /// Opens a group-commit transaction holding [`WRITE_LOCK`]: the writers of all replicas
    /// take turns, so each batch reads the audit chain head (and every state it checks) as the
    /// previous batch of any replica committed it. `synchronous_commit` is forced on for the
    /// transaction: a certificate leaves the CA only once its row is on disk, whatever the
    /// server's default.
    pub(crate) async fn begin_write(
        conn: &mut Conn,
    ) -> Result<sqlx::Transaction<'_, Db>, sqlx::Error> {
        // READ COMMITTED whatever the database's default: under REPEATABLE READ the snapshot
        // would be taken by the lock's own statement, before the lock is granted, and the
        // batch would read a stale chain head (a forked audit chain).
        let mut tx = Connection::begin_with(conn, "BEGIN ISOLATION LEVEL READ COMMITTED").await?;
        sqlx::query("SET LOCAL synchronous_commit TO on")
            .execute(&mut *tx)
            .await?;
        // A lock not granted within this is refused (the callers get UNAVAILABLE) rather than
        // waited for without end.
        sqlx::query("SET LOCAL lock_timeout TO '15s'")
            .execute(&mut *tx)
            .await?;
        // A replica that stops mid-batch (frozen, cut off) while holding the lock would stop
        // every other one: the server ends such a transaction (and its lock) after this long
        // idle. A batch's own statements follow each other within milliseconds.
        sqlx::query("SET LOCAL idle_in_transaction_session_timeout TO '10s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Replicas share the database, and their CRLs through it.
    pub(crate) const SHARED: bool = true;

    /// The channel status versions are announced on.
    const STATUS_CHANNEL: &str = "hallmark_status";

    /// Announces a status version as `replica:version`; PostgreSQL delivers it to every
    /// listener when (and only if) the transaction commits.
    pub(crate) async fn announce_status_version(
        conn: &mut Conn,
        replica: u64,
        version: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(STATUS_CHANNEL)
            .bind(format!("{replica}:{version}"))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// PostgreSQL checkpoints by itself.
    pub(crate) fn start_checkpointer(_pool: Pool, _in_use: watch::Sender<()>) {}

    /// Listens for other replicas' announcements in a task of its own (connection of its own,
    /// re-established when lost) and moves `changes` for each, and after every reconnection
    /// (announcements may have been missed meanwhile). Ends with the store.
    pub(crate) fn start_listener(pool: Pool, replica: u64, changes: watch::Sender<u64>) {
        tokio::spawn(async move {
            let bump = |changes: &watch::Sender<u64>| changes.send_modify(|n| *n += 1);
            loop {
                let listener = async {
                    let mut l = PgListener::connect_with(&pool).await?;
                    l.listen(STATUS_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                let listener = tokio::select! {
                    l = listener => l,
                    _ = changes.closed() => return,
                };
                let mut listener = match listener {
                    Ok(l) => l,
                    // The store was closed: nothing more to hear.
                    Err(_) if pool.is_closed() => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for other replicas' status changes; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(RELISTEN) => continue,
                            _ = changes.closed() => return,
                        }
                    }
                };
                bump(&changes);
                loop {
                    let next = tokio::select! {
                        n = listener.try_recv() => n,
                        _ = changes.closed() => return,
                    };
                    match next {
                        Ok(Some(n)) => {
                            let from = n.payload().split(':').next();
                            if from != Some(replica.to_string().as_str()) {
                                bump(&changes);
                            }
                        }
                        // Reconnected by the listener: what was said meanwhile is lost.
                        Ok(None) => bump(&changes),
                        Err(_) if pool.is_closed() => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the status change channel; listening again");
                            break;
                        }
                    }
                }
            }
        });
    }

    /// How long to wait before listening again after a failure.
    const RELISTEN: Duration = Duration::from_secs(1);

    /// How long a replica waits for another one's CRL build before it gives up for now.
    const CRL_LOCK_WAIT: Duration = Duration::from_secs(10);

    /// A connection holding a session advisory lock. Dropped, it is closed rather than
    /// returned to the pool: closing ends the session and so releases the lock whatever
    /// happened (a cancelled unlock would leave a pooled connection holding it).
    struct HeldLock(Option<sqlx::pool::PoolConnection<Db>>);

    impl Drop for HeldLock {
        fn drop(&mut self) {
            if let Some(conn) = self.0.take() {
                drop(conn.detach());
            }
        }
    }

    /// Takes the advisory lock of `issuer_id`'s CRL builds (keyed by a hash of its id) on a
    /// connection of its own, waiting at most [`CRL_LOCK_WAIT`].
    pub(crate) async fn lock_crl_build(
        pool: &Pool,
        issuer_id: &str,
    ) -> Result<CrlBuildLock, StoreError> {
        let mut held = HeldLock(Some(pool.acquire().await?));
        let Some(conn) = held.0.as_mut() else {
            return Err(StoreError::Closed);
        };
        let lock = sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("hallmark.crl.{issuer_id}"))
            .execute(&mut **conn);
        match tokio::time::timeout(CRL_LOCK_WAIT, lock).await {
            Ok(Ok(_)) => Ok(CrlBuildLock::held(Box::new(held))),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Conflict(format!(
                "another replica has been building the CRL of {issuer_id} for over {}s; \
                 this replica tries again shortly",
                CRL_LOCK_WAIT.as_secs()
            ))),
        }
    }
}

/// `SELECT` of the text values of a JSON array parameter (`$n`), for `x IN (...)` over a list
/// bound as one JSON text.
macro_rules! json_values {
    ($param:literal) => {
        concat!(
            "SELECT jsonb_array_elements_text(CAST(",
            $param,
            " AS jsonb))"
        )
    };
}

// The shared SQL, compiled into each backend on purpose (see `store/sql/mod.rs`).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/mod.rs"]
mod sql;

/// Connections one replica keeps open at most.
const MAX_CONNECTIONS: u32 = 16;

/// The PostgreSQL implementation of [`super::interface::Store`]; a cheap handle to clone.
pub type PgStore = sql::SqlStore;

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db?...`), brings its
    /// schema up to date and starts the writer task, which batches at most `max_batch` writes
    /// per transaction.
    pub async fn open(url: &str, max_batch: usize) -> Result<Self, StoreError> {
        Self::open_with(PgConnectOptions::from_str(url)?, max_batch).await
    }

    /// [`PgStore::open`] with parsed connection options.
    pub async fn open_with(
        options: PgConnectOptions,
        max_batch: usize,
    ) -> Result<Self, StoreError> {
        // The server probes every connection after 10 s of silence and ends it after ~25 s
        // without an answer (the default is hours), releasing the locks of a replica that
        // vanished (crashed host, network cut) for the others.
        let options = options.options([
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ]);
        // One direct connection first: its error names the cause (refused, authentication,
        // TLS, no such database), where the pool's says only that it timed out.
        let probe = PgConnection::connect_with(&options).await.map_err(|e| {
            StoreError::Connect(format!(
                "cannot connect to PostgreSQL at {}:{}/{}: {e}; check --database-url (or \
                 HALLMARK_DATABASE_URL) and that the server accepts this user",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("")
            ))
        })?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A database that does not answer is an error to report, not a hang.
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self::start(pool, max_batch))
    }
}

#[cfg(test)]
pub(super) mod scratch;
#[cfg(test)]
mod tests;
