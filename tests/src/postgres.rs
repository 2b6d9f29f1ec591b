//! Scratch PostgreSQL databases for the end-to-end tests, on the server that
//! `HALLMARK_TEST_DATABASE_URL` names (the README's test command sets it: the local server when
//! one answers, else a throwaway cluster), made and dropped with `psql`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::Command;

use crate::{hallmark_ca, ok, s};

/// A database of its own for one test, dropped (with its connections) at the end.
pub struct PgScratch {
    server: url::Url,
    name: String,
}

impl PgScratch {
    /// Creates the database.
    pub fn new() -> Self {
        let server = std::env::var("HALLMARK_TEST_DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "HALLMARK_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh (it \
                 finds or starts a PostgreSQL server), or set it to postgres://USER@HOST:PORT/DB \
                 of a server where USER may create databases"
            )
        });
        let server = url::Url::parse(&server).expect("HALLMARK_TEST_DATABASE_URL is a URL");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("hallmark_e2e_{}_{nanos}", std::process::id());
        psql(server.as_str(), &format!("CREATE DATABASE {name}"));
        Self { server, name }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        let mut u = self.server.clone();
        u.set_path(&self.name);
        u.to_string()
    }

    /// The database's URL with the server's address replaced by `addr` (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let mut u = url::Url::parse(&self.url()).unwrap();
        u.set_host(Some(&addr.ip().to_string())).unwrap();
        u.set_port(Some(addr.port())).unwrap();
        u.to_string()
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        let host = self
            .server
            .host_str()
            .expect("the test database URL names a host");
        (host, self.server.port().unwrap_or(5432))
            .to_socket_addrs()
            .unwrap()
            .next()
            .expect("the test database host resolves")
    }
}

impl Default for PgScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = Command::new("psql")
            .args([
                self.server.as_str(),
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &drop,
            ])
            .output();
    }
}

/// Runs one SQL command (our own, not input) on the server with `psql`.
fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql (package postgresql-client; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `hallmark-ca init` of `dir` on the database at `url` (with `extra` arguments), then a copy
/// of it at `copy`: what an operator does once, giving every replica the same data dir.
pub fn init_shared(dir: &Path, copy: &Path, url: &str, extra: &[&str]) {
    let mut args = vec!["init", "--data-dir", s(dir), "--database-url", url];
    args.extend(extra);
    ok(&hallmark_ca(&args));
    let cp = Command::new("cp")
        .args(["-a", s(dir), s(copy)])
        .status()
        .unwrap();
    assert!(cp.success());
}
