//! The PostgreSQL store (issue 13, being built): the connection pool and the schema
//! (`migrations/postgres`, applied under sqlx's migration lock, so replicas starting together
//! migrate once). The [`super::interface::Store`] methods follow; until then a PostgreSQL
//! database can be opened, migrated and checked, and nothing selects it for serving.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreError;

/// Connections one replica keeps open at most.
const MAX_CONNECTIONS: u32 = 16;

/// A PostgreSQL database holding the Hallmark schema; a cheap handle to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db?...`) and brings its
    /// schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(PgConnectOptions::from_str(url)?).await
    }

    /// [`PgStore::open`] with parsed connection options.
    pub async fn open_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A database that does not answer is an error to report, not a hang.
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;
