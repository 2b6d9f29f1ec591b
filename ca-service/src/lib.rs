//! Hallmark's online certificate authority: issues and records per-device X.509 certificates
//! over a mutually authenticated gRPC API.
//!
//! Modules by concern: [`authority`] (policy and signing, no I/O), [`keys`] (CA key sources
//! behind a signer trait), [`keyring`] (the one owner of the issuer keys), [`store`] (the only
//! place with SQL), [`api`] (tonic services, authentication, authorization), [`trust`] (the
//! trust bundle in force), [`http`] (trust bundle, health), [`revocation`] and [`root_crl`]
//! (CRLs), [`net`] (listeners and their limits), [`audit`], [`config`], [`datadir`] (the data
//! dir's layout), [`bootstrap`] (first-start initialisation and loading), [`hierarchy`] (issuer
//! rollover and revocation), [`server`] (wiring it all together) and [`probe`] (the health check
//! of `hallmark-ca probe`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod authority;
pub mod bootstrap;
pub mod config;
pub mod datadir;
pub mod hierarchy;
pub mod http;
pub mod keyring;
pub mod keys;
pub mod net;
pub mod probe;
pub mod revocation;
pub mod root_crl;
pub mod server;
pub mod service;
pub mod store;
pub mod trust;

// Moved to hallmark-core (shared with the clients); re-exported so the old paths still work.
pub use hallmark_core::{bundle, clock, fsutil, identity};
