//! The TLS crypto provider, shared by the CA's listener and every client.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The process-wide crypto provider: aws-lc-rs, the one provider of the whole project.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
