//! Wiring: loads (or first initialises) the data dir, then serves gRPC over our own TLS
//! acceptor and the HTTP side, until shut down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hallmark_proto::v1::certificate_authority_server::CertificateAuthorityServer;
use hallmark_proto::v1::devices_server::DevicesServer;
use hallmark_proto::v1::enrollment_server::EnrollmentServer;
use hallmark_proto::v1::revocation_server::RevocationServer;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::devices::DevicesService;
use crate::api::enrollment::EnrollmentService;
use crate::api::revocation::RevocationService;
use crate::api::{ApiState, certificate_authority::CaService, tls};
use crate::authority::profile::ProfileSet;
use crate::authority::{Authority, IssuingCa};
use crate::bootstrap::{self, BootstrapError, InitOptions, InitReport, Loaded};
use crate::clock::SharedClock;
use crate::config::{Config, Limits};
use crate::datadir::DataDir;
use crate::http::{self, HttpState};
use crate::keyring::Keyring;
use crate::keys::Passphrase;
use crate::net::{self, message_limit::service_limit};
use crate::revocation::{CrlPublisher, CrlSources};
use crate::service::{Service, ServiceParts};
use crate::store::Store;
use crate::trust::{TrustHandle, TrustMaterial};

/// How long shutdown waits for in-flight calls.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Options of `hallmark-ca serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data dir.
    pub data_dir: PathBuf,
    /// The configuration.
    pub config: Config,
    /// CA key passphrase.
    pub passphrase: Option<Passphrase>,
    /// The clock.
    pub clock: SharedClock,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Initialising or loading failed.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// A listener could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another hallmark-ca running? use --grpc-listen/--http-listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A running CA.
#[derive(Debug)]
pub struct RunningServer {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// Set when this start initialised the data dir.
    pub initialised: Option<InitReport>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: Arc<dyn crate::store::Store>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight calls finish for up to [`SHUTDOWN_GRACE`] (long-lived
    /// streams are cut after that), and closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for mut t in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut t).await.is_err() {
                tracing::warn!("calls still open after {SHUTDOWN_GRACE:?}; closing them");
                t.abort();
            }
        }
        self.store.close().await;
    }

    /// The store this server writes to.
    pub fn store(&self) -> &dyn crate::store::Store {
        self.store.as_ref()
    }

    /// Waits until the server stops by itself (it normally does not).
    pub async fn wait(&mut self) {
        for t in self.tasks.iter_mut() {
            let _ = t.await;
        }
    }
}

/// Starts the CA: initialises an empty data dir first, then serves.
pub async fn start(opts: ServeOptions) -> Result<RunningServer, ServeError> {
    let listeners = Listeners::bind(&opts.config).await?;
    // Listeners first: the CRL distribution point written into certificates (also those made
    // by a first-start initialisation) must name the HTTP port actually bound.
    let mut config = opts.config.clone();
    config.crl_base_url = Some(config.crl_base(listeners.http_addr));
    let (initialised, loaded) = load_state(&opts, &config).await?;
    let Loaded {
        store,
        authority,
        keyring,
        profiles,
        trust,
        server_chain,
        server_key,
    } = loaded;

    let tls_config = server_tls(server_chain, server_key, &config, &authority.issuing())?;
    let trust = TrustHandle::new(trust);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (crls, crl_task) = CrlPublisher::start(
        CrlSources {
            store: store.clone(),
            keyring: keyring.clone(),
            clock: opts.clock.clone(),
            validity: config.crl_validity,
            root_validity: config.root_crl_validity,
            base_url: config.crl_base(listeners.http_addr),
        },
        shutdown_rx.clone(),
    )
    .await;
    let state = api_state(&config, &store, &authority, profiles, &trust, &crls)?;
    let routes = grpc_routes(state).await?;
    let router = http::router(HttpState {
        store: store.clone(),
        trust: trust.clone(),
        crls: crls.clone(),
        clock: opts.clock.clone(),
    });
    let issuer_watch = IssuerWatch {
        store: store.clone(),
        keyring,
        authority,
        trust,
        clock: opts.clock.clone(),
        crls,
    };
    let (grpc_addr, http_addr) = (listeners.grpc_addr, listeners.http_addr);
    let mut tasks = spawn_tasks(
        listeners,
        tls_config,
        routes,
        router,
        issuer_watch,
        &config.limits,
        &shutdown_rx,
    );
    tasks.push(crl_task);
    tracing::info!(%grpc_addr, %http_addr, "hallmark-ca serving");
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        initialised,
        shutdown: shutdown_tx,
        tasks,
        store,
    })
}

/// The API's TLS configuration with its certificate `chain` and `key`.
fn server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    config: &Config,
    issuing: &IssuingCa,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    // Tell clients which CA their credential should come from (helps multi-cert clients).
    let hints = subject_of(&issuing.cert_der).into_iter().collect();
    Ok(tls::server_config(chain, key, config.allow_tls12, hints)?)
}

/// What every gRPC service shares.
fn api_state(
    config: &Config,
    store: &Arc<dyn Store>,
    authority: &Authority,
    profiles: Arc<ProfileSet>,
    trust: &TrustHandle,
    crls: &CrlPublisher,
) -> Result<ApiState, ServeError> {
    let host_names = Arc::new(config.host_names(&bootstrap::server_names(config))?);
    Ok(ApiState {
        service: Service::new(ServiceParts {
            store: store.clone(),
            authority: authority.clone(),
            profiles,
            host_names,
            default_zone: config.default_zone.clone(),
            trust: trust.clone(),
        }),
        crls: crls.clone(),
    })
}

/// Spawns the gRPC server, the issuer watcher and the HTTP server until `shutdown`.
fn spawn_tasks(
    listeners: Listeners,
    tls_config: Arc<rustls::ServerConfig>,
    routes: tonic::service::Routes,
    router: axum::Router,
    issuer_watch: IssuerWatch,
    limits: &Limits,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let grpc = tokio::spawn(net::grpc::serve(
        listeners.grpc,
        tls_config,
        routes,
        limits.clone(),
        shutdown.clone(),
    ));
    let watcher = tokio::spawn(watch_issuers(issuer_watch, shutdown.clone()));
    let http = tokio::spawn(net::http::serve(
        listeners.http,
        router,
        limits.clone(),
        shutdown.clone(),
    ));
    vec![grpc, http, watcher]
}

/// The two listeners, bound, with the addresses they got.
struct Listeners {
    grpc: TcpListener,
    http: TcpListener,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
}

impl Listeners {
    /// Binds the gRPC and HTTP listeners of `config`.
    async fn bind(config: &Config) -> Result<Self, ServeError> {
        let grpc = bind(config.grpc_listen).await?;
        let http = bind(config.http_listen).await?;
        Ok(Self {
            grpc_addr: local_addr(&grpc, config.grpc_listen)?,
            http_addr: local_addr(&http, config.http_listen)?,
            grpc,
            http,
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Initialises the data dir of `opts` when it is empty, then loads it with `config` (whose CRL
/// base names the bound HTTP port).
async fn load_state(
    opts: &ServeOptions,
    config: &Config,
) -> Result<(Option<InitReport>, Loaded), ServeError> {
    let dir = DataDir::new(&opts.data_dir);
    let initialised = if dir.is_initialised() || dir.is_half_initialised() {
        // A half-initialised dir is refused by `load` with instructions.
        None
    } else if config.database.is_some() {
        // Replicas starting together on empty dirs would each make a hierarchy.
        return Err(BootstrapError::NotInitialisedShared(opts.data_dir.clone()).into());
    } else {
        let init = InitOptions {
            data_dir: opts.data_dir.clone(),
            passphrase: opts.passphrase.clone(),
            root_key_out: None,
            import: None,
        };
        Some(bootstrap::init(&init, config, opts.clock.clone()).await?)
    };
    let loaded = bootstrap::load(
        &opts.data_dir,
        config,
        opts.passphrase.as_ref(),
        opts.clock.clone(),
    )
    .await?;
    Ok((initialised, loaded))
}

/// The gRPC services on `state`: the four Hallmark services, health and reflection, each with
/// its message limit.
async fn grpc_routes(state: ApiState) -> Result<tonic::service::Routes, ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CertificateAuthorityServer<CaService>>()
        .await;
    health_reporter
        .set_serving::<DevicesServer<DevicesService>>()
        .await;
    health_reporter
        .set_serving::<EnrollmentServer<EnrollmentService>>()
        .await;
    health_reporter
        .set_serving::<RevocationServer<RevocationService>>()
        .await;
    // Both reflection versions: grpcurl and older clients still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hallmark_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error =
        |e| ServeError::Bootstrap(BootstrapError::Inconsistent(format!("reflection: {e}")));
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(reflection_error)?
        .max_decoding_message_size(service_limit("grpc.reflection.v1.ServerReflection"));
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(reflection_error)?
        .max_decoding_message_size(service_limit("grpc.reflection.v1alpha.ServerReflection"));
    // tonic's own limits are a backstop: the message gate refuses oversized calls first.
    let health_service =
        health_service.max_decoding_message_size(service_limit("grpc.health.v1.Health"));
    let ca = CertificateAuthorityServer::new(CaService::new(state.clone()))
        .max_decoding_message_size(service_limit("hallmark.v1.CertificateAuthority"));
    let devices = DevicesServer::new(DevicesService::new(state.clone()))
        .max_decoding_message_size(service_limit("hallmark.v1.Devices"));
    let revocation = RevocationServer::new(RevocationService::new(state.clone()))
        .max_decoding_message_size(service_limit("hallmark.v1.Revocation"));
    let enrollment = EnrollmentServer::new(EnrollmentService::new(state))
        .max_decoding_message_size(service_limit("hallmark.v1.Enrollment"));
    Ok(tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ca)
        .add_service(devices)
        .add_service(enrollment)
        .add_service(revocation))
}

fn subject_of(der: &[u8]) -> Option<rustls::DistinguishedName> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(rustls::DistinguishedName::from(
        cert.subject().as_raw().to_vec(),
    ))
}

/// How often the store is checked for a new active issuing CA.
pub const ISSUER_POLL: std::time::Duration = std::time::Duration::from_secs(2);

struct IssuerWatch {
    store: Arc<dyn Store>,
    keyring: Keyring,
    authority: Authority,
    trust: TrustHandle,
    clock: SharedClock,
    crls: CrlPublisher,
}

/// Follows issuer rollovers made by `hallmark-ca issuer rotate` (possibly in another process):
/// switches signing to the new active issuing CA and refreshes the trust bundle, without a
/// restart; has revocations of issuers and new root CRLs published. A new CA whose key cannot be loaded is logged and retried; signing stays with the
/// previous one meanwhile.
async fn watch_issuers(w: IssuerWatch, mut shutdown: watch::Receiver<bool>) {
    let mut root_crls = w.store.root_crl_numbers().await.ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ISSUER_POLL) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        // A root CRL signed by another process (`hallmark-ca issuer root-crl`) is served now.
        let numbers = w.store.root_crl_numbers().await.ok();
        if numbers.is_some() && numbers != root_crls {
            root_crls = numbers;
            w.crls.request_rebuild();
        }
        let issuers = match w.store.issuers().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read issuers");
                continue;
            }
        };
        if w.trust
            .set(TrustMaterial::from_issuers(&issuers, w.clock.now()))
        {
            tracing::info!("trust bundle updated");
            // A new (or expired, or revoked) issuer: its CRL appears (or goes), and its root's
            // new CRL is served, now, not at the next refresh.
            w.crls.request_rebuild();
        }
        // A rollover: the keyring loads the new CA (or says why not, and keeps the previous
        // one), the authority signs with it from now on.
        if let Some(ca) = w.keyring.refresh(&issuers) {
            w.authority.set_issuing(ca);
        }
    }
}
