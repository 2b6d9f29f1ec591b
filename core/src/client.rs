//! Connection to the CA: endpoint and credential from flags or `HALLMARK_*` variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::devices_client::DevicesClient;
use hallmark_proto::v1::enrollment_client::EnrollmentClient;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::client_tls as tls;

/// Longest wait for the TCP connection and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Every channel pings the CA this often (also while idle, so a watch stream notices too)...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and gives the connection up when a ping is not answered within this time.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no channel to the CA could be opened. The texts are what the `hallmark` command line
/// prints (the sources follow after a colon).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The credential's certificate could not be read.
    #[error("reading certificate {}", path.display())]
    ReadCert {
        /// The certificate file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The credential's key could not be read.
    #[error("reading key {}", path.display())]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `--cert` without `--key`.
    #[error("--cert given without --key (or HALLMARK_KEY)")]
    CertWithoutKey,
    /// `--key` without `--cert`.
    #[error("--key given without --cert (or HALLMARK_CERT)")]
    KeyWithoutCert,
    /// No trust bundle was given.
    #[error(
        "no trust bundle: give --trust-bundle FILE or set HALLMARK_CA (the CA prints it at start)"
    )]
    NoTrustBundle,
    /// The endpoint is not an `https://` URI.
    #[error("endpoint `{0}` must be https://HOST:PORT (the CA only speaks TLS)")]
    NotHttps(String),
    /// The endpoint names no host.
    #[error("endpoint `{0}` has no host")]
    NoHost(String),
    /// The trust bundle could not be read.
    #[error("reading trust bundle {}", path.display())]
    ReadTrustBundle {
        /// The trust bundle file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The trust bundle or the credential makes no TLS configuration.
    #[error("trust bundle {} or credential", path.display())]
    Tls {
        /// The trust bundle file.
        path: PathBuf,
        /// What was wrong.
        source: tls::TlsSetupError,
    },
    /// tonic refused the endpoint.
    #[error("invalid endpoint `{endpoint}`")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// tonic's reason.
        source: tonic::transport::Error,
    },
    /// The server chains to the trust bundle but is not the CA.
    #[error("refused the server at {endpoint} as the CA: {refusal}")]
    NotTheCa {
        /// The endpoint given.
        endpoint: String,
        /// What the server presented.
        refusal: tls::NotTheCa,
    },
    /// The connection or the handshake failed.
    #[error("cannot connect to the CA at {endpoint}")]
    Connect {
        /// The endpoint given.
        endpoint: String,
        /// tonic's reason.
        source: tonic::transport::Error,
    },
}

/// A call the CA refused, reading `CODE: message` (see [`code_name`]).
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", code_name(.0.code()), .0.message())]
pub struct StatusError(pub tonic::Status);

/// The CA-identity refusal somewhere in a connection error's chain.
fn not_the_ca(e: &(dyn std::error::Error + 'static)) -> Option<tls::NotTheCa> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(n) = err.downcast_ref::<tls::NotTheCa>() {
            return Some(n.clone());
        }
        // io::Error hides its payload from source(): look inside.
        if let Some(n) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<tls::NotTheCa>())
        {
            return Some(n.clone());
        }
        next = err.source();
    }
    None
}

/// Where the CA is and who we are.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// CA gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "HALLMARK_ENDPOINT",
        default_value = "https://127.0.0.1:9443"
    )]
    pub endpoint: String,
    /// Client certificate (PEM) of a Hallmark credential.
    #[arg(long, global = true, env = "HALLMARK_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of that credential.
    #[arg(long, global = true, env = "HALLMARK_KEY")]
    pub key: Option<PathBuf>,
    /// Trust bundle (PEM) to verify the CA's server certificate.
    #[arg(
        long = "trust-bundle",
        id = "trust_bundle",
        global = true,
        env = "HALLMARK_CA"
    )]
    pub ca_file: Option<PathBuf>,
}

impl Connection {
    /// Opens a channel to the CA with the credential of `--cert`/`--key` (if any).
    pub async fn channel(&self) -> Result<Channel, ConnectError> {
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let cert = std::fs::read(c).map_err(|source| ConnectError::ReadCert {
                    path: c.clone(),
                    source,
                })?;
                let key = std::fs::read(k).map_err(|source| ConnectError::ReadKey {
                    path: k.clone(),
                    source,
                })?;
                Some((cert, key))
            }
            (None, None) => None,
            (Some(_), None) => return Err(ConnectError::CertWithoutKey),
            (None, Some(_)) => return Err(ConnectError::KeyWithoutCert),
        };
        self.channel_with(identity).await
    }

    /// The trust bundle file this client verifies the CA with (and judges new bundles by).
    pub fn trust_bundle_path(&self) -> Result<&Path, ConnectError> {
        self.ca_file.as_deref().ok_or(ConnectError::NoTrustBundle)
    }

    /// Opens a channel to the CA presenting `identity` (PEM certificate chain and key), or none.
    /// Only the CA's own server certificate is accepted (see [`crate::client_tls`]); the channel
    /// sends HTTP/2 pings so that a connection that silently stopped forwarding is noticed.
    pub async fn channel_with(
        &self,
        identity: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Channel, ConnectError> {
        let uri: Uri = self
            .endpoint
            .parse()
            .ok()
            .filter(|u: &Uri| u.scheme_str() == Some("https"))
            .ok_or_else(|| ConnectError::NotHttps(self.endpoint.clone()))?;
        let authority = uri
            .authority()
            .ok_or_else(|| ConnectError::NoHost(self.endpoint.clone()))?
            .clone();
        let ca_path = self.trust_bundle_path()?;
        let ca = std::fs::read(ca_path).map_err(|source| ConnectError::ReadTrustBundle {
            path: ca_path.to_owned(),
            source,
        })?;
        let config = tls::ca_client_config(&ca, identity).map_err(|source| ConnectError::Tls {
            path: ca_path.to_owned(),
            source,
        })?;
        // Our connector does the TLS: tonic gets the http:// form (or it would add TLS of its
        // own) and the https:// origin for the requests.
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|source| ConnectError::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                source,
            })?
            .origin(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        match endpoint
            .connect_with_connector(tls::CaConnector::new(config))
            .await
        {
            Ok(channel) => Ok(channel),
            Err(e) => match not_the_ca(&e) {
                Some(refusal) => Err(ConnectError::NotTheCa {
                    endpoint: self.endpoint.clone(),
                    refusal,
                }),
                None => Err(ConnectError::Connect {
                    endpoint: self.endpoint.clone(),
                    source: e,
                }),
            },
        }
    }

    /// A `CertificateAuthority` client.
    pub async fn ca(&self) -> Result<CertificateAuthorityClient<Channel>, ConnectError> {
        Ok(CertificateAuthorityClient::new(self.channel().await?))
    }

    /// A `Devices` client.
    pub async fn devices(&self) -> Result<DevicesClient<Channel>, ConnectError> {
        Ok(DevicesClient::new(self.channel().await?))
    }

    /// An `Enrollment` client.
    pub async fn enrollment(&self) -> Result<EnrollmentClient<Channel>, ConnectError> {
        Ok(EnrollmentClient::new(self.channel().await?))
    }
}

/// The gRPC code name (`INVALID_ARGUMENT`) for messages people can search for.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Turns a gRPC status into an error that reads `CODE: message`.
pub fn status_error(s: tonic::Status) -> StatusError {
    StatusError(s)
}
