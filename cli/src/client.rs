//! Connection to the CA: endpoint and credential from flags or `HALLMARK_*` variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::devices_client::DevicesClient;
use hallmark_proto::v1::enrollment_client::EnrollmentClient;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::tls;

/// Longest wait for the TCP connection and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Every channel pings the CA this often (also while idle, so a watch stream notices too)...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and gives the connection up when a ping is not answered within this time.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// The trust bundle file this client verifies the CA with (and judges new bundles by).
    pub fn trust_bundle_path(&self) -> Result<&Path> {
        self.ca_file.as_deref().context(
            "no trust bundle: give --trust-bundle FILE or set HALLMARK_CA (the CA prints it at start)",
        )
    }

    /// Opens a channel to the CA presenting `identity` (PEM certificate chain and key), or none.
    /// Only the CA's own server certificate is accepted (see [`crate::tls`]); the channel
    /// sends HTTP/2 pings so that a connection that silently stopped forwarding is noticed.
    pub async fn channel_with(&self, identity: Option<(Vec<u8>, Vec<u8>)>) -> Result<Channel> {
        let uri: Uri = self
            .endpoint
            .parse()
            .ok()
            .filter(|u: &Uri| u.scheme_str() == Some("https"))
            .with_context(|| {
                format!(
                    "endpoint `{}` must be https://HOST:PORT (the CA only speaks TLS)",
                    self.endpoint
                )
            })?;
        let authority = uri
            .authority()
            .with_context(|| format!("endpoint `{}` has no host", self.endpoint))?
            .clone();
        let ca_path = self.trust_bundle_path()?;
        let ca = std::fs::read(ca_path)
            .with_context(|| format!("reading trust bundle {}", ca_path.display()))?;
        let config = tls::ca_client_config(&ca, identity)
            .with_context(|| format!("trust bundle {} or credential", ca_path.display()))?;
        // Our connector does the TLS: tonic gets the http:// form (or it would add TLS of its
        // own) and the https:// origin for the requests.
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .with_context(|| format!("invalid endpoint `{}`", self.endpoint))?
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
                Some(n) => bail!("refused the server at {} as the CA: {n}", self.endpoint),
                None => Err(anyhow::Error::new(e))
                    .with_context(|| format!("cannot connect to the CA at {}", self.endpoint)),
            },
        }
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
