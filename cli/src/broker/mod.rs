//! `hallmark broker sync`: the agent on a broker host. It keeps the broker's CRL file and CA
//! file current and makes the broker reload, without ever handing it a bad file: Mosquitto
//! reads `crlfile` only at start and on SIGHUP, and a missing, empty or corrupt file at SIGHUP
//! turns revocation checking off (fail open). So the files are written only when there is a
//! valid, current CRL for every issuing CA of the CA file written (see [`crlset`]). CRLs come
//! pushed over `WatchCrl` (with a watchdog on the CA's heartbeat, see `watch`) and polled
//! from the HTTP distribution points whenever none came for a while. With `--dynsec` it also
//! cuts the sessions that newly revoked or suspended devices still have open (see `dynsec`).

pub mod crlset;
mod cuts;
mod dynsec;
pub mod fetch;
pub mod reload;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hallmark_core::fsutil::write_atomic;
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::revocation_client::RevocationClient;

use crlset::CrlMap;
use hallmark_core::client::{Connection, status_error};

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
    /// The broker's own certificate (its `certfile`). The broker reads it again at every
    /// reload, as its own user: the agent reloads only when that user can read it.
    #[arg(long, value_name = "FILE")]
    broker_cert: Option<PathBuf>,
    /// The broker's private key (its `keyfile`), checked like `--broker-cert`.
    #[arg(long, value_name = "FILE")]
    broker_key: Option<PathBuf>,
    /// With `--reload-command`: the user the broker runs as, whose read access to the files is
    /// checked before every reload (with `--reload-pid-file` it is the broker process's own).
    #[arg(long, value_name = "USER", conflicts_with = "reload_pid_file")]
    broker_user: Option<String>,
    /// Apply the current CRLs once and exit.
    #[arg(long)]
    once: bool,
    /// While the watch stream is down (or no CRL came within `--fresh-within`), poll the HTTP
    /// distribution points this often.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Drop the watch stream, poll and reconnect when no message (CRLs or the heartbeat the CA
    /// sends every 5 s) came within this. Raise it where a full CRL set takes longer than this
    /// to transfer.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    watch_timeout: Duration,
    /// Poll the HTTP distribution points in the background whenever no CRL came (pushed or
    /// polled) within this, even while the watch stream seems up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    fresh_within: Duration,
    /// `host:port` of the broker's TLS listener: cut the open sessions of newly revoked or
    /// suspended devices through Mosquitto's dynamic-security plugin, connecting with this
    /// agent's credential (`--cert`/`--key`). See deploy/mosquitto/README.md.
    #[arg(long, value_name = "HOST:PORT")]
    dynsec: Option<String>,
    /// Name the broker's certificate must carry (default: the host of `--dynsec`).
    #[arg(long, requires = "dynsec")]
    dynsec_server_name: Option<String>,
}

/// How long `--once` goes on cutting sessions; what is left stays for the next run.
const ONCE_CUT_BUDGET: Duration = Duration::from_secs(30);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the agent has applied: per issuer, the CRL's facts and DER, and the CA file.
struct Applied {
    crls: CrlMap,
    ca_pem: String,
}

impl Applied {
    /// Reads what the broker has now, so that nothing older is ever written over it.
    fn load(crl_file: &std::path::Path, ca_file: &std::path::Path) -> Self {
        let ca_pem = std::fs::read_to_string(ca_file).unwrap_or_default();
        let crls = crlset::load(crl_file, &ca_pem);
        Self { crls, ca_pem }
    }
}

/// How close an applied CRL is to its `nextUpdate`, for the warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Age {
    Fresh,
    /// Under a quarter of its validity left.
    Ending,
    Expired,
}

impl Age {
    fn of(c: &hallmark_core::crl::check::CheckedCrl, now: i64) -> Self {
        let left = c.next_update - now;
        if left <= 0 {
            Age::Expired
        } else if left.saturating_mul(4) < c.next_update - c.this_update {
            Age::Ending
        } else {
            Age::Fresh
        }
    }
}

struct Agent {
    args: SyncArgs,
    /// How the broker is made to reload, and the user to check its files as (when it is not
    /// that of the broker's process).
    trigger: reload::Trigger,
    broker_user: Option<reload::BrokerUser>,
    applied: Applied,
    /// With `--dynsec`: serials newly listed on an applied CRL whose devices' sessions are
    /// still to be cut (by the cutter, beside this loop).
    cuts: Option<cuts::CutQueue>,
    /// The files were written but the broker could not be made to reload them.
    reload_pending: bool,
    /// systemd has been told the broker's files are in place.
    ready: bool,
    /// ETag of the last body each distribution point gave that was applied.
    etags: HashMap<String, String>,
    /// Per issuer: the CRL number and age last warned about.
    warned: BTreeMap<Vec<u8>, (u64, Age)>,
}

impl Agent {
    /// Checks `crls` against `ca_pem` and, when anything is newer, writes the CRL file and then
    /// the CA file (temp file + fsync + rename) and reloads the broker. Bad or older CRLs are
    /// refused one by one. Nothing is written unless every issuing CA of the CA file to be
    /// written has a valid, current CRL: a new trust bundle without one is held back (the CRLs
    /// are still written if they complete the CA file the broker has), and without any
    /// complete set the broker keeps its last good files and the error names the issuers.
    fn apply(&mut self, crls: &[Vec<u8>], ca_pem: &str) -> Result<bool> {
        if crlset::certs_of(ca_pem).is_empty() {
            bail!("the trust bundle holds no certificate; nothing applied");
        }
        let t = now();
        let ca_changed = ca_pem != self.applied.ca_pem;
        let merged = crlset::merge(&self.applied.crls, crls, ca_pem, ca_changed, t);
        for line in &merged.refused {
            eprintln!("{line}");
        }
        let (merged, write_ca) = match crlset::complete(&merged.crls, ca_pem, t) {
            Ok(()) => (merged, ca_changed),
            Err(new) if ca_changed && !self.applied.ca_pem.is_empty() => {
                // The broker's CA file stays; the CRLs may still complete it.
                let kept = crlset::merge(&self.applied.crls, crls, &self.applied.ca_pem, false, t);
                if let Err(old) = crlset::complete(&kept.crls, &self.applied.ca_pem, t) {
                    bail!(
                        "NOT APPLIED, the broker keeps its last good files: the new trust \
                         bundle has {new}; the CA file the broker has, {old}"
                    );
                }
                if !kept.changed {
                    bail!(
                        "NOT APPLIED, the new trust bundle is held back and the broker keeps its \
                         last good files: {new}"
                    );
                }
                eprintln!(
                    "error: holding back the new trust bundle, the broker keeps its CA file \
                     (the new CRLs complete it and are applied): {new}"
                );
                (kept, false)
            }
            Err(e) => bail!("NOT APPLIED, the broker keeps its last good files: {e}"),
        };
        if !merged.changed && !write_ca {
            if self.reload_pending && self.reload()? {
                self.reload_pending = false;
            }
            return Ok(false);
        }
        for line in &merged.taken {
            eprintln!("{line}");
        }
        // The CRL file first: extra CRLs are harmless to the CA file the broker has, while a
        // new issuing CA in the CA file needs its CRL beside it.
        write_atomic(
            &self.args.crl_file,
            crlset::to_pem(&merged.crls).as_bytes(),
            0o644,
        )
        .with_context(|| format!("writing {}", self.args.crl_file.display()))?;
        if write_ca {
            write_atomic(&self.args.broker_ca_file, ca_pem.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", self.args.broker_ca_file.display()))?;
            if !self.applied.ca_pem.is_empty() {
                // Mosquitto 2.0 reloads certificate, key and CRL file on SIGHUP, but not its
                // cafile.
                eprintln!(
                    "WARNING: the trust bundle changed; Mosquitto reads its CA file only when \
                     it starts: restart it (systemctl restart mosquitto) so that devices of a \
                     new issuing CA are accepted and those of a removed one refused"
                );
            }
            self.applied.ca_pem = ca_pem.to_owned();
        }
        self.applied.crls = merged.crls;
        // Until the broker has reloaded, no cut (a cut device could come back in) and the
        // reload is retried at the next apply.
        self.reload_pending = true;
        if let Some(queue) = &self.cuts {
            queue.add(merged.new_serials);
        }
        if self.reload()? {
            self.reload_pending = false;
        }
        Ok(true)
    }

    /// Lets the cutter at the pending serials once the broker has reloaded the CRL that lists
    /// them (a device cut before could come straight back in).
    fn release_cuts(&mut self) {
        if self.reload_pending {
            match self.reload() {
                Ok(true) => self.reload_pending = false,
                Ok(false) => return,
                Err(e) => {
                    eprintln!("error: the broker has not reloaded yet: {e:#}");
                    return;
                }
            }
        }
        if let Some(queue) = &self.cuts {
            queue.release(&self.applied.ca_pem);
        }
    }

    /// Whether the broker's CRL and CA files on disk form a complete, current set (written by
    /// this agent, or before it started): a broker may start with them.
    fn files_in_place(&self) -> bool {
        !self.applied.ca_pem.is_empty()
            && crlset::complete(&self.applied.crls, &self.applied.ca_pem, now()).is_ok()
    }

    /// Tells systemd, once, that the broker may start: when the files on disk form a complete,
    /// current set.
    fn announce_ready(&mut self) {
        if !self.ready && self.files_in_place() {
            self.ready = true;
            notify_ready();
        }
    }

    /// Makes the broker reload, once its user can read every file it will load again. False
    /// when the broker is still starting (the reload stays due).
    fn reload(&self) -> Result<bool> {
        let mut files = vec![
            self.args.crl_file.as_path(),
            self.args.broker_ca_file.as_path(),
        ];
        files.extend(self.args.broker_cert.as_deref());
        files.extend(self.args.broker_key.as_deref());
        Ok(
            match reload::reload(&self.trigger, self.broker_user.as_ref(), &files)? {
                reload::Reloaded::Sent => true,
                reload::Reloaded::NotRunning(why) => {
                    eprintln!(
                        "the broker is not running ({why}); it reads the files when it starts"
                    );
                    true
                }
                reload::Reloaded::Starting => {
                    eprintln!(
                        "the broker is starting (no SIGHUP handler yet); reloading it shortly"
                    );
                    false
                }
            },
        )
    }

    /// URLs of the HTTP distribution points of the applied CRLs.
    fn distribution_points(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .applied
            .crls
            .values()
            .flat_map(|(c, _)| c.distribution_points.clone())
            .collect();
        urls.sort();
        urls.dedup();
        urls
    }

    /// Polls every distribution point and applies what is new. Returns whether every one
    /// answered (the CRLs are then known to be current).
    async fn poll(&mut self) -> bool {
        let urls = self.distribution_points();
        let mut all = !urls.is_empty();
        let mut ders = Vec::new();
        let mut etags = Vec::new();
        for url in urls {
            match fetch::get(&url, self.etags.get(&url).map(String::as_str)).await {
                Ok(fetch::Fetched::NotModified) => {}
                Ok(fetch::Fetched::Body { der, etag }) => {
                    ders.push(der);
                    etags.extend(etag.map(|e| (url, e)));
                }
                Err(e) => {
                    eprintln!("polling {e:#}");
                    all = false;
                }
            }
        }
        if !ders.is_empty() {
            let ca_pem = self.applied.ca_pem.clone();
            match self.apply(&ders, &ca_pem) {
                Ok(_) => self.etags.extend(etags),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    all = false;
                }
            }
        }
        all
    }

    /// Warns loudly, once per CRL and stage, when an applied CRL has under a quarter of its
    /// validity left and again when it has expired: Mosquitto then refuses every device of
    /// that issuer.
    fn warn_expiry(&mut self) {
        let t = now();
        for (issuer, (c, _)) in &self.applied.crls {
            let age = Age::of(c, t);
            let left = c.next_update - t;
            let before = self.warned.get(issuer).copied();
            if age == Age::Fresh || before.is_some_and(|(n, a)| n == c.number && a >= age) {
                continue;
            }
            self.warned.insert(issuer.clone(), (c.number, age));
            let when = hallmark_core::clock::rfc3339(c.next_update);
            if c.root {
                // Mosquitto checks device certificates only: a root's CRL is for verifiers that
                // check the whole chain.
                eprintln!(
                    "WARNING: the applied CRL of root `{}` (number {}) {} {when} and no newer \
                     one came from the CA: verifiers that check the whole chain refuse every \
                     certificate below this root once it has expired (Mosquitto does not check \
                     it); the CA operator signs a new one with `hallmark-ca issuer root-crl`",
                    c.issuer_name,
                    c.number,
                    if age == Age::Expired {
                        "EXPIRED at"
                    } else {
                        "reaches its nextUpdate at"
                    },
                );
            } else if age == Age::Expired {
                eprintln!(
                    "error: the applied CRL of `{}` (number {}) EXPIRED at {when}: Mosquitto \
                     refuses every device of this issuer until a newer CRL is applied; no newer \
                     one came from the CA or its distribution points, check both",
                    c.issuer_name, c.number
                );
            } else {
                eprintln!(
                    "WARNING: the applied CRL of `{}` (number {}) reaches its nextUpdate at \
                     {when}, in {}: under a quarter of its validity is left and no newer CRL \
                     came from the CA or its distribution points; when it expires Mosquitto \
                     refuses every device of this issuer",
                    c.issuer_name,
                    c.number,
                    humantime::format_duration(Duration::from_secs(left as u64 / 60 * 60))
                );
            }
        }
    }
}

/// The CA's trust bundle (roots, then issuing CAs), PEM.
pub async fn trust_bundle(conn: &Connection) -> Result<String> {
    let mut ca = CertificateAuthorityClient::new(conn.channel().await?);
    let t = ca
        .get_trust_bundle(pb::GetTrustBundleRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let bundle = format!("{}{}", t.roots_pem, t.intermediates_pem);
    // Mosquitto trusts whatever lands in its CA file: only CAs chaining to the agent's own.
    hallmark_core::trust::check_against_file(conn.trust_bundle_path()?, bundle.as_bytes())?;
    Ok(bundle)
}

/// The CA's current CRL set, within the time and size limits of [`fetch`].
pub async fn current_crls(conn: &Connection) -> Result<pb::CrlSet> {
    let call = async {
        RevocationClient::new(conn.channel().await?)
            .max_decoding_message_size(fetch::MAX_CRL_SET_BYTES)
            .get_crl(pb::GetCrlRequest {})
            .await
            .map_err(|s| anyhow::Error::new(status_error(s)))
    };
    Ok(tokio::time::timeout(fetch::CRL_RPC_TIMEOUT, call)
        .await
        .with_context(|| format!("no CRLs from the CA within {:?}", fetch::CRL_RPC_TIMEOUT))??
        .into_inner())
}

/// The CA's trust bundle within [`fetch::RPC_TIMEOUT`].
pub async fn trust_bundle_bounded(conn: &Connection) -> Result<String> {
    tokio::time::timeout(fetch::RPC_TIMEOUT, trust_bundle(conn))
        .await
        .with_context(|| {
            format!(
                "no trust bundle from the CA within {:?}",
                fetch::RPC_TIMEOUT
            )
        })?
}

/// Runs `hallmark broker sync`.
pub async fn run(conn: &Connection, cmd: BrokerCommand) -> Result<()> {
    let BrokerCommand::Sync(args) = cmd;
    let applied = Applied::load(&args.crl_file, &args.broker_ca_file);
    let (cuts, cut_config) = match args.dynsec.clone() {
        Some(address) => {
            let mut file = args.crl_file.clone().into_os_string();
            file.push(".pending-cuts");
            let config = cuts::CutConfig {
                address,
                server_name: args.dynsec_server_name.clone(),
            };
            (Some(cuts::CutQueue::load(file.into())), Some(config))
        }
        None => (None, None),
    };
    let trigger = match (&args.reload_pid_file, &args.reload_command) {
        (Some(f), _) => reload::Trigger::PidFile(f.clone()),
        (None, Some(c)) => reload::Trigger::Command(c.clone()),
        (None, None) => bail!("give --reload-pid-file or --reload-command"),
    };
    let broker_user = match &args.broker_user {
        Some(u) => Some(reload::BrokerUser::of_user(u).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let mut agent = Agent {
        args,
        trigger,
        broker_user,
        applied,
        cuts,
        reload_pending: false,
        ready: false,
        etags: HashMap::new(),
        warned: BTreeMap::new(),
    };
    // The files on disk may be newer than what a running broker loaded (a reload refused or
    // lost before a restart of this agent): reload once.
    agent.reload_pending = agent.files_in_place();
    if agent.args.once {
        let ca_pem = trust_bundle_bounded(conn).await?;
        let set = current_crls(conn).await?;
        let ders: Vec<Vec<u8>> = set.crls.into_iter().map(|c| c.der).collect();
        let changed = agent.apply(&ders, &ca_pem);
        agent.warn_expiry();
        agent.announce_ready();
        let changed = changed?;
        agent.release_cuts();
        if let (Some(queue), Some(config)) = (&agent.cuts, &cut_config) {
            queue.drain(conn, config, ONCE_CUT_BUDGET).await;
        }
        println!("{}", if changed { "applied" } else { "up to date" });
        return Ok(());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let (tx, mut events) = tokio::sync::mpsc::channel(2);
    let watcher = tokio::spawn(watch::run(conn.clone(), agent.args.watch_timeout, tx));
    let _stop_watcher = AbortOnDrop(watcher);
    let _stop_cutter = match (&agent.cuts, cut_config) {
        (Some(queue), Some(config)) => Some(AbortOnDrop(tokio::spawn(
            queue.clone().run(conn.clone(), config),
        ))),
        _ => None,
    };
    // A complete set already on disk: the broker can start now (systemd orders it after this
    // unit); otherwise it is told once the first complete set is written.
    agent.announce_ready();
    let mut stream_up = false;
    // When a CRL last came (pushed, or every distribution point answered a poll).
    let mut fresh = Instant::now();
    let mut next_poll = Instant::now() + agent.args.poll_interval;
    loop {
        agent.warn_expiry();
        tokio::select! {
            event = events.recv() => match event {
                Some(watch::Event::Up) => {
                    stream_up = true;
                    eprintln!("watching the CA for new CRLs");
                }
                Some(watch::Event::Crls { crls, bundle }) => {
                    // Only a set that could be applied counts: a replica sending bad sets must
                    // not hold off the polling.
                    match agent.apply(&crls, &bundle) {
                        Ok(_) => fresh = Instant::now(),
                        Err(e) => eprintln!("error: {e:#}"),
                    }
                    agent.announce_ready();
                    agent.release_cuts();
                }
                Some(watch::Event::Down(why)) => {
                    eprintln!(
                        "watch stream down: {why}; keeping the last good files, polling the \
                         distribution points"
                    );
                    stream_up = false;
                    next_poll = Instant::now();
                }
                None => bail!("the watch of the CA stopped"),
            },
            _ = tokio::time::sleep_until(next_poll.into()) => {
                if !stream_up || fresh.elapsed() >= agent.args.fresh_within {
                    if stream_up {
                        eprintln!(
                            "no CRL from the CA for {}; polling the distribution points",
                            humantime::format_duration(Duration::from_secs(
                                fresh.elapsed().as_secs()
                            ))
                        );
                    }
                    if agent.poll().await {
                        fresh = Instant::now();
                    }
                    agent.announce_ready();
                    agent.release_cuts();
                } else if agent.reload_pending {
                    // A reload refused or failed (say, the broker could not read its key):
                    // retried at every interval, so a fix by the admin takes effect at once.
                    agent.release_cuts();
                }
                next_poll = Instant::now() + agent.args.poll_interval;
            }
            _ = term.recv() => return Ok(()),
        }
    }
}

/// Tells systemd (`Type=notify`) that the broker's files are in place, so that the broker,
/// ordered after this unit, starts with them. Without `NOTIFY_SOCKET` this does nothing.
fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        eprintln!("error: telling systemd the files are in place: {e}");
    }
}

/// Stops the watch task when the agent returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crl_is_ending_under_a_quarter_of_its_validity_and_expired_at_next_update() {
        let c = hallmark_core::crl::check::CheckedCrl {
            issuer: Vec::new(),
            issuer_name: "CN=x".into(),
            number: 1,
            this_update: 0,
            next_update: 400,
            serials: Vec::new(),
            superseded: Vec::new(),
            distribution_points: Vec::new(),
            root: false,
        };
        assert_eq!(Age::of(&c, 0), Age::Fresh);
        assert_eq!(Age::of(&c, 300), Age::Fresh);
        assert_eq!(Age::of(&c, 301), Age::Ending);
        assert_eq!(Age::of(&c, 399), Age::Ending);
        assert_eq!(Age::of(&c, 400), Age::Expired);
    }
}
