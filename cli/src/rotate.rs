//! `hallmark rotate`: renew a credential bundle with a new key over mutual TLS, once, as a
//! daemon, or for every bundle under a directory. The bundle directory is replaced atomically,
//! so a crash never leaves a key beside a certificate it does not belong to.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use hallmark_core::bundle::{self, BundleAccess, CredentialBundle};
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use indicatif::{ProgressBar, ProgressStyle};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::BundleAccessArgs;
use crate::output::time_text;
use hallmark_core::client::{Connection, status_error};

/// Share of the lifetime after which a certificate is due for renewal.
const RENEW_AT: f64 = 2.0 / 3.0;
/// Random spread of the daemon's renewal time, as a share of the lifetime (either way).
const JITTER: f64 = 0.05;
/// Retry delays of the daemon after a failed renewal.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// `hallmark rotate`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["bundle", "all"])))]
pub struct RotateArgs {
    /// The credential bundle directory to renew.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Renew every bundle (directory with cert.pem and key.pem) under this directory.
    #[arg(long, conflicts_with = "daemon")]
    all: Option<PathBuf>,
    /// With --all: renew the bundles expiring within this time (e.g. 7d), due or not.
    #[arg(long, requires = "all", value_parser = humantime::parse_duration)]
    expiring_within: Option<Duration>,
    /// Renew now, even outside the renewal window (still at most once per the profile's
    /// minimum renewal interval).
    #[arg(long)]
    force: bool,
    /// The current key may be exposed: renew now with a new key and have the CA revoke the
    /// current certificate as keyCompromise in the same step. Allowed once per the profile's
    /// minimum renewal interval, even inside it.
    #[arg(long, conflicts_with = "daemon")]
    key_compromise: bool,
    /// Keep running: renew at about 2/3 of every lifetime, retry with backoff, stop on SIGTERM.
    #[arg(long, requires = "bundle")]
    daemon: bool,
    /// With --all: bundles renewed at the same time.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Without these, a renewed bundle keeps the owner, group and modes of the bundle it
    /// replaces (directory and each file); given, they change them on this renewal.
    #[command(flatten)]
    access: BundleAccessArgs,
    /// After a renewal, make the service that uses the bundle (e.g. Mosquitto, whose own
    /// certificate it is) reload it: SIGHUP to the process whose pid this file holds, once the
    /// new files are in place and that process's user can read every one of them.
    #[arg(long, value_name = "FILE", requires = "bundle")]
    reload_pid_file: Option<PathBuf>,
    /// Like `--reload-pid-file`, but run this shell command (e.g. `systemctl reload
    /// mosquitto`); the files are checked as `--service-user` when given.
    #[arg(
        long,
        value_name = "CMD",
        requires = "bundle",
        conflicts_with = "reload_pid_file"
    )]
    reload_command: Option<String>,
    /// With `--reload-command`: the user the service runs as.
    #[arg(long, value_name = "USER", requires = "reload_command")]
    service_user: Option<String>,
}

/// How the service using a renewed bundle is made to reload it.
struct ServiceReload {
    trigger: hallmark_cli::broker::reload::Trigger,
    user: Option<hallmark_cli::broker::reload::BrokerUser>,
}

impl ServiceReload {
    fn from_args(a: &RotateArgs) -> Result<Option<Self>> {
        use hallmark_cli::broker::reload::{BrokerUser, Trigger};
        let trigger = match (&a.reload_pid_file, &a.reload_command) {
            (Some(f), _) => Trigger::PidFile(f.clone()),
            (None, Some(c)) => Trigger::Command(c.clone()),
            (None, None) => return Ok(None),
        };
        let user = match &a.service_user {
            Some(u) => Some(BrokerUser::of_user(u).map_err(anyhow::Error::msg)?),
            None => None,
        };
        Ok(Some(Self { trigger, user }))
    }

    /// Reloads the service after `dir` was renewed; an error says the renewal stands but the
    /// service still runs on the files it loaded before.
    fn after_renewal(&self, dir: &Path) -> Result<()> {
        use hallmark_cli::broker::reload::{Reloaded, reload};
        let files: Vec<PathBuf> = [
            bundle::CERT_FILE,
            bundle::CHAIN_FILE,
            bundle::KEY_FILE,
            bundle::CA_FILE,
        ]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
        let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        // A service still starting has no SIGHUP handler yet (a SIGHUP would kill it): wait
        // for it, 10 s at most; it is loading files that are already the new ones anyway.
        let mut outcome = reload(&self.trigger, self.user.as_ref(), &files);
        for _ in 0..50 {
            if !matches!(outcome, Ok(Reloaded::Starting)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            outcome = reload(&self.trigger, self.user.as_ref(), &files);
        }
        match outcome {
            Ok(Reloaded::Sent) => {
                println!("{}: reloaded the service that uses it", dir.display());
                Ok(())
            }
            Ok(Reloaded::NotRunning(why)) => {
                println!(
                    "{}: the service is not running ({why}); it loads the new files when it starts",
                    dir.display()
                );
                Ok(())
            }
            Ok(Reloaded::Starting) => {
                println!(
                    "{}: the service is starting; it loads the new files now",
                    dir.display()
                );
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("{}: renewed, but not reloaded", dir.display()))),
        }
    }
}

/// Validity of the bundle's certificate.
#[derive(Debug, Clone, Copy)]
struct Validity {
    not_before: i64,
    not_after: i64,
}

impl Validity {
    fn renew_from(&self) -> i64 {
        self.not_before + ((self.not_after - self.not_before) as f64 * RENEW_AT) as i64
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn read_validity(dir: &Path) -> Result<(Validity, String)> {
    let path = dir.join(bundle::CERT_FILE);
    let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
    let (_, cert) = X509Certificate::from_der(&p.contents)
        .map_err(|e| anyhow::anyhow!("{}: not a certificate: {e}", path.display()))?;
    let v = cert.validity();
    Ok((
        Validity {
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
        },
        hex::encode(cert.raw_serial()),
    ))
}

/// What one rotation did.
#[derive(Debug)]
enum Outcome {
    Rotated {
        old: String,
        new: String,
        not_after: i64,
    },
    NotDue {
        serial: String,
        renew_from: i64,
        not_after: i64,
    },
}

/// How a bundle is renewed.
#[derive(Debug, Clone, Copy, Default)]
struct Renewal {
    /// Renew even before the renewal window opens.
    force: bool,
    /// Have the CA revoke the current certificate as keyCompromise (implies `force`).
    key_compromise: bool,
    /// Owner, group and key mode asked for (the rest is inherited).
    access: BundleAccess,
}

async fn rotate_bundle(conn: &Connection, dir: &Path, how: Renewal) -> Result<Outcome> {
    let (validity, serial) = read_validity(dir)?;
    if !(how.force || how.key_compromise) && now() < validity.renew_from() {
        return Ok(Outcome::NotDue {
            serial,
            renew_from: validity.renew_from(),
            not_after: validity.not_after,
        });
    }
    let current = CredentialBundle::read(dir)
        .with_context(|| format!("reading the bundle in {}", dir.display()))?;
    // The bundle's own trust bundle verifies the CA unless one was given explicitly.
    let mut conn = conn.clone();
    if conn.ca_file.is_none() {
        conn.ca_file = Some(dir.join(bundle::CA_FILE));
    }
    let identity = Some((
        current.cert_pem.clone().into_bytes(),
        current.key_pem.clone().into_bytes(),
    ));
    let mut client = CertificateAuthorityClient::new(conn.channel_with(identity).await?);
    let (key_pem, csr) = bundle::new_key_and_csr("renewal")?;
    let resp = client
        .renew(pb::RenewRequest {
            csr,
            lifetime_seconds: 0,
            key_compromise: how.key_compromise,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let cert = resp
        .certificate
        .context("the CA answered without a certificate")?;
    hallmark_core::trust::check_against_file(
        conn.trust_bundle_path()?,
        resp.trust_bundle_pem.as_bytes(),
    )?;
    let renewed = CredentialBundle {
        key_pem,
        cert_pem: hallmark_core::pem::der_to_pem(&cert.der),
        chain_pem: resp.chain_pem,
        ca_pem: resp.trust_bundle_pem,
    };
    renewed.write_with(dir, how.access)?;
    // Use the new credential once: from then on the CA refuses renewals with the old
    // certificate, so a copy of the old key cannot mint. A failure here changes nothing saved.
    if let Err(e) = first_use(&conn, &renewed, &cert.serial).await {
        eprintln!(
            "{}: renewed, but the new certificate could not be checked with the CA yet: {e:#}",
            dir.display()
        );
    }
    Ok(Outcome::Rotated {
        old: serial,
        new: cert.serial,
        not_after: cert.not_after,
    })
}

/// One authenticated call with the renewed credential (reads its own certificate back).
async fn first_use(conn: &Connection, renewed: &CredentialBundle, serial: &str) -> Result<()> {
    let identity = Some((
        renewed.cert_pem.clone().into_bytes(),
        renewed.key_pem.clone().into_bytes(),
    ));
    let mut client = CertificateAuthorityClient::new(conn.channel_with(identity).await?);
    client
        .get_certificate(pb::GetCertificateRequest {
            serial: serial.to_owned(),
        })
        .await
        .map_err(status_error)?;
    Ok(())
}

fn jitter(lifetime: i64) -> i64 {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0;
    }
    let unit = (u64::from_le_bytes(b) as f64 / u64::MAX as f64) * 2.0 - 1.0; // -1..1
    (unit * JITTER * lifetime as f64) as i64
}

async fn daemon(
    conn: &Connection,
    dir: &Path,
    access: BundleAccess,
    service: Option<&ServiceReload>,
) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut backoff = BACKOFF_START;
    let mut next_attempt: Option<i64> = None;
    loop {
        let (validity, serial) = read_validity(dir)?;
        let lifetime = validity.not_after - validity.not_before;
        let due = next_attempt.unwrap_or_else(|| validity.renew_from() + jitter(lifetime));
        let wait = (due - now()).max(0) as u64;
        if wait > 0 {
            eprintln!(
                "certificate {serial} valid until {}; next renewal at {}",
                time_text(validity.not_after),
                time_text(due)
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            _ = term.recv() => {
                eprintln!("SIGTERM: stopping");
                return Ok(());
            }
        }
        let how = Renewal {
            force: true,
            key_compromise: false,
            access,
        };
        match rotate_bundle(conn, dir, how).await {
            Ok(outcome) => {
                report(dir, &outcome);
                if let (Some(service), Outcome::Rotated { .. }) = (service, &outcome) {
                    // The renewal stands; the service keeps the files it loaded, and the
                    // error repeats at every renewal until its user can read the bundle.
                    if let Err(e) = service.after_renewal(dir) {
                        eprintln!("error: {e:#}");
                    }
                }
                backoff = BACKOFF_START;
                next_attempt = None;
            }
            Err(e) => {
                eprintln!("renewal failed: {e:#}; retrying in {}s", backoff.as_secs());
                // Retry with backoff; before the expiry never sleep past it, after it keep
                // backing off (an expired certificate cannot renew: re-enroll the device).
                let t = now();
                let mut retry = t + backoff.as_secs() as i64;
                if t < validity.not_after {
                    retry = retry.min(validity.not_after);
                }
                next_attempt = Some(retry);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn report(dir: &Path, outcome: &Outcome) {
    match outcome {
        Outcome::Rotated {
            old,
            new,
            not_after,
        } => println!(
            "{}: renewed {old} -> {new}, valid until {}",
            dir.display(),
            time_text(*not_after)
        ),
        Outcome::NotDue {
            serial,
            renew_from,
            not_after,
        } => println!(
            "{}: certificate {serial} is valid until {} and not due; the renewal window opens at {} \
             (use --force to renew now)",
            dir.display(),
            time_text(*not_after),
            time_text(*renew_from)
        ),
    }
}

/// Bundle directories under `root` (those holding cert.pem and key.pem), sorted.
fn find_bundles(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        let mut has_cert = false;
        let mut has_key = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ty = entry.file_type()?;
            if ty.is_dir() && !name.starts_with('.') {
                stack.push(entry.path());
            } else if name == bundle::CERT_FILE {
                has_cert = true;
            } else if name == bundle::KEY_FILE {
                has_key = true;
            }
        }
        if has_cert || has_key {
            found.push(dir);
        }
    }
    found.sort();
    Ok(found)
}

async fn rotate_all(conn: &Connection, a: &RotateArgs, root: &Path) -> Result<()> {
    let bundles = find_bundles(root)?;
    if bundles.is_empty() {
        bail!(
            "no credential bundles (cert.pem + key.pem) under {}",
            root.display()
        );
    }
    let bar = ProgressBar::new(bundles.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} bundles {elapsed} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let horizon = a.expiring_within.map(|d| now() + d.as_secs() as i64);
    let results: Vec<(PathBuf, Result<Outcome>)> = futures::stream::iter(bundles)
        .map(|dir| {
            let bar = bar.clone();
            async move {
                let force = a.force
                    || match (horizon, read_validity(&dir)) {
                        (Some(h), Ok((v, _))) => v.not_after <= h,
                        _ => false,
                    };
                let how = Renewal {
                    force,
                    key_compromise: a.key_compromise,
                    access: a.access.access(),
                };
                let r = rotate_bundle(conn, &dir, how).await;
                bar.inc(1);
                (dir, r)
            }
        })
        .buffer_unordered(a.jobs.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let (mut rotated, mut not_due, mut failed) = (0, 0, Vec::new());
    for (dir, r) in &results {
        match r {
            Ok(Outcome::Rotated { .. }) => rotated += 1,
            Ok(Outcome::NotDue { .. }) => not_due += 1,
            Err(e) => failed.push(format!("{}: {e:#}", dir.display())),
        }
    }
    failed.sort();
    for f in &failed {
        eprintln!("failed: {f}");
    }
    println!(
        "{} bundles: {rotated} renewed, {not_due} not due, {} failed",
        results.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("{} bundles could not be renewed", failed.len());
    }
    Ok(())
}

/// Runs `hallmark rotate`.
pub async fn run(conn: &Connection, a: RotateArgs) -> Result<()> {
    if let Some(root) = &a.all {
        return rotate_all(conn, &a, root).await;
    }
    let dir = a.bundle.clone().context("--bundle DIR or --all ROOT")?;
    let service = ServiceReload::from_args(&a)?;
    if a.daemon {
        return daemon(conn, &dir, a.access.access(), service.as_ref()).await;
    }
    let how = Renewal {
        force: a.force,
        key_compromise: a.key_compromise,
        access: a.access.access(),
    };
    let outcome = rotate_bundle(conn, &dir, how).await?;
    report(&dir, &outcome);
    if let (Some(service), Outcome::Rotated { .. }) = (&service, &outcome) {
        service.after_renewal(&dir)?;
    }
    Ok(())
}
