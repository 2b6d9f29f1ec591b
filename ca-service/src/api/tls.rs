//! The gRPC listener's TLS: our own rustls `ServerConfig` (tonic's `ServerTlsConfig` cannot
//! check revocation), accepted with tokio-rustls by [`crate::net::grpc`].
//!
//! Client certificates are optional at the TLS layer (enrollment calls carry a token instead)
//! and the handshake only proves possession of the certificate's key. Whether the certificate
//! is a valid, unrevoked Hallmark credential is decided per call by [`super::auth`], against
//! the store, so a revocation also cuts an HTTP/2 connection that is already open.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ServerConfig};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

// The process-wide crypto provider, moved to hallmark-core (shared with the clients).
pub use hallmark_core::crypto::provider;

/// Accepts any client certificate whose key signed the handshake; see the module docs.
#[derive(Debug)]
struct PossessionOnlyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for PossessionOnlyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deliberately deferred to the per-call check (store lookup of the exact DER).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Builds the API's TLS configuration: TLS 1.3 (plus 1.2 with ECDHE-AEAD suites when
/// `allow_tls12`), ALPN h2, optional client certificates, no session resumption.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    allow_tls12: bool,
    client_ca_subjects: Vec<DistinguishedName>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(PossessionOnlyVerifier {
        algorithms: provider.signature_verification_algorithms,
        hints: client_ca_subjects,
    });
    let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Resumption would skip client certificate checks at the TLS layer; keep every handshake full.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
