//! The library side of the `hallmark` command line: the broker agent ([`broker`], run by
//! `hallmark broker sync` and used by `hallmark rotate` and `hallmark crl`), kept here so that
//! its unit tests run with `cargo test -p hallmark-cli --lib`. The connection to the CA, its
//! TLS and the trust bundle check live in [`hallmark_core`], shared with the provisioner.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
