//! First start and every start: creating the CA hierarchy, the API server certificate and the
//! first admin credential in an empty data dir, and loading them again later.
//!
//! Data dir layout:
//! ```text
//! hallmark.db                      the store
//! ca/root.crt  ca/root.key         root CA (the key only unless kept elsewhere or imported)
//! ca/issuing.crt  ca/issuing.key   issuing CA
//! server/{cert,chain,key}.pem      the API's TLS certificate (renewed at start when due)
//! trust-bundle.pem                 roots + issuing CAs
//! admin/                           first admin credential bundle
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::api::TrustMaterial;
use crate::authority::ca::{self, CaImportError, ISSUING_LIFETIME, ROOT_LIFETIME, der_to_pem};
use crate::authority::crl::distribution_point;
use crate::authority::csr::check_csr;
use crate::authority::profile::{ProfileSet, SERVER_PROFILE};
use crate::authority::server_identity::has_ca_server_eku;
use crate::authority::{
    Authority, AuthorityError, IssuedLeaf, IssuingCa, LeafRequest, NamingPolicy,
};
use crate::bundle::{CredentialBundle, new_key_and_csr};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::fsutil;
use crate::identity::DeviceId;
use crate::keys::{KeyFileError, Passphrase, file as keyfile};
use crate::root_crl::{self, RootCrlError};
use crate::store::{
    DB_FILE, DeviceClaim, IssuerKind, IssuerRecord, NewCertificate, Store, StoreError, WriteOp,
};

pub use crate::authority::profile::SERVER_DEVICE;
/// Name of the first admin credential.
pub const FIRST_ADMIN: &str = "admin";
/// Profile of admin credentials made on the CA host (the first admin, break-glass admins).
const ADMIN_PROFILE: &str = "admin";
/// Renew the API server certificate at start when less than this share of its life is left.
const SERVER_RENEW_FRACTION: f64 = 1.0 / 3.0;

/// Why initialisation or loading failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// An earlier initialisation stopped half-way.
    #[error(
        "{} holds an interrupted initialisation ({DB_FILE} without the .initialised marker); \
         nothing in it was ever served: remove the directory and initialise again",
        .0.display()
    )]
    HalfInitialised(PathBuf),
    /// The data dir holds a CA already.
    #[error("{} is already initialised (it has {DB_FILE}); use another --data-dir or remove it", .0.display())]
    AlreadyInitialised(PathBuf),
    /// The data dir holds no CA.
    #[error("{} is not initialised; run `hallmark-ca init --data-dir {}` or `hallmark-ca serve`", .0.display(), .0.display())]
    NotInitialised(PathBuf),
    /// File system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// An imported CA was refused.
    #[error("cannot import the issuing CA: {0}")]
    Import(#[from] CaImportError),
    /// A certificate could not be built.
    #[error("cannot create a certificate: {0}")]
    Certificate(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data dir contradicts itself.
    #[error("{0}")]
    Inconsistent(String),
    /// The request was refused; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The root's CRL could not be signed or stored.
    #[error(transparent)]
    RootCrl(#[from] RootCrlError),
}

impl From<rcgen::Error> for BootstrapError {
    fn from(e: rcgen::Error) -> Self {
        BootstrapError::Certificate(e.to_string())
    }
}

impl From<AuthorityError> for BootstrapError {
    fn from(e: AuthorityError) -> Self {
        BootstrapError::Certificate(e.to_string())
    }
}

/// An issuing CA signed by an existing (e.g. corporate) root, to import instead of creating one.
#[derive(Debug, Clone)]
pub struct ImportIssuing {
    /// Issuing CA certificate (PEM).
    pub cert: PathBuf,
    /// Its PKCS#8 key (PEM, encrypted with the passphrase or plain).
    pub key: PathBuf,
    /// The root that signed it (PEM); it becomes the trust anchor.
    pub root: PathBuf,
}

/// Options of `hallmark-ca init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Passphrase for CA keys at rest; `None` writes them unencrypted (mode 0600).
    pub passphrase: Option<Passphrase>,
    /// Write the new root key here instead of into the data dir (to keep it offline).
    pub root_key_out: Option<PathBuf>,
    /// Import an issuing CA instead of creating a root and an issuing CA.
    pub import: Option<ImportIssuing>,
}

/// What initialisation made.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The admin credential bundle directory.
    pub admin_dir: PathBuf,
    /// The trust bundle file.
    pub trust_bundle: PathBuf,
    /// Where the root key went, if one was created.
    pub root_key: Option<PathBuf>,
    /// Whether CA keys are encrypted at rest.
    pub encrypted: bool,
}

/// Paths inside a data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Wraps a data dir path.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }
    /// The database file.
    pub fn db(&self) -> PathBuf {
        self.root.join(DB_FILE)
    }
    pub(crate) fn ca(&self, name: &str) -> PathBuf {
        self.root.join("ca").join(name)
    }
    pub(crate) fn server(&self, name: &str) -> PathBuf {
        self.root.join("server").join(name)
    }
    /// The root CA key when it is kept in the data dir (`init` without `--root-key-out`).
    pub fn root_key(&self) -> PathBuf {
        self.ca("root.key")
    }
    /// The trust bundle file.
    pub fn trust_bundle(&self) -> PathBuf {
        self.root.join("trust-bundle.pem")
    }
    /// The first admin's credential bundle.
    pub fn admin(&self) -> PathBuf {
        self.root.join("admin")
    }
    /// Certificate and key files of issuing CA `id`.
    pub fn issuing_files(&self, id: &str) -> (PathBuf, PathBuf) {
        let (crt, key) = (self.ca(&format!("{id}.crt")), self.ca(&format!("{id}.key")));
        if crt.exists() && key.exists() {
            (crt, key)
        } else {
            (self.ca("issuing.crt"), self.ca("issuing.key"))
        }
    }

    /// The marker written last by a completed initialisation.
    pub fn marker(&self) -> PathBuf {
        self.root.join(".initialised")
    }

    /// Whether a completely initialised CA lives here.
    pub fn is_initialised(&self) -> bool {
        self.marker().exists()
    }

    /// Whether an initialisation started here and never completed (a crash mid-way).
    pub fn is_half_initialised(&self) -> bool {
        !self.is_initialised() && self.db().exists()
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn read_cert_pem(path: &Path) -> Result<Vec<u8>, BootstrapError> {
    let text = std::fs::read(path).map_err(io_err(path))?;
    let der = CertificateDer::from_pem_slice(&text).map_err(|e| {
        BootstrapError::Inconsistent(format!("{}: not a PEM certificate ({e})", path.display()))
    })?;
    Ok(der.as_ref().to_vec())
}

fn naming(config: &Config) -> NamingPolicy {
    NamingPolicy {
        organisation: config.organisation.clone(),
        device_uri_template: config.device_uri_template.clone(),
        crl_base_url: Some(config.crl_base(config.http_listen)),
    }
}

/// The URL of root `root_id`'s CRL, which the issuing CAs it signs carry as CDP.
pub(crate) fn root_crl_url(config: &Config, root_id: &str) -> String {
    distribution_point(&config.crl_base(config.http_listen), root_id)
}

fn subject_of(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

pub(crate) fn issuer_record(
    kind: IssuerKind,
    id: String,
    der: &[u8],
) -> Result<IssuerRecord, BootstrapError> {
    let (not_before, not_after) = ca::validity(der)?;
    Ok(IssuerRecord {
        id,
        kind,
        subject: subject_of(der),
        cert_der: der.to_vec(),
        not_before,
        not_after,
        active: true,
        revoked_at: None,
        revocation_reason: None,
    })
}

fn spki_sha256_of_cert(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let spki = X509Certificate::from_der(der)
        .map(|(_, c)| c.public_key().raw.to_vec())
        .unwrap_or_default();
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki))
}

/// The write that records a certificate issued by the CA itself (`system`).
fn system_issue(
    leaf: &IssuedLeaf,
    device: &str,
    zone: &str,
    profile: &str,
    issuer_id: &str,
    now: i64,
) -> WriteOp {
    issue_by(leaf, device, zone, profile, issuer_id, now, "system")
}

/// The write that records a certificate the CA host made itself, as `actor`: the same store
/// path as any issuance (registry entry, certificate row, audit event).
fn issue_by(
    leaf: &IssuedLeaf,
    device: &str,
    zone: &str,
    profile: &str,
    issuer_id: &str,
    now: i64,
    actor: &str,
) -> WriteOp {
    WriteOp::Issue {
        device: DeviceClaim {
            id: device.to_owned(),
            zone: zone.to_owned(),
            profile: profile.to_owned(),
            serial_number: None,
            manufacturer: None,
        },
        cert: Box::new(NewCertificate {
            serial: leaf.serial.clone(),
            device_id: device.to_owned(),
            profile: profile.to_owned(),
            zone: zone.to_owned(),
            issuer_id: issuer_id.to_owned(),
            subject: leaf.subject.clone(),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            scope: None,
            requested_by: actor.to_owned(),
            spki_sha256: spki_sha256_of_cert(&leaf.der),
            der: leaf.der.clone(),
            issued_at: now,
        }),
        actor: actor.to_owned(),
    }
}

/// DNS names and IPs of the API server certificate.
pub fn server_names(config: &Config) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let ip = config.grpc_listen.ip();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    for n in &config.server_names {
        names.push(n.clone());
    }
    names.sort();
    names.dedup();
    names
}

/// Signs a fresh API server certificate and writes `server/` (key, cert, chain).
fn make_server_cert(
    authority: &Authority,
    profiles: &ProfileSet,
    config: &Config,
) -> Result<(IssuedLeaf, String), BootstrapError> {
    let profile = profiles
        .get(SERVER_PROFILE)
        .ok_or_else(|| BootstrapError::Inconsistent("internal server profile missing".into()))?;
    let (key_pem, csr) = new_key_and_csr(SERVER_DEVICE)?;
    let csr = check_csr(&csr, profile).map_err(|e| BootstrapError::Certificate(e.to_string()))?;
    let leaf = authority.sign_server(&server_names(config), &csr, profile)?;
    Ok((leaf, key_pem))
}

/// Signs an admin credential for `name` in `zone` with a fresh key: the first admin at init
/// and a break-glass admin (`hallmark-ca admin create`). Returns the leaf and its key (PEM).
fn sign_admin(
    authority: &Authority,
    profiles: &ProfileSet,
    name: &DeviceId,
    zone: &str,
) -> Result<(IssuedLeaf, String), BootstrapError> {
    let admin_profile = profiles
        .get(ADMIN_PROFILE)
        .ok_or_else(|| BootstrapError::Inconsistent("profile admin missing".into()))?;
    let (key_pem, csr) = new_key_and_csr(name.as_str())?;
    let csr =
        check_csr(&csr, admin_profile).map_err(|e| BootstrapError::Certificate(e.to_string()))?;
    let leaf = authority.sign_leaf(&LeafRequest {
        device_id: name,
        zone,
        profile: admin_profile,
        csr: &csr,
        lifetime: None,
        dns_san_allowed: true,
    })?;
    Ok((leaf, key_pem))
}

/// Writes an admin credential bundle into `out` (after its certificate is recorded).
fn write_admin_bundle(
    out: &Path,
    leaf: &IssuedLeaf,
    key_pem: String,
    trust: &TrustMaterial,
) -> Result<(), BootstrapError> {
    let cert_pem = der_to_pem(&leaf.der);
    CredentialBundle {
        key_pem,
        chain_pem: format!("{cert_pem}{}", leaf.issuer.cert_pem()),
        cert_pem,
        ca_pem: trust.bundle_pem(),
    }
    .write(out)
    .map_err(|e| BootstrapError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Replaces `server/` (key, cert, chain) as one directory, after the certificate is recorded.
fn write_server_dir(dir: &DataDir, leaf: &IssuedLeaf, key_pem: &str) -> Result<(), BootstrapError> {
    let cert_pem = der_to_pem(&leaf.der);
    let chain = format!("{cert_pem}{}", leaf.issuer.cert_pem());
    let server_dir = dir.path().join("server");
    fsutil::replace_dir_atomically(
        &server_dir,
        &[
            ("cert.pem", cert_pem.as_bytes(), 0o644),
            ("chain.pem", chain.as_bytes(), 0o644),
            ("key.pem", key_pem.as_bytes(), 0o600),
        ],
    )
    .map_err(io_err(&server_dir))
}

/// Initialises an empty data dir. On failure, the files it wrote are removed again.
pub async fn init(
    opts: &InitOptions,
    config: &Config,
    clock: SharedClock,
) -> Result<InitReport, BootstrapError> {
    let dir = DataDir::new(&opts.data_dir);
    if dir.is_initialised() {
        return Err(BootstrapError::AlreadyInitialised(opts.data_dir.clone()));
    }
    if dir.is_half_initialised() {
        return Err(BootstrapError::HalfInitialised(opts.data_dir.clone()));
    }
    if let Some(out) = &opts.root_key_out
        && out.exists()
    {
        return Err(BootstrapError::Inconsistent(format!(
            "--root-key-out {} exists already; choose a new file (an existing key is never overwritten)",
            out.display()
        )));
    }
    // Remove on failure only what this run created.
    let mut created: Vec<PathBuf> = Vec::new();
    let existed = dir.path().exists();
    for p in [
        dir.path().join("ca"),
        dir.path().join("server"),
        dir.admin(),
        dir.trust_bundle(),
        dir.db(),
        dir.db().with_extension("db-wal"),
        dir.db().with_extension("db-shm"),
    ]
    .into_iter()
    .chain(opts.root_key_out.clone())
    {
        if !p.exists() {
            created.push(p);
        }
    }
    let result = init_inner(&dir, opts, config, clock).await;
    if result.is_err() {
        for p in &created {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
        if !existed {
            let _ = std::fs::remove_dir(dir.path());
        }
    }
    result
}

async fn init_inner(
    dir: &DataDir,
    opts: &InitOptions,
    config: &Config,
    clock: SharedClock,
) -> Result<InitReport, BootstrapError> {
    let profiles = config
        .profile_set()
        .map_err(|e| BootstrapError::Inconsistent(e.to_string()))?;
    let now = clock.now();
    let pass = opts.passphrase.as_ref();
    let ca_dir = dir.path().join("ca");
    fsutil::create_private_dir(&ca_dir).map_err(io_err(&ca_dir))?;

    // 1. The CA pair: created (the root kept at hand to sign its first CRL below, before its
    // key leaves), or imported (its root publishes its own CRLs, not through Hallmark).
    let (root_der, issuing_der, issuing_key, root_key_path, root_ca) = match &opts.import {
        Some(imp) => {
            let root_der = read_cert_pem(&imp.root)?;
            let issuing_der = read_cert_pem(&imp.cert)?;
            let key = keyfile::read_key(&imp.key, pass)?;
            ca::check_import(&issuing_der, &root_der, &key, now)?;
            (root_der, issuing_der, key, None, None)
        }
        None => {
            let (root_der, root_key) = ca::create_root(&config.organisation, now, ROOT_LIFETIME)?;
            let root_key_path = opts.root_key_out.clone().unwrap_or_else(|| dir.root_key());
            keyfile::write_key(&root_key_path, &root_key, pass)?;
            let root_id = ca::ca_id("root", &root_der);
            let root_ca = IssuingCa::new(root_id.clone(), root_der.clone(), root_key)?;
            let (issuing_der, issuing_key) = ca::create_issuing_under(
                &root_ca,
                &config.organisation,
                now,
                ISSUING_LIFETIME,
                Some(root_crl_url(config, &root_id)),
            )?;
            (
                root_der,
                issuing_der,
                issuing_key,
                Some(root_key_path),
                Some(root_ca),
            )
        }
    };
    for (name, der) in [("root.crt", &root_der), ("issuing.crt", &issuing_der)] {
        let p = dir.ca(name);
        fsutil::write_atomic(&p, der_to_pem(der).as_bytes(), 0o644).map_err(io_err(&p))?;
    }
    keyfile::write_key(&dir.ca("issuing.key"), &issuing_key, pass)?;

    let root_id = ca::ca_id("root", &root_der);
    let issuing_id = ca::ca_id("issuing", &issuing_der);
    let issuing = Arc::new(IssuingCa::new(
        issuing_id.clone(),
        issuing_der.clone(),
        issuing_key,
    )?);
    let authority = Authority::new(issuing, naming(config), clock.clone());

    // 2. The API server certificate and the first admin credential.
    let (server_leaf, server_key) = make_server_cert(&authority, &profiles, config)?;
    let admin_id =
        DeviceId::parse(FIRST_ADMIN).map_err(|e| BootstrapError::Inconsistent(e.to_string()))?;
    let (admin_leaf, admin_key) =
        sign_admin(&authority, &profiles, &admin_id, &config.default_zone)?;

    // 3. One transaction records both CAs and both certificates, with their audit events.
    let store = Store::open_sqlite(&dir.db(), config.max_commit_batch).await?;
    let root_rec = issuer_record(IssuerKind::Root, root_id, &root_der)?;
    let issuing_rec = issuer_record(IssuerKind::Issuing, issuing_id.clone(), &issuing_der)?;
    let issuers = vec![root_rec, issuing_rec];
    let write = WriteOp::All(vec![
        WriteOp::AddIssuer {
            issuer: issuers[0].clone(),
            at: now,
            actor: "system".into(),
        },
        WriteOp::AddIssuer {
            issuer: issuers[1].clone(),
            at: now,
            actor: "system".into(),
        },
        system_issue(
            &server_leaf,
            "hallmark-ca",
            "ca",
            SERVER_PROFILE,
            &issuing_id,
            now,
        ),
        system_issue(
            &admin_leaf,
            FIRST_ADMIN,
            &config.default_zone,
            ADMIN_PROFILE,
            &issuing_id,
            now,
        ),
    ]);
    let written = async {
        store.write(write).await?;
        if let Some(root_ca) = &root_ca {
            root_crl::sign(
                &store,
                root_ca,
                &issuers,
                config.root_crl_validity,
                now,
                "system",
                Vec::new(),
            )
            .await?;
        }
        Ok::<(), BootstrapError>(())
    }
    .await;
    store.close().await;
    written?;
    write_server_dir(dir, &server_leaf, &server_key)?;

    // 4. Trust bundle and admin bundle.
    let trust = TrustMaterial::from_issuers(&issuers, now);
    let tb = dir.trust_bundle();
    fsutil::write_atomic(&tb, trust.bundle_pem().as_bytes(), 0o644).map_err(io_err(&tb))?;
    write_admin_bundle(&dir.admin(), &admin_leaf, admin_key, &trust)?;

    // Last: the marker that makes the data dir count as initialised.
    let marker = dir.marker();
    fsutil::write_atomic(&marker, b"hallmark data dir\n", 0o644).map_err(io_err(&marker))?;
    Ok(InitReport {
        admin_dir: dir.admin(),
        trust_bundle: tb,
        root_key: root_key_path,
        encrypted: pass.is_some(),
    })
}

/// Everything `serve` needs, loaded from an initialised data dir.
#[derive(Debug)]
pub struct Loaded {
    /// The open store.
    pub store: Store,
    /// The signing authority.
    pub authority: Authority,
    /// Profiles in force.
    pub profiles: Arc<ProfileSet>,
    /// Trust material.
    pub trust: TrustMaterial,
    /// API server certificate chain.
    pub server_chain: Vec<CertificateDer<'static>>,
    /// API server key.
    pub server_key: PrivateKeyDer<'static>,
}

/// Opens the store and loads the active issuing CA (renewing the API server certificate when
/// it is due or its names changed).
pub async fn load(
    data_dir: &Path,
    config: &Config,
    passphrase: Option<&Passphrase>,
    clock: SharedClock,
) -> Result<Loaded, BootstrapError> {
    let dir = DataDir::new(data_dir);
    if dir.is_half_initialised() {
        return Err(BootstrapError::HalfInitialised(data_dir.to_owned()));
    }
    if !dir.is_initialised() {
        return Err(BootstrapError::NotInitialised(data_dir.to_owned()));
    }
    let profiles = Arc::new(
        config
            .profile_set()
            .map_err(|e| BootstrapError::Inconsistent(e.to_string()))?,
    );
    let store = Store::open_sqlite(&dir.db(), config.max_commit_batch).await?;
    let issuers = store.issuers().await?;
    let active = active_issuing(&dir, &issuers)?;
    let issuing = load_issuing(&dir, active, passphrase)?;
    let authority = Authority::new(Arc::new(issuing), naming(config), clock.clone());
    let now = clock.now();

    // Renew the server certificate when a third of its life is left, its names changed, it
    // lacks the CA-server marker (made before clients checked it: they would refuse it), or its
    // issuing CA was revoked.
    let server_cert = dir.server("cert.pem");
    let due = match read_cert_pem(&server_cert) {
        Ok(der) => {
            let (nb, na) = ca::validity(&der)?;
            let left = (na - now) as f64 / ((na - nb).max(1)) as f64;
            left < SERVER_RENEW_FRACTION
                || !ca::has_names(&der, &server_names(config))
                || !has_ca_server_eku(&der)
                || issuers
                    .iter()
                    .any(|i| i.is_revoked() && root_crl::signed_by(&der, &i.cert_der))
        }
        Err(_) => true,
    };
    if due {
        tracing::info!("renewing the API server certificate");
        let (leaf, key_pem) = make_server_cert(&authority, &profiles, config)?;
        // Recorded first: a certificate never goes live without its row.
        store
            .write(system_issue(
                &leaf,
                SERVER_DEVICE,
                "ca",
                SERVER_PROFILE,
                &leaf.issuer.id,
                now,
            ))
            .await?;
        write_server_dir(&dir, &leaf, &key_pem)?;
    }
    let chain_path = dir.server("chain.pem");
    let chain_text = std::fs::read(&chain_path).map_err(io_err(&chain_path))?;
    let server_chain = CertificateDer::pem_slice_iter(&chain_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BootstrapError::Inconsistent(format!("{}: {e}", chain_path.display())))?;
    let key_path = dir.server("key.pem");
    let key_text = std::fs::read(&key_path).map_err(io_err(&key_path))?;
    let server_key = PrivateKeyDer::from_pem_slice(&key_text)
        .map_err(|e| BootstrapError::Inconsistent(format!("{}: {e}", key_path.display())))?;
    let trust = TrustMaterial::from_issuers(&issuers, now);
    Ok(Loaded {
        store,
        authority,
        profiles,
        trust,
        server_chain,
        server_key,
    })
}

/// The active issuing CA among `issuers` (the newest, should there be several).
fn active_issuing<'a>(
    dir: &DataDir,
    issuers: &'a [IssuerRecord],
) -> Result<&'a IssuerRecord, BootstrapError> {
    issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Issuing && i.active && !i.is_revoked())
        .max_by_key(|i| i.not_before)
        .ok_or_else(|| {
            BootstrapError::Inconsistent(format!("{} has no active issuing CA", dir.db().display()))
        })
}

/// Loads the issuing CA of `record` with its key: `ca/<id>.{crt,key}` when present (every CA
/// after a rollover), else `ca/issuing.{crt,key}` (the first one).
pub fn load_issuing(
    dir: &DataDir,
    record: &IssuerRecord,
    passphrase: Option<&Passphrase>,
) -> Result<IssuingCa, BootstrapError> {
    let (crt, key) = dir.issuing_files(&record.id);
    let on_disk = read_cert_pem(&crt)?;
    if on_disk != record.cert_der {
        return Err(BootstrapError::Inconsistent(format!(
            "{} does not match issuing CA {} in the store",
            crt.display(),
            record.id
        )));
    }
    let ca_key = keyfile::read_key(&key, passphrase)?;
    ca::check_key_matches(&record.cert_der, &ca_key)
        .map_err(|e| BootstrapError::Inconsistent(format!("{}: {e}", key.display())))?;
    Ok(IssuingCa::new(
        record.id.clone(),
        record.cert_der.clone(),
        ca_key,
    )?)
}

/// Options of `hallmark-ca admin create`.
#[derive(Debug, Clone)]
pub struct CreateAdminOptions {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Passphrase of the CA keys.
    pub passphrase: Option<Passphrase>,
    /// Name (CN) of the new credential: a new name, or that of an active admin entry.
    pub name: String,
    /// Directory the credential bundle goes to; it must not hold a credential.
    pub out: PathBuf,
}

/// What [`create_admin`] made.
#[derive(Debug, Clone)]
pub struct CreatedAdmin {
    /// The credential's name.
    pub name: String,
    /// Its certificate's serial.
    pub serial: String,
    /// Its validity end.
    pub not_after: i64,
}

/// Break-glass: makes a new admin credential on the CA host with the issuing CA's key from the
/// data dir, for when no valid admin credential is left or at hand. Works while the CA runs
/// (SQLite WAL; the serving CA checks every caller against the store, so the credential works
/// at once). The certificate is recorded (registry entry, certificate row, audit events) before
/// any file is written; a refused request changes nothing.
pub async fn create_admin(
    opts: &CreateAdminOptions,
    config: &Config,
    clock: SharedClock,
) -> Result<CreatedAdmin, BootstrapError> {
    let dir = DataDir::new(&opts.data_dir);
    if dir.is_half_initialised() {
        return Err(BootstrapError::HalfInitialised(opts.data_dir.clone()));
    }
    if !dir.is_initialised() {
        return Err(BootstrapError::NotInitialised(opts.data_dir.clone()));
    }
    let name =
        DeviceId::parse(&opts.name).map_err(|e| BootstrapError::Refused(format!("--name: {e}")))?;
    if name.as_str() == SERVER_DEVICE {
        return Err(BootstrapError::Refused(format!(
            "--name {SERVER_DEVICE} is the CA's own API identity; choose another name"
        )));
    }
    let out = &opts.out;
    if out.exists()
        && (!out.is_dir()
            || out.join(crate::bundle::CERT_FILE).exists()
            || out.join(crate::bundle::KEY_FILE).exists())
    {
        return Err(BootstrapError::Refused(format!(
            "--out {} holds a credential already (or is not a directory); give a new directory",
            out.display()
        )));
    }
    let profiles = config
        .profile_set()
        .map_err(|e| BootstrapError::Inconsistent(e.to_string()))?;
    let store = Store::open_sqlite(&dir.db(), config.max_commit_batch).await?;
    let result = create_admin_inner(&dir, &store, opts, &name, config, &profiles, clock).await;
    store.close().await;
    result
}

async fn create_admin_inner(
    dir: &DataDir,
    store: &Store,
    opts: &CreateAdminOptions,
    name: &DeviceId,
    config: &Config,
    profiles: &ProfileSet,
    clock: SharedClock,
) -> Result<CreatedAdmin, BootstrapError> {
    use crate::store::DeviceStatus;
    // A new name goes into the default zone; an existing admin entry keeps its zone.
    let zone = match store.device(name.as_str()).await? {
        None => config.default_zone.clone(),
        Some(d) if d.profile != ADMIN_PROFILE => {
            return Err(BootstrapError::Refused(format!(
                "{name} is registered as a device (profile {}, zone {}); choose another --name",
                d.profile, d.zone
            )));
        }
        Some(d) if d.status != DeviceStatus::Active => {
            return Err(BootstrapError::Refused(format!(
                "admin {name} is {} in the registry; choose another --name",
                d.status.as_str()
            )));
        }
        Some(d) => d.zone,
    };
    let now = clock.now();
    let issuers = store.issuers().await?;
    let issuing = load_issuing(
        dir,
        active_issuing(dir, &issuers)?,
        opts.passphrase.as_ref(),
    )?;
    let authority = Authority::new(Arc::new(issuing), naming(config), clock.clone());
    let (leaf, key_pem) = sign_admin(&authority, profiles, name, &zone)?;
    const ACTOR: &str = "system:admin-create";
    let event = crate::audit::AuditEvent::new(
        now,
        ACTOR,
        "admin.create",
        name.as_str(),
        serde_json::json!({
            "serial": leaf.serial,
            "zone": zone,
            "out": opts.out.display().to_string(),
            "os_user": std::env::var("USER").unwrap_or_default(),
        }),
    );
    store
        .write(WriteOp::All(vec![
            issue_by(
                &leaf,
                name.as_str(),
                &zone,
                ADMIN_PROFILE,
                &leaf.issuer.id,
                now,
                ACTOR,
            ),
            WriteOp::Audit(event),
        ]))
        .await?;
    let trust = TrustMaterial::from_issuers(&issuers, now);
    write_admin_bundle(&opts.out, &leaf, key_pem, &trust)?;
    Ok(CreatedAdmin {
        name: name.to_string(),
        serial: leaf.serial.clone(),
        not_after: leaf.not_after,
    })
}
