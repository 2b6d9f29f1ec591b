//! `hallmark enroll`: on the device at commissioning. Generates the operational key here,
//! sends a CSR with a one-time token or over mutual TLS with the IDevID, writes the bundle.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use hallmark_core::bundle;
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;

use crate::cert::{BundleAccessArgs, check_out_dir, print_issued, write_response};
use hallmark_core::client::{Connection, status_error};

/// `hallmark enroll`.
#[derive(Args, Debug)]
pub struct EnrollArgs {
    /// One-time enrollment token (from `hallmark token create`).
    #[arg(long, env = "HALLMARK_ENROLL_TOKEN", conflicts_with_all = ["token_file", "idevid_cert"])]
    token: Option<String>,
    /// File holding the token (keeps it out of the process list).
    #[arg(long, conflicts_with = "idevid_cert")]
    token_file: Option<PathBuf>,
    /// Manufacturer birth certificate (IDevID), PEM; may include its intermediates.
    #[arg(long, requires = "idevid_key")]
    idevid_cert: Option<PathBuf>,
    /// Key of the IDevID, PEM.
    #[arg(long, requires = "idevid_cert")]
    idevid_key: Option<PathBuf>,
    /// This device's id, when known: the CA then refuses a token of another device.
    #[arg(long)]
    device: Option<String>,
    /// Output directory of the bundle (replaced atomically; a bundle already there keeps its
    /// owner, group and modes unless --owner, --group or --key-mode say otherwise).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    access: BundleAccessArgs,
}

/// Runs `hallmark enroll`.
pub async fn run(conn: &Connection, a: EnrollArgs) -> Result<()> {
    check_out_dir(&a.out)?;
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading token file {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    // A token enrollment presents no client certificate, whatever HALLMARK_CERT says;
    // an IDevID enrollment presents the IDevID.
    let identity = match (&token, &a.idevid_cert, &a.idevid_key) {
        (Some(_), _, _) => None,
        (None, Some(c), Some(k)) => Some((
            std::fs::read(c).with_context(|| format!("reading IDevID {}", c.display()))?,
            std::fs::read(k).with_context(|| format!("reading IDevID key {}", k.display()))?,
        )),
        _ => bail!("give --token (or --token-file), or --idevid-cert with --idevid-key"),
    };
    let name = a
        .device
        .clone()
        .unwrap_or_else(|| "hallmark-enroll".to_owned());
    let (key_pem, csr) = bundle::new_key_and_csr(&name)?;
    let mut client = CertificateAuthorityClient::new(conn.channel_with(identity).await?);
    let resp = client
        .enroll(pb::EnrollRequest {
            token: token.unwrap_or_default(),
            csr,
            device_id: a.device.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let cert = write_response(
        resp,
        Some(key_pem),
        &a.out,
        conn.trust_bundle_path()?,
        a.access.access(),
    )?;
    print_issued(&cert, &a.out);
    Ok(())
}
