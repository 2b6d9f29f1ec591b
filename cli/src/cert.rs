//! `hallmark cert ...` and `hallmark credential ...`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use hallmark_core::bundle::{self, BundleAccess, CredentialBundle};
use hallmark_core::fsutil;
use hallmark_core::identity::validate_name;
use hallmark_core::pem::der_to_pem;
use hallmark_proto::v1 as pb;

use crate::output::{self, Format};
use hallmark_core::client::{Connection, status_error};

/// `hallmark cert`.
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate for a device and write a credential bundle.
    Issue(IssueArgs),
    /// List certificates (all pages).
    List(ListArgs),
    /// Show one certificate.
    Show(ShowArgs),
}

/// Where the key comes from.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct KeySource {
    /// CSR file (PEM or DER); the key stays where it is, the bundle gets no key.pem.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Generate a P-256 key here and write it into the bundle as key.pem.
    #[arg(long)]
    generate_key: bool,
}

/// Owner, group and key mode of a bundle write (`--owner`, `--group`, `--key-mode`), checked
/// while the command line is read, so a bad one is refused before anything is written.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct BundleAccessArgs {
    /// Owner of the bundle directory and its files (user name or uid), e.g. mosquitto for a
    /// broker. Default: inherited from the bundle being replaced, else the caller.
    #[arg(long, value_name = "USER", value_parser = bundle::parse_user)]
    owner: Option<u32>,
    /// Group of the bundle directory and its files (group name or gid). Default: inherited
    /// from the bundle being replaced, else the caller's.
    #[arg(long, value_name = "GROUP", value_parser = bundle::parse_group)]
    group: Option<u32>,
    /// Mode of key.pem, octal: 0600, or 0640 so the group (e.g. the broker) may read it; the
    /// directory then gets 0700 or 0750. Never world-readable. Default: inherited from the
    /// bundle being replaced, else 0600.
    #[arg(long, value_name = "MODE", value_parser = bundle::parse_key_mode)]
    key_mode: Option<u32>,
}

impl BundleAccessArgs {
    /// As the bundle writer takes it.
    pub fn access(self) -> BundleAccess {
        BundleAccess {
            owner: self.owner,
            group: self.group,
            key_mode: self.key_mode,
        }
    }
}

/// `hallmark cert issue`.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Device id.
    #[arg(long)]
    device: String,
    /// Certificate profile (sensor, gateway, broker, ...).
    #[arg(long)]
    profile: String,
    /// Zone; defaults to the registry's, or the CA's default zone for a new device.
    #[arg(long)]
    zone: Option<String>,
    #[command(flatten)]
    key: KeySource,
    /// Lifetime, e.g. 30d or 8h; defaults to the profile's.
    #[arg(long, value_parser = humantime::parse_duration)]
    lifetime: Option<Duration>,
    /// Output directory of the bundle (replaced atomically; a bundle already there keeps its
    /// owner, group and modes unless --owner, --group or --key-mode say otherwise).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    access: BundleAccessArgs,
    /// Revoke (reason superseded) the device's other certificates in the same step, so that it
    /// is left with exactly this one.
    #[arg(long)]
    replace: bool,
}

/// `hallmark cert list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// Only this profile.
    #[arg(long)]
    profile: Option<String>,
    /// Only this status.
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// Only this issuer id.
    #[arg(long)]
    issuer: Option<String>,
    /// Only unrevoked certificates that expire within this time, e.g. 14d.
    #[arg(long, value_parser = humantime::parse_duration)]
    expiring_within: Option<Duration>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// Status filter values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    /// Not revoked and not replaced by a renewal.
    Active,
    /// Revoked.
    Revoked,
    /// On hold.
    Suspended,
    /// Replaced by a renewal, still valid until it expires.
    Superseded,
}

/// `hallmark cert show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Serial number (hex, colons allowed).
    serial: String,
    /// Output format; `pem` prints the certificate itself.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    format: ShowFormat,
}

/// Formats of `cert show`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShowFormat {
    /// Field list.
    Table,
    /// JSON with PEM.
    Json,
    /// The certificate, PEM.
    Pem,
}

/// `hallmark credential`.
#[derive(Subcommand, Debug)]
pub enum CredentialCommand {
    /// Create an operator credential (admin, provisioner, broker-agent) with a fresh key.
    Create(CredentialArgs),
}

/// Roles a credential can have.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Full control.
    Admin,
    /// Factory station, scoped to profiles and zones.
    Provisioner,
    /// Broker host agent.
    BrokerAgent,
}

/// `hallmark credential create`.
#[derive(Args, Debug)]
pub struct CredentialArgs {
    /// Role of the credential (its profile).
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Name (CN) of the credential.
    #[arg(long)]
    name: String,
    /// Provisioner scope: zones it may issue into (comma-separated).
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// Provisioner scope: profiles it may issue (comma-separated).
    #[arg(long, value_delimiter = ',')]
    profiles: Vec<String>,
    /// Lifetime, e.g. 90d; defaults to the profile's.
    #[arg(long, value_parser = humantime::parse_duration)]
    lifetime: Option<Duration>,
    /// Output directory of the bundle (replaced atomically; a bundle already there keeps its
    /// owner, group and modes unless --owner, --group or --key-mode say otherwise).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    access: BundleAccessArgs,
}

fn read_csr(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("reading CSR {}", path.display()))?;
    if meta.len() > 1024 * 1024 {
        bail!(
            "CSR file {} is {} bytes; a CSR is at most 64 KiB",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("reading CSR {}", path.display()))
}

/// Refuses an output directory that holds a different credential's key, so nothing is mixed up.
pub fn check_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {} exists and is not a directory", out.display());
    }
    Ok(())
}

async fn issue_and_write(
    conn: &Connection,
    req: pb::IssueRequest,
    key_pem: Option<String>,
    out: &Path,
    access: BundleAccess,
) -> Result<pb::Certificate> {
    check_out_dir(out)?;
    let mut client = conn.ca().await?;
    let resp = client.issue(req).await.map_err(status_error)?.into_inner();
    write_response(resp, key_pem, out, conn.trust_bundle_path()?, access)
}

/// Writes what the CA answered as a bundle in `out`: all four files when we hold the key,
/// the public three otherwise. Its `ca.pem` must chain to `trusted` (the trust bundle this
/// client verified the CA with), else nothing is written.
pub fn write_response(
    resp: pb::IssueResponse,
    key_pem: Option<String>,
    out: &Path,
    trusted: &Path,
    access: BundleAccess,
) -> Result<pb::Certificate> {
    let cert = resp
        .certificate
        .context("the CA answered without a certificate")?;
    hallmark_core::trust::check_against_file(trusted, resp.trust_bundle_pem.as_bytes())?;
    let cert_pem = der_to_pem(&cert.der);
    match key_pem {
        Some(key_pem) => CredentialBundle {
            key_pem,
            cert_pem,
            chain_pem: resp.chain_pem,
            ca_pem: resp.trust_bundle_pem,
        }
        .write_with(out, access)?,
        None => {
            // The key stays with whoever made the CSR: write the public parts only.
            fsutil::replace_dir_with_access(
                out,
                &[
                    (bundle::CA_FILE, resp.trust_bundle_pem.as_bytes(), 0o644),
                    (bundle::CHAIN_FILE, resp.chain_pem.as_bytes(), 0o644),
                    (bundle::CERT_FILE, cert_pem.as_bytes(), 0o644),
                ],
                &access.to_fs(),
            )
            .with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(cert)
}

pub fn print_issued(cert: &pb::Certificate, out: &Path) {
    println!(
        "issued {} for {} (profile {}, zone {}), valid until {}",
        cert.serial,
        cert.device_id,
        cert.profile,
        cert.zone,
        output::time_text(cert.not_after)
    );
    println!("bundle written to {}", out.display());
}

/// Runs `hallmark cert ...`.
pub async fn run(conn: &Connection, cmd: CertCommand) -> Result<()> {
    match cmd {
        CertCommand::Issue(a) => {
            validate_name("device id", &a.device)?;
            let (key_pem, csr) = match (&a.key.csr, a.key.generate_key) {
                (Some(path), _) => (None, read_csr(path)?),
                (None, _) => {
                    let (k, c) = bundle::new_key_and_csr(&a.device)?;
                    (Some(k), c)
                }
            };
            let req = pb::IssueRequest {
                device_id: a.device.clone(),
                profile: a.profile.clone(),
                zone: a.zone.clone().unwrap_or_default(),
                csr,
                lifetime_seconds: a.lifetime.map(|d| d.as_secs()).unwrap_or(0),
                scope: None,
                replace_active: a.replace,
            };
            let cert = issue_and_write(conn, req, key_pem, &a.out, a.access.access()).await?;
            print_issued(&cert, &a.out);
        }
        CertCommand::List(a) => {
            let mut client = conn.ca().await?;
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_certificates(pb::ListCertificatesRequest {
                        device_id: a.device.clone().unwrap_or_default(),
                        profile: a.profile.clone().unwrap_or_default(),
                        status: match a.status {
                            None => pb::CertificateStatus::Unspecified,
                            Some(StatusArg::Active) => pb::CertificateStatus::Active,
                            Some(StatusArg::Revoked) => pb::CertificateStatus::Revoked,
                            Some(StatusArg::Suspended) => pb::CertificateStatus::Suspended,
                            Some(StatusArg::Superseded) => pb::CertificateStatus::Superseded,
                        } as i32,
                        issuer_id: a.issuer.clone().unwrap_or_default(),
                        page_size: 1000,
                        page_token: token.clone(),
                        expiring_within_seconds: a.expiring_within.map_or(0, |d| d.as_secs()),
                        serials: Vec::new(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                all.extend(page.certificates);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            match a.format {
                Format::Json => {
                    let v: Vec<_> = all.iter().map(|c| output::cert_json(c, false)).collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    let rows: Vec<_> = all.iter().map(output::cert_row).collect();
                    output::print_table(&output::CERT_HEADER, &rows);
                }
            }
        }
        CertCommand::Show(a) => {
            let mut client = conn.ca().await?;
            let c = client
                .get_certificate(pb::GetCertificateRequest { serial: a.serial })
                .await
                .map_err(status_error)?
                .into_inner();
            match a.format {
                ShowFormat::Pem => print!("{}", der_to_pem(&c.der)),
                ShowFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&output::cert_json(&c, true))?
                ),
                ShowFormat::Table => {
                    let v = output::cert_json(&c, false);
                    if let Some(map) = v.as_object() {
                        for (k, val) in map {
                            let text = match val {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            println!("{k:<18} {text}");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs `hallmark credential ...`.
pub async fn run_credential(conn: &Connection, cmd: CredentialCommand) -> Result<()> {
    match cmd {
        CredentialCommand::Create(a) => {
            validate_name("credential name", &a.name)?;
            let profile = match a.role {
                RoleArg::Admin => "admin",
                RoleArg::Provisioner => "provisioner",
                RoleArg::BrokerAgent => "broker-agent",
            };
            let scope_given = !a.zones.is_empty() || !a.profiles.is_empty();
            if matches!(a.role, RoleArg::Provisioner)
                && (a.zones.is_empty() || a.profiles.is_empty())
            {
                bail!(
                    "a provisioner credential needs --zones and --profiles (e.g. --zones field --profiles sensor,gateway)"
                );
            }
            if !matches!(a.role, RoleArg::Provisioner) && scope_given {
                bail!("--zones and --profiles apply only to --role provisioner");
            }
            let (key_pem, csr) = bundle::new_key_and_csr(&a.name)?;
            let req = pb::IssueRequest {
                device_id: a.name.clone(),
                profile: profile.to_owned(),
                zone: String::new(),
                csr,
                lifetime_seconds: a.lifetime.map(|d| d.as_secs()).unwrap_or(0),
                scope: scope_given.then(|| pb::ProvisionerScope {
                    profiles: a.profiles.clone(),
                    zones: a.zones.clone(),
                }),
                replace_active: false,
            };
            let cert = issue_and_write(conn, req, Some(key_pem), &a.out, a.access.access()).await?;
            print_issued(&cert, &a.out);
        }
    }
    Ok(())
}
