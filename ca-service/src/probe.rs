//! `hallmark-ca probe`: a health check of a running CA for exec probes (Kubernetes' own `grpc`
//! probe speaks no TLS). It calls `grpc.health.v1.Health/Check` over TLS, accepting the server
//! only as clients do ([`hallmark_core::client_tls`]): its certificate must chain to the trust
//! bundle, name the host dialled and carry the CA-server marker. Exit 0 on `SERVING`, else an
//! error saying what failed, all within a short timeout.

use std::path::PathBuf;
use std::time::Duration;

use hallmark_core::client_tls::{self, CaConnector, TlsSetupError};
use tonic::codegen::http::Uri;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::datadir::DataDir;

/// Options of `hallmark-ca probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// gRPC address of the CA (HOST:PORT); its server certificate must name HOST.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub address: String,
    /// Data directory whose trust-bundle.pem verifies the server certificate.
    #[arg(long, default_value = "./hallmark-data", env = "HALLMARK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Trust bundle (PEM) to verify the server certificate with, instead of the data dir's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The grpc.health.v1 service to ask about (empty: the server as a whole).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this long (connection, TLS handshake and call together), e.g. 3s or 500ms.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl ProbeArgs {
    /// The trust bundle file in use: `--ca`, else the data dir's.
    pub fn trust_bundle(&self) -> PathBuf {
        self.ca
            .clone()
            .unwrap_or_else(|| DataDir::new(&self.data_dir).trust_bundle())
    }
}

/// Why the CA is not healthy, or could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The trust bundle could not be read.
    #[error(
        "cannot read the trust bundle {}: {source} (give --ca FILE, or --data-dir of an \
         initialised CA)", path.display()
    )]
    ReadTrustBundle {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The trust bundle makes no TLS configuration.
    #[error("trust bundle {}: {source}", path.display())]
    Tls {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: TlsSetupError,
    },
    /// The address is not `HOST:PORT`.
    #[error("--address `{0}` is not HOST:PORT")]
    BadAddress(String),
    /// No TLS connection to a server the trust bundle accepts as the CA.
    #[error("cannot connect to hallmark-ca at {address}: {reason}")]
    Connect {
        /// The address.
        address: String,
        /// What failed (refused, unreachable, certificate refused), from the error's chain.
        reason: String,
    },
    /// Nothing complete came back in time.
    #[error("no answer from hallmark-ca at {address} within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The address.
        address: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The health call failed.
    #[error("health check at {address} failed: {code:?}: {message}")]
    Call {
        /// The address.
        address: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The CA answered, but not `SERVING`.
    #[error("hallmark-ca at {address} reports service `{service}` as {status}, not SERVING")]
    NotServing {
        /// The address.
        address: String,
        /// The service asked about.
        service: String,
        /// The status it reported.
        status: String,
    },
}

/// Checks the CA of `args`; `Ok` only when it answers `SERVING` in time over a verified
/// connection.
pub async fn check(args: &ProbeArgs) -> Result<(), ProbeError> {
    let path = args.trust_bundle();
    let trust = std::fs::read(&path).map_err(|source| ProbeError::ReadTrustBundle {
        path: path.clone(),
        source,
    })?;
    let tls = client_tls::ca_client_config(&trust, None)
        .map_err(|source| ProbeError::Tls { path, source })?;
    let uri: Uri = format!("http://{}", args.address)
        .parse()
        .ok()
        .filter(|u: &Uri| u.port_u16().is_some() && u.path() == "/")
        .ok_or_else(|| ProbeError::BadAddress(args.address.clone()))?;
    let timeout = || ProbeError::Timeout {
        address: args.address.clone(),
        timeout: args.timeout,
    };
    let call = async {
        // Our connector does the TLS (the dialled host is the name verified): tonic gets the
        // http:// form so that it adds none of its own. The one timeout is the one around it all.
        let channel = Endpoint::from(uri)
            .connect_with_connector(CaConnector::new(tls))
            .await
            .map_err(|e| ProbeError::Connect {
                address: args.address.clone(),
                reason: chain(&e),
            })?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(|s| ProbeError::Call {
                address: args.address.clone(),
                code: s.code(),
                message: s.message().to_owned(),
            })
    };
    let answer = tokio::time::timeout(args.timeout, call)
        .await
        .map_err(|_| timeout())??
        .into_inner();
    match ServingStatus::try_from(answer.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        other => Err(ProbeError::NotServing {
            address: args.address.clone(),
            service: args.service.clone(),
            status: other
                .map(|s| s.as_str_name().to_owned())
                .unwrap_or_else(|_| format!("status {}", answer.status)),
        }),
    }
}

/// `hallmark-ca probe`: checks, then says so on stdout.
pub async fn run(args: ProbeArgs) -> Result<(), ProbeError> {
    check(&args).await?;
    println!(
        "SERVING: hallmark-ca at {} (certificate verified against {})",
        args.address,
        args.trust_bundle().display()
    );
    Ok(())
}

/// An error and its sources, `: `-joined (tonic's own text is only "transport error"); the
/// payload of an `io::Error` (rustls's certificate refusal) is part of its text.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(address: &str, ca: Option<PathBuf>) -> ProbeArgs {
        ProbeArgs {
            address: address.to_owned(),
            data_dir: PathBuf::from("/nonexistent-hallmark-data"),
            ca,
            service: String::new(),
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn a_missing_trust_bundle_and_a_bad_address_are_named() {
        let err = check(&args("127.0.0.1:9443", None)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent-hallmark-data/trust-bundle.pem"),
            "{text}"
        );
        assert!(text.contains("--ca FILE"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, "not a certificate\n").unwrap();
        let err = check(&args("127.0.0.1:9443", Some(bundle.clone())))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Tls { .. }), "{err}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&bundle, cert.pem()).unwrap();
        for bad in [
            "127.0.0.1",
            "https://127.0.0.1:9443/x",
            "127.0.0.1:9443/health",
        ] {
            let err = check(&args(bad, Some(bundle.clone()))).await.unwrap_err();
            assert!(matches!(err, ProbeError::BadAddress(_)), "{bad}: {err}");
        }
    }
}
