//! TLS to the CA. A server is accepted as the CA only when its certificate chains to the trust
//! bundle, names the host the client dialled (rustls's webpki verifier, as before) and carries
//! the CA-server marker that only the CA's own server certificate has
//! ([`crate::server_identity`]). Without the marker, any serverAuth certificate of the trust
//! bundle, such as a gateway's, could pose as the CA for its DNS name.
//!
//! tonic's `ClientTlsConfig` takes no custom verifier, so [`CaConnector`] makes the TCP and
//! TLS connection itself (ALPN h2) and tonic speaks HTTP/2 over it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;

use crate::server_identity::{CA_SERVER_EKU, has_ca_server_eku};

/// Why the TLS set-up of a client was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The trust bundle holds no usable certificate.
    #[error("the trust bundle holds no certificate rustls can use as a trust anchor{0}")]
    NoAnchors(String),
    /// The credential's certificate or key could not be read.
    #[error("the credential is not a PEM certificate and key: {0}")]
    Identity(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's certificate verified against the trust bundle but is not the CA's own.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the server's certificate `{subject}` chains to the trust bundle but is not the Hallmark \
     CA's server certificate (it lacks the CA-server key usage {CA_SERVER_EKU}); refused. \
     Check the endpoint: a device or gateway certificate cannot stand in for the CA. If it is \
     your CA running an older Hallmark, upgrade it: at its next start it reissues its server \
     certificate with the marker"
)]
pub struct NotTheCa {
    /// Subject of the certificate the server presented.
    pub subject: String,
}

/// webpki's checks, then the CA-server marker.
#[derive(Debug)]
struct CaServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if !has_ca_server_eku(end_entity.as_ref()) {
            let subject = subject_of(end_entity.as_ref());
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NotTheCa { subject })),
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn subject_of(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "(unparseable)".to_owned())
}

/// A client configuration that accepts only the CA's server certificate, verified against
/// the PEM trust bundle `trust_pem`, presenting `identity` (PEM certificate chain and key)
/// when given. ALPN h2; TLS 1.3 and 1.2 as the provider's safe defaults allow.
pub fn ca_client_config(
    trust_pem: &[u8],
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = crate::crypto::provider();
    let mut roots = rustls::RootCertStore::empty();
    let mut refused = String::new();
    for cert in CertificateDer::pem_slice_iter(trust_pem) {
        match cert {
            Ok(c) => {
                if let Err(e) = roots.add(c) {
                    refused = format!(" ({e})");
                }
            }
            Err(e) => refused = format!(" ({e})"),
        }
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoAnchors(refused));
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsSetupError::NoAnchors(format!(" ({e})")))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaServerVerifier { webpki }));
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsSetupError::Identity(format!("certificate: {e}")))?;
            if chain.is_empty() {
                return Err(TlsSetupError::Identity("no certificate in the file".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| TlsSetupError::Identity(format!("key: {e}")))?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects TCP to the host and port of the URI it is called with and runs the TLS handshake
/// with [`ca_client_config`]'s configuration, the URI's host being the name to verify. tonic
/// runs HTTP/2 over the result (give it an `http://` URI so it adds no TLS of its own).
#[derive(Clone)]
pub struct CaConnector {
    tls: TlsConnector,
}

impl CaConnector {
    /// A connector with the given client configuration.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Self {
            tls: TlsConnector::from(config),
        }
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl Service<Uri> for CaConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
            let host = uri
                .host()
                .ok_or_else(|| invalid("the endpoint has no host"))?;
            // `[::1]` in a URI is `::1` to the resolver and to the name check.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid("the endpoint's host is not a DNS name or an IP address"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tls.connect(name, tcp).await.map_err(clean_error)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Lifts a [`NotTheCa`] refusal out of rustls's wrapping, so the message says what happened.
fn clean_error(e: std::io::Error) -> std::io::Error {
    let not_the_ca = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(o))) => {
                o.downcast_ref::<NotTheCa>().cloned()
            }
            _ => None,
        });
    match not_the_ca {
        Some(n) => std::io::Error::new(std::io::ErrorKind::PermissionDenied, n),
        None => e,
    }
}
