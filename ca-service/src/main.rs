//! `hallmark-ca`: the online certificate authority.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use hallmark_ca::bootstrap::{self, ImportIssuing, InitOptions, InitReport};
use hallmark_ca::clock::SystemClock;
use hallmark_ca::config::Config;
use hallmark_ca::hierarchy::{self, RevokeIssuerOptions, RootKeyOptions};
use hallmark_ca::keys::{Passphrase, file::PASSPHRASE_ENV};
use hallmark_ca::server::{self, ServeOptions};

#[derive(Parser)]
#[command(
    name = "hallmark-ca",
    version,
    about = "Hallmark certificate authority for device identities"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API and the HTTP side (initialises an empty data dir first).
    Serve(ServeArgs),
    /// Initialise a data dir: root and issuing CA, API server certificate, first admin.
    Init(InitArgs),
    /// Issuing CAs: roll over to a new one, revoke one, list them; sign the root's CRL.
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// Admin credentials made on the CA host (break-glass).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Health check for exec probes: grpc.health.v1 over TLS, the server certificate verified
    /// against the trust bundle; exit 0 on SERVING.
    Probe(hallmark_ca::probe::ProbeArgs),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Break-glass: make a new admin credential on the CA host from the data dir, also while
    /// the CA runs (it works at once). For when no valid admin credential is left or at hand;
    /// recorded and audited like any issuance (actor `system:admin-create`). Afterwards,
    /// revoke the credential it replaces if that one is lost or exposed.
    Create(AdminCreateArgs),
}

#[derive(Args)]
struct AdminCreateArgs {
    #[command(flatten)]
    common: Common,
    /// Name (CN) of the new admin credential: a new name, or that of an active admin.
    #[arg(long)]
    name: String,
    /// Directory to write the credential bundle to (cert.pem, key.pem, chain.pem, ca.pem); it
    /// must not hold a credential.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum IssuerCommand {
    /// Create a new issuing CA signed by the root and sign with it from now on; the old one
    /// stays valid and trusted until it expires. A running CA switches within seconds.
    Rotate(IssuerRotateArgs),
    /// Revoke a retired issuing CA: a new CRL of the root lists it (signed with the root key),
    /// it signs nothing more, leaves the trust bundle, and every certificate it signed is
    /// refused from then on (devices enroll again). Roll over first (`issuer rotate`) and give
    /// admins and broker agents credentials of the new issuing CA: the last valid admin
    /// credential is never taken. A running CA serves the new root CRL within seconds.
    Revoke(IssuerRevokeArgs),
    /// Sign a fresh CRL of the root and store it for the CA to serve: for a root key kept
    /// offline, before the served one reaches its nextUpdate (the CA warns when under a
    /// quarter of `root_crl_validity` is left). With the root key in the data dir the CA does
    /// it itself.
    RootCrl(IssuerRotateArgs),
    /// List root and issuing CAs.
    List(IssuerListArgs),
}

#[derive(Args)]
struct IssuerRotateArgs {
    #[command(flatten)]
    common: Common,
    /// The root CA key (default: ca/root.key in the data dir, if it was kept there).
    #[arg(long)]
    root_key: Option<PathBuf>,
    /// Passphrase file of the root key, when it differs from --passphrase-file.
    #[arg(long)]
    root_passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
struct IssuerRevokeArgs {
    /// The issuing CA: its id (`issuing-1a2b3c4d`, see `issuer list`) or its serial (hex).
    issuer: String,
    /// Why (RFC 5280): unspecified, key-compromise, ca-compromise, affiliation-changed,
    /// superseded, cessation-of-operation (RFC 5280 spellings such as cACompromise work too).
    #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
    reason: IssuerReason,
    #[command(flatten)]
    root: IssuerRotateArgs,
}

/// The RFC 5280 reason code of an issuing CA's revocation; `None` for unspecified.
#[derive(Clone, Copy, Debug)]
struct IssuerReason(Option<i64>);

/// An RFC 5280 reason by name.
fn parse_reason(given: &str) -> Result<IssuerReason, String> {
    let name: String = given
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    Ok(IssuerReason(Some(match name.as_str() {
        "unspecified" => return Ok(IssuerReason(None)),
        "keycompromise" => 1,
        "cacompromise" => 2,
        "affiliationchanged" => 3,
        "superseded" => 4,
        "cessationofoperation" => 5,
        _ => {
            return Err(format!(
                "`{given}` is not a reason for an issuing CA; use unspecified, key-compromise, \
                 ca-compromise, affiliation-changed, superseded or cessation-of-operation"
            ));
        }
    })))
}

#[derive(Args)]
struct IssuerListArgs {
    /// Data directory.
    #[arg(long, default_value = "./hallmark-data", env = "HALLMARK_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    database: DatabaseArg,
}

#[derive(Args)]
struct DatabaseArg {
    /// PostgreSQL database of the CA (postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=...]),
    /// for several replicas on one database; without it, the SQLite file in the data dir.
    #[arg(long, env = "HALLMARK_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl DatabaseArg {
    /// The database the URL names; only PostgreSQL URLs are taken (SQLite needs none).
    fn database(&self) -> Result<Option<hallmark_ca::store::Database>> {
        let Some(url) = &self.database_url else {
            return Ok(None);
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!(
                "--database-url (or HALLMARK_DATABASE_URL) must be a postgres:// URL; leave it \
                 out to use the SQLite database in the data dir"
            );
        }
        Ok(Some(hallmark_ca::store::Database::Postgres(url.clone())))
    }
}

#[derive(Args)]
struct Common {
    /// Data directory (database, CA certificates and keys, admin credential).
    #[arg(long, default_value = "./hallmark-data", env = "HALLMARK_DATA_DIR")]
    data_dir: PathBuf,
    /// Configuration file (TOML); all settings have defaults.
    #[arg(long, env = "HALLMARK_CONFIG")]
    config: Option<PathBuf>,
    /// File holding the passphrase that encrypts CA keys at rest (else HALLMARK_CA_PASSPHRASE).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseArg,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// gRPC listen address (overrides the config file).
    #[arg(long)]
    grpc_listen: Option<std::net::SocketAddr>,
    /// HTTP listen address (overrides the config file).
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct InitArgs {
    #[command(flatten)]
    common: Common,
    /// Write the new root CA key to this file instead of the data dir, to keep it offline.
    #[arg(long, conflicts_with = "import_issuing_cert")]
    root_key_out: Option<PathBuf>,
    /// Import this issuing CA certificate (PEM, pathlen 0) instead of creating a hierarchy.
    #[arg(long, requires_all = ["import_issuing_key", "import_root_cert"])]
    import_issuing_cert: Option<PathBuf>,
    /// Key of the imported issuing CA (PKCS#8 PEM).
    #[arg(long, requires = "import_issuing_cert")]
    import_issuing_key: Option<PathBuf>,
    /// Root CA certificate (PEM) that signed the imported issuing CA.
    #[arg(long, requires = "import_issuing_cert")]
    import_root_cert: Option<PathBuf>,
}

fn load_config(common: &Common) -> Result<Config> {
    let mut config = match &common.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.database = common.database.database()?;
    Ok(config)
}

/// The passphrase of the CA keys, from --passphrase-file or the environment.
fn read_passphrase(common: &Common) -> Result<Option<Passphrase>> {
    Ok(match &common.passphrase_file {
        Some(f) => Some(Passphrase::from_file(f)?),
        None => Passphrase::from_env()?,
    })
}

fn passphrase(common: &Common) -> Result<Option<Passphrase>> {
    let p = read_passphrase(common)?;
    if p.is_none() {
        tracing::warn!(
            "CA keys are kept unencrypted (mode 0600); give --passphrase-file or {PASSPHRASE_ENV} to encrypt them"
        );
    }
    Ok(p)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

fn print_client_setup(data_dir: &Path, grpc: std::net::SocketAddr) {
    let dir = absolute(data_dir);
    let host = if grpc.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if grpc.is_ipv6() {
        format!("[{}]", grpc.ip())
    } else {
        grpc.ip().to_string()
    };
    println!("Point the hallmark CLI at this CA with the first admin credential:");
    println!("  export HALLMARK_ENDPOINT=https://{host}:{}", grpc.port());
    println!(
        "  export HALLMARK_CERT={}",
        dir.join("admin/cert.pem").display()
    );
    println!(
        "  export HALLMARK_KEY={}",
        dir.join("admin/key.pem").display()
    );
    println!(
        "  export HALLMARK_CA={}",
        dir.join("trust-bundle.pem").display()
    );
}

fn print_init(report: &InitReport) {
    println!("Initialised a new CA.");
    println!(
        "  admin credential: {}",
        absolute(&report.admin_dir).display()
    );
    println!(
        "  trust bundle:     {}",
        absolute(&report.trust_bundle).display()
    );
    if let Some(k) = &report.root_key {
        println!(
            "  root CA key:      {} (move it offline; it is needed only to sign a new issuing CA)",
            absolute(k).display()
        );
    }
    if !report.encrypted {
        println!("  CA keys are NOT encrypted at rest; use --passphrase-file to encrypt them.");
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut config = load_config(&args.common)?;
    if let Some(a) = args.grpc_listen {
        config.grpc_listen = a;
    }
    if let Some(a) = args.http_listen {
        config.http_listen = a;
    }
    // Every connection is a file descriptor: a soft limit of 1024 is below the connection caps.
    match hallmark_ca::net::raise_open_files_limit() {
        Ok(l) if l.before != l.now => {
            tracing::info!(from = ?l.before, to = ?l.now, "open-files limit raised to the hard limit")
        }
        Ok(l) => tracing::info!(limit = ?l.now, "open-files limit is at the hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let opts = ServeOptions {
        data_dir: args.common.data_dir.clone(),
        passphrase: passphrase(&args.common)?,
        config,
        clock: Arc::new(SystemClock),
    };
    let running = server::start(opts).await?;
    if let Some(report) = &running.initialised {
        print_init(report);
    }
    println!(
        "hallmark-ca listening: gRPC https://{} HTTP http://{}",
        running.grpc_addr, running.http_addr
    );
    print_client_setup(&args.common.data_dir, running.grpc_addr);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn init(args: InitArgs) -> Result<()> {
    let config = load_config(&args.common)?;
    let import = match (
        args.import_issuing_cert,
        args.import_issuing_key,
        args.import_root_cert,
    ) {
        (Some(cert), Some(key), Some(root)) => Some(ImportIssuing { cert, key, root }),
        _ => None,
    };
    let opts = InitOptions {
        data_dir: args.common.data_dir.clone(),
        passphrase: passphrase(&args.common)?,
        root_key_out: args.root_key_out,
        import,
    };
    let report = bootstrap::init(&opts, &config, Arc::new(SystemClock))
        .await
        .with_context(|| format!("initialising {}", opts.data_dir.display()))?;
    print_init(&report);
    print_client_setup(&args.common.data_dir, config.grpc_listen);
    Ok(())
}

impl IssuerRotateArgs {
    fn options(self) -> Result<(RootKeyOptions, Config)> {
        let config = load_config(&self.common)?;
        let opts = RootKeyOptions {
            data_dir: self.common.data_dir.clone(),
            passphrase: passphrase(&self.common)?,
            root_key: self.root_key,
            root_passphrase: self
                .root_passphrase_file
                .as_deref()
                .map(Passphrase::from_file)
                .transpose()?,
        };
        Ok((opts, config))
    }
}

async fn issuer_rotate(args: IssuerRotateArgs) -> Result<()> {
    let (opts, config) = args.options()?;
    let new = hierarchy::rotate_issuer(&opts, &config, Arc::new(SystemClock))
        .await
        .context("rolling the issuing CA over")?;
    println!(
        "new issuing CA {} ({}), valid until {}; it signs from now on (a running CA switches within seconds)",
        new.id,
        new.subject,
        hallmark_ca::clock::rfc3339(new.not_after)
    );
    Ok(())
}

async fn issuer_revoke(args: IssuerRevokeArgs) -> Result<()> {
    let (root, config) = args.root.options()?;
    let opts = RevokeIssuerOptions {
        root,
        issuer: args.issuer,
        reason: args.reason.0,
    };
    let done = hierarchy::revoke_issuer(&opts, &config, Arc::new(SystemClock))
        .await
        .with_context(|| format!("revoking issuing CA {}", opts.issuer))?;
    println!(
        "issuing CA {} ({}) is revoked: it signs nothing more and has left the trust bundle",
        done.issuer.id, done.issuer.subject
    );
    println!(
        "root CRL number {} lists it, valid until {} (a running CA serves it within seconds)",
        done.root_crl.number,
        hallmark_ca::clock::rfc3339(done.root_crl.next_update)
    );
    if done.valid_certificates > 0 {
        println!(
            "{} certificates it signed were still valid: they are refused from now on (holders \
             cannot renew; devices enroll again, operators need new credentials)",
            done.valid_certificates
        );
    }
    if done.server_certificate {
        println!(
            "the CA's own API certificate was signed by it: restart hallmark-ca, which renews it \
             from the active issuing CA at start"
        );
    }
    Ok(())
}

async fn issuer_root_crl(args: IssuerRotateArgs) -> Result<()> {
    let (opts, config) = args.options()?;
    let crl = hierarchy::sign_root_crl(&opts, &config, Arc::new(SystemClock))
        .await
        .context("signing the root's CRL")?;
    println!(
        "root CRL of {} signed: number {}, {} entries, valid until {} (a running CA serves it \
         within seconds)",
        crl.issuer_id,
        crl.number,
        crl.entries,
        hallmark_ca::clock::rfc3339(crl.next_update)
    );
    Ok(())
}

async fn admin_create(args: AdminCreateArgs) -> Result<()> {
    let config = load_config(&args.common)?;
    let opts = bootstrap::CreateAdminOptions {
        data_dir: args.common.data_dir.clone(),
        passphrase: read_passphrase(&args.common)?,
        name: args.name,
        out: args.out,
    };
    let made = bootstrap::create_admin(&opts, &config, Arc::new(SystemClock))
        .await
        .context("creating an admin credential")?;
    println!(
        "new admin credential {} (serial {}), valid until {}, written to {}",
        made.name,
        made.serial,
        hallmark_ca::clock::rfc3339(made.not_after),
        absolute(&opts.out).display()
    );
    println!(
        "it works at once, also against a running CA; if it replaces a lost or exposed admin \
         credential, revoke that one now (hallmark revoke --serial SERIAL --reason key-compromise)"
    );
    Ok(())
}

async fn issuer_list(args: IssuerListArgs) -> Result<()> {
    let dir = bootstrap::DataDir::new(&args.data_dir);
    if !dir.is_initialised() {
        anyhow::bail!("{} is not initialised", args.data_dir.display());
    }
    let config = Config {
        database: args.database.database()?,
        ..Config::default()
    };
    let store = dir.database(&config)?.open(1).await?;
    let issuers = store.issuers().await?;
    store.close().await;
    println!(
        "{:<18} {:<8} {:<8} {:<21} SUBJECT",
        "ID", "KIND", "STATUS", "NOT_AFTER"
    );
    for i in issuers {
        println!(
            "{:<18} {:<8} {:<8} {:<21} {}",
            i.id,
            i.kind.as_str(),
            i.status_text(),
            hallmark_ca::clock::rfc3339(i.not_after),
            i.subject
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Init(a) => init(a).await,
        Command::Issuer(IssuerCommand::Rotate(a)) => issuer_rotate(a).await,
        Command::Issuer(IssuerCommand::Revoke(a)) => issuer_revoke(a).await,
        Command::Issuer(IssuerCommand::RootCrl(a)) => issuer_root_crl(a).await,
        Command::Issuer(IssuerCommand::List(a)) => issuer_list(a).await,
        Command::Admin(AdminCommand::Create(a)) => admin_create(a).await,
        Command::Probe(a) => hallmark_ca::probe::run(a).await.map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
