//! What the Hallmark clients (the `hallmark` command line, its broker agent, the factory
//! provisioner) and the CA server both need, so that the clients do not link the server
//! (its store, SQL and HTTP stacks).
//!
//! Shared formats and rules: [`identity`] (device ids and names), [`bundle`] (credential
//! bundle layout) over [`fsutil`] (atomic file and directory writes), [`pem`], [`clock`],
//! [`validity`] (backdating), [`serial`] (serial number text), [`server_identity`] (the mark
//! of the CA's own server certificate) and [`crl`] (CRL checks, the watch heartbeat).
//! Talking to the CA: [`crypto`] (the one TLS crypto provider), [`client`] (the connection
//! from flags or `HALLMARK_*` variables), [`client_tls`] (TLS that accepts only the CA's
//! server certificate) and [`trust`] (accepting a new trust bundle).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
pub mod client;
pub mod client_tls;
pub mod clock;
pub mod crl;
pub mod crypto;
pub mod fsutil;
pub mod identity;
pub mod pem;
pub mod serial;
pub mod server_identity;
pub mod trust;
pub mod validity;
