//! `hallmark broker sync`: the agent on a broker host. It keeps the broker's CRL file and CA
//! file current and makes the broker reload, without ever handing it a bad file: Mosquitto
//! reads `crlfile` only at start and on SIGHUP, and a missing or corrupt file at SIGHUP turns
//! revocation checking off (fail open). With `--dynsec` it also cuts the sessions that
//! newly revoked or suspended devices still have open (see [`dynsec`]).

mod cuts;
mod dynsec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hallmark_ca::fsutil::write_atomic;
use hallmark_ca::revocation::check::{CheckedCrl, check_crl};
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::revocation_client::RevocationClient;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::client::{Connection, status_error};

/// Reconnect delays of the watch stream.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `hallmark broker`.
#[derive(Subcommand, Debug)]
pub enum BrokerCommand {
    /// Keep the broker's CRL and CA files current and reload the broker on every change.
    Sync(SyncArgs),
}

/// `hallmark broker sync`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("reload").required(true).args(["reload_pid_file", "reload_command"])))]
pub struct SyncArgs {
    /// The broker's CRL file (all issuers' CRLs, PEM).
    #[arg(long)]
    crl_file: PathBuf,
    /// The broker's CA file (the trust bundle, PEM).
    #[arg(long = "ca-file", id = "broker_ca_file")]
    broker_ca_file: PathBuf,
    /// Send SIGHUP to the process whose pid this file holds (Mosquitto's `pid_file`).
    #[arg(long)]
    reload_pid_file: Option<PathBuf>,
    /// Run this shell command to make the broker reload.
    #[arg(long)]
    reload_command: Option<String>,
    /// Apply the current CRLs once and exit.
    #[arg(long)]
    once: bool,
    /// While the watch stream is down, poll the HTTP distribution points this often.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// `host:port` of the broker's TLS listener: cut the open sessions of newly revoked or
    /// suspended devices through Mosquitto's dynamic-security plugin, connecting with this
    /// agent's credential (`--cert`/`--key`). See deploy/mosquitto/README.md.
    #[arg(long, value_name = "HOST:PORT")]
    dynsec: Option<String>,
    /// Name the broker's certificate must carry (default: the host of `--dynsec`).
    #[arg(long, requires = "dynsec")]
    dynsec_server_name: Option<String>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the agent has applied: per issuer, the CRL's facts and DER.
struct Applied {
    crls: BTreeMap<Vec<u8>, (CheckedCrl, Vec<u8>)>,
    ca_pem: String,
}

impl Applied {
    /// Reads what the broker has now, so that nothing older is ever written over it.
    fn load(crl_file: &Path, ca_file: &Path) -> Self {
        let ca_pem = std::fs::read_to_string(ca_file).unwrap_or_default();
        let issuers = certs_of(&ca_pem);
        let mut crls = BTreeMap::new();
        if let Ok(text) = std::fs::read(crl_file) {
            for der in CertificateRevocationListDer::pem_slice_iter(&text).flatten() {
                // Even a stale CRL counts for its number: the agent never goes back below it.
                if let Ok(c) = check_crl(der.as_ref(), &issuers, i64::MIN) {
                    crls.insert(c.issuer.clone(), (c, der.as_ref().to_vec()));
                }
            }
        }
        Self { crls, ca_pem }
    }
}

fn certs_of(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .flatten()
        .map(|c| c.as_ref().to_vec())
        .collect()
}

struct Agent {
    args: SyncArgs,
    applied: Applied,
    /// With `--dynsec`: serials newly listed on an applied CRL whose devices' sessions are
    /// still to be cut, and where to cut them.
    cuts: Option<(cuts::PendingCuts, cuts::CutConfig)>,
    /// The files were written but the broker could not be made to reload them.
    reload_pending: bool,
}

impl Agent {
    /// Validates `crls` against `ca_pem` and, when anything is newer, writes both files
    /// (temp file + fsync + rename) and reloads the broker. Bad or older CRLs are refused one
    /// by one; the files keep what they had for those issuers.
    fn apply(&mut self, crls: &[Vec<u8>], ca_pem: &str) -> Result<bool> {
        let issuers = certs_of(ca_pem);
        if issuers.is_empty() {
            bail!("the trust bundle holds no certificate; nothing applied");
        }
        let t = now();
        let mut next = self.applied.crls.clone();
        let mut changed = false;
        let mut new_serials = Vec::new();
        for der in crls {
            match check_crl(der, &issuers, t) {
                Err(e) => eprintln!("refused a CRL: {e}"),
                Ok(c) => match next.get(&c.issuer) {
                    Some((old, _)) if c.number < old.number => eprintln!(
                        "refused the CRL of `{}`: number {} is lower than the applied {}",
                        c.issuer_name, c.number, old.number
                    ),
                    Some((old, _)) if c.number == old.number => {}
                    Some((old, _)) => {
                        eprintln!(
                            "applying CRL of `{}`: number {}, {} entries, {}s old",
                            c.issuer_name,
                            c.number,
                            c.serials.len(),
                            t - c.this_update
                        );
                        // Entries new on this CRL, but not those replaced by a newer certificate
                        // (re-provisioning): their devices are connected with the new one.
                        new_serials.extend(
                            c.serials
                                .iter()
                                .filter(|s| old.serials.binary_search(s).is_err())
                                .filter(|s| c.superseded.binary_search(s).is_err())
                                .cloned(),
                        );
                        next.insert(c.issuer.clone(), (c, der.clone()));
                        changed = true;
                    }
                    None => {
                        // The first CRL of an issuer is the baseline: cutting every session
                        // its entries ever had would only make devices reconnect.
                        eprintln!(
                            "applying the first CRL of `{}`: number {}, {} entries (sessions are \
                             cut for entries added from now on)",
                            c.issuer_name,
                            c.number,
                            c.serials.len()
                        );
                        next.insert(c.issuer.clone(), (c, der.clone()));
                        changed = true;
                    }
                },
            }
        }
        let ca_changed = ca_pem != self.applied.ca_pem;
        if !changed && !ca_changed {
            if self.reload_pending {
                self.reload()?;
                self.reload_pending = false;
            }
            return Ok(false);
        }
        if ca_changed {
            write_atomic(&self.args.broker_ca_file, ca_pem.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", self.args.broker_ca_file.display()))?;
        }
        let pem: String = next
            .values()
            .map(|(_, der)| {
                pem::encode_config(
                    &pem::Pem::new("X509 CRL", der.clone()),
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                )
            })
            .collect();
        write_atomic(&self.args.crl_file, pem.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", self.args.crl_file.display()))?;
        self.applied = Applied {
            crls: next,
            ca_pem: ca_pem.to_owned(),
        };
        if let Some((pending, _)) = &mut self.cuts {
            pending.add(new_serials)?;
        }
        // Until the broker has reloaded, no cut (a cut device could come back in) and the
        // reload is retried at the next apply.
        self.reload_pending = true;
        self.reload()?;
        self.reload_pending = false;
        Ok(true)
    }

    /// Cuts the open sessions of the devices of the pending serials, once the broker has
    /// reloaded the CRL that lists them.
    async fn cut_sessions(&mut self, conn: &Connection) {
        if self.reload_pending {
            match self.reload() {
                Ok(()) => self.reload_pending = false,
                Err(e) => {
                    eprintln!("the broker has not reloaded yet: {e:#}");
                    return;
                }
            }
        }
        if let Some((pending, config)) = &mut self.cuts {
            pending.cut(conn, config, &self.applied.ca_pem).await;
        }
    }

    fn reload(&self) -> Result<()> {
        if let Some(pid_file) = &self.args.reload_pid_file {
            let text = std::fs::read_to_string(pid_file)
                .with_context(|| format!("reading pid file {}", pid_file.display()))?;
            let pid: i32 = text
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold a pid", pid_file.display()))?;
            let pid = rustix::process::Pid::from_raw(pid)
                .with_context(|| format!("pid {pid} in {} is not valid", pid_file.display()))?;
            rustix::process::kill_process(pid, rustix::process::Signal::HUP)
                .with_context(|| format!("sending SIGHUP to {}", pid.as_raw_nonzero()))?;
        } else if let Some(cmd) = &self.args.reload_command {
            let status = std::process::Command::new("sh")
                .args(["-c", cmd])
                .status()
                .with_context(|| format!("running `{cmd}`"))?;
            if !status.success() {
                bail!("reload command `{cmd}` failed: {status}");
            }
        }
        Ok(())
    }

    /// URLs of the HTTP distribution points of the applied CRLs.
    fn distribution_points(&self) -> Vec<String> {
        self.applied
            .crls
            .values()
            .flat_map(|(c, _)| c.distribution_points.clone())
            .collect()
    }
}

async fn http_get(url: &str) -> Result<Vec<u8>> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<hyper::body::Bytes>>();
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .context("timed out")??;
    if !resp.status().is_success() {
        bail!("{url}: HTTP {}", resp.status());
    }
    Ok(resp.into_body().collect().await?.to_bytes().to_vec())
}

async fn trust_bundle(conn: &Connection) -> Result<String> {
    let mut ca = CertificateAuthorityClient::new(conn.channel().await?);
    let t = ca
        .get_trust_bundle(pb::GetTrustBundleRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let bundle = format!("{}{}", t.roots_pem, t.intermediates_pem);
    // Mosquitto trusts whatever lands in its CA file: only CAs chaining to the agent's own.
    hallmark_cli::trust::check_against_file(conn.trust_bundle_path()?, bundle.as_bytes())?;
    Ok(bundle)
}

/// Follows the watch stream until it ends or fails.
async fn follow(conn: &Connection, agent: &mut Agent, connected: &mut bool) -> Result<()> {
    let mut client = RevocationClient::new(conn.channel().await?);
    let mut stream = client
        .watch_crl(pb::WatchCrlRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    eprintln!("watching the CA for new CRLs");
    *connected = true;
    while let Some(set) = stream.message().await.map_err(status_error)? {
        let ca_pem = trust_bundle(conn).await?;
        let ders: Vec<Vec<u8>> = set.crls.into_iter().map(|c| c.der).collect();
        if let Err(e) = agent.apply(&ders, &ca_pem) {
            eprintln!("could not apply: {e:#}");
        }
        agent.cut_sessions(conn).await;
    }
    bail!("the CA closed the watch stream")
}

/// Runs `hallmark broker sync`.
pub async fn run(conn: &Connection, cmd: BrokerCommand) -> Result<()> {
    let BrokerCommand::Sync(args) = cmd;
    let applied = Applied::load(&args.crl_file, &args.broker_ca_file);
    let cuts = args.dynsec.clone().map(|address| {
        let mut file = args.crl_file.clone().into_os_string();
        file.push(".pending-cuts");
        (
            cuts::PendingCuts::load(file.into()),
            cuts::CutConfig {
                address,
                server_name: args.dynsec_server_name.clone(),
            },
        )
    });
    let mut agent = Agent {
        args,
        applied,
        cuts,
        reload_pending: false,
    };
    if agent.args.once {
        let ca_pem = trust_bundle(conn).await?;
        let mut client = RevocationClient::new(conn.channel().await?);
        let set = client
            .get_crl(pb::GetCrlRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        let ders: Vec<Vec<u8>> = set.crls.into_iter().map(|c| c.der).collect();
        let changed = agent.apply(&ders, &ca_pem)?;
        agent.cut_sessions(conn).await;
        println!("{}", if changed { "applied" } else { "up to date" });
        return Ok(());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut backoff = BACKOFF_START;
    loop {
        let mut connected = false;
        let started = Instant::now();
        tokio::select! {
            r = follow(conn, &mut agent, &mut connected) => {
                if let Err(e) = r {
                    eprintln!("watch stream down: {e:#}; keeping the last good files");
                }
            }
            _ = term.recv() => return Ok(()),
        }
        if connected && started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_START;
        }
        // While the stream is down: poll the HTTP distribution points, then reconnect.
        let deadline = Instant::now() + backoff;
        loop {
            let urls = agent.distribution_points();
            let mut ders = Vec::new();
            for url in &urls {
                match http_get(url).await {
                    Ok(der) => ders.push(der),
                    Err(e) => eprintln!("polling {url}: {e:#}"),
                }
            }
            if !ders.is_empty() {
                let ca_pem = agent.applied.ca_pem.clone();
                if let Err(e) = agent.apply(&ders, &ca_pem) {
                    eprintln!("could not apply: {e:#}");
                }
            }
            agent.cut_sessions(conn).await;
            let wait = agent
                .args
                .poll_interval
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = term.recv() => return Ok(()),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
