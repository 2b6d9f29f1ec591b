//! Connection to the CA: endpoint and credential from flags or `HALLMARK_*` variables.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::devices_client::DevicesClient;
use hallmark_proto::v1::enrollment_client::EnrollmentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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
    pub async fn channel(&self) -> Result<Channel> {
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let cert = std::fs::read(c)
                    .with_context(|| format!("reading certificate {}", c.display()))?;
                let key =
                    std::fs::read(k).with_context(|| format!("reading key {}", k.display()))?;
                Some((cert, key))
            }
            (None, None) => None,
            (Some(_), None) => bail!("--cert given without --key (or HALLMARK_KEY)"),
            (None, Some(_)) => bail!("--key given without --cert (or HALLMARK_CERT)"),
        };
        self.channel_with(identity).await
    }

    /// Opens a channel to the CA presenting `identity` (PEM certificate chain and key), or none.
    pub async fn channel_with(&self, identity: Option<(Vec<u8>, Vec<u8>)>) -> Result<Channel> {
        if !self.endpoint.starts_with("https://") {
            bail!(
                "endpoint `{}` must start with https:// (the CA only speaks TLS)",
                self.endpoint
            );
        }
        let ca_path = self.ca_file.as_ref().context(
            "no trust bundle: give --trust-bundle FILE or set HALLMARK_CA (the CA prints it at start)",
        )?;
        let ca = std::fs::read(ca_path)
            .with_context(|| format!("reading trust bundle {}", ca_path.display()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .with_context(|| format!("invalid endpoint `{}`", self.endpoint))?
            .tls_config(tls)
            .context("TLS configuration")?
            .connect_timeout(std::time::Duration::from_secs(10));
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to the CA at {}", self.endpoint))
    }

    /// A `CertificateAuthority` client.
    pub async fn ca(&self) -> Result<CertificateAuthorityClient<Channel>> {
        Ok(CertificateAuthorityClient::new(self.channel().await?))
    }

    /// A `Devices` client.
    pub async fn devices(&self) -> Result<DevicesClient<Channel>> {
        Ok(DevicesClient::new(self.channel().await?))
    }

    /// An `Enrollment` client.
    pub async fn enrollment(&self) -> Result<EnrollmentClient<Channel>> {
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
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code_name(s.code()), s.message())
}
