//! Scratch databases for tests on a real PostgreSQL server: `HALLMARK_TEST_DATABASE_URL` names
//! it (the README's test command sets it: the local server when one answers, else a throwaway
//! cluster). Every test works in a database of its own, dropped at the end.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A fresh database on the test server, dropped when the test ends (also when it fails).
pub(crate) struct Scratch {
    admin: PgConnectOptions,
    name: String,
}

impl Scratch {
    /// Creates the database.
    pub(crate) async fn new() -> Self {
        let url = std::env::var("HALLMARK_TEST_DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "HALLMARK_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh (it \
                 finds or starts a PostgreSQL server), or set it to postgres://USER@HOST:PORT/DB \
                 of a server where USER may create databases"
            )
        });
        let admin = PgConnectOptions::from_str(&url).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("hallmark_test_{}_{nanos}", std::process::id());
        let mut conn = PgConnection::connect_with(&admin).await.unwrap();
        // The name is ours (digits and underscores only), not input.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        Self { admin, name }
    }

    /// Options that connect to it.
    pub(crate) fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// Sets a default of the database (`ALTER DATABASE ... SET`), as a DBA might have: for
    /// connections made from now on. `setting` and `value` are the test's own.
    pub(crate) async fn set_default(&self, setting: &str, value: &str) {
        let mut conn = PgConnection::connect_with(&self.admin).await.unwrap();
        let sql = format!("ALTER DATABASE {} SET {setting} = '{value}'", self.name);
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Dropped from a runtime of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(AssertSqlSafe(drop)).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}
