//! First start: creating the CA hierarchy (or importing an issuing CA), the API server
//! certificate and the first admin credential in an empty data dir.

use std::path::PathBuf;
use std::sync::Arc;

use super::credentials::{
    sign_admin, sign_server_cert, system_service, write_admin_bundle, write_server_dir,
};
use super::{
    BootstrapError, FIRST_ADMIN, io_err, issuer_record, naming, read_cert_pem, root_crl_url,
};
use crate::authority::ca::{self, ISSUING_LIFETIME, ROOT_LIFETIME, der_to_pem};
use crate::authority::{Authority, IssuingCa};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::fsutil;
use crate::identity::DeviceId;
use crate::keys::{Passphrase, file as keyfile};
use crate::root_crl;
use crate::store::IssuerKind;
use crate::trust::TrustMaterial;

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
    // A shared database may hold the CA of another data dir: refused before any key is made
    // (and again inside the write that records the hierarchy, against a concurrent init).
    let database = dir.database(config)?;
    let store = database.open(config.max_commit_batch).await?;
    if !store.issuers().await?.is_empty() {
        store.close().await;
        return Err(BootstrapError::DatabaseHoldsCa(database.to_string()));
    }

    // 1. The CA pair: created (the root kept at hand to sign its first CRL below, before its
    // key leaves), or imported (its root publishes its own CRLs, not through Hallmark).
    let (root_der, issuing_der, issuing_key, root_key_path, root_ca) = match &opts.import {
        Some(imp) => {
            let root_der = read_cert_pem(&imp.root)?;
            let issuing_der = read_cert_pem(&imp.cert)?;
            let key = keyfile::read_file_key(&imp.key, pass)?;
            ca::check_import(&issuing_der, &root_der, &key, now)?;
            (root_der, issuing_der, key, None, None)
        }
        None => {
            let (root_der, root_key) = ca::create_root(&config.organisation, now, ROOT_LIFETIME)?;
            let root_key_path = opts.root_key_out.clone().unwrap_or_else(|| dir.root_key());
            keyfile::write_key(&root_key_path, &root_key, pass)?;
            let root_id = ca::ca_id("root", &root_der);
            let root_ca = Arc::new(IssuingCa::new(root_id.clone(), root_der.clone(), root_key)?);
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

    // 2. The API server certificate and the first admin credential, through the service
    // over the new store.
    let root_rec = issuer_record(IssuerKind::Root, root_id, &root_der)?;
    let issuing_rec = issuer_record(IssuerKind::Issuing, issuing_id, &issuing_der)?;
    let issuers = vec![root_rec, issuing_rec];
    let trust = TrustMaterial::from_issuers(&issuers, now);
    let written = async {
        let service = system_service(
            store.clone(),
            authority,
            Arc::new(profiles),
            config,
            trust.clone(),
        )?;
        let (server, server_key) = sign_server_cert(&service, config).await?;
        let admin_id = DeviceId::parse(FIRST_ADMIN)
            .map_err(|e| BootstrapError::Inconsistent(e.to_string()))?;
        let (admin, admin_key) =
            sign_admin(&service, &admin_id, &config.default_zone, "system").await?;

        // 3. One transaction records both CAs and both certificates, with their audit events.
        let issued = service
            .record_hierarchy(
                issuers[0].clone(),
                issuers[1].clone(),
                vec![server, admin],
                now,
            )
            .await?;
        if let Some(root_ca) = &root_ca {
            root_crl::sign(
                store.as_ref(),
                root_ca,
                &issuers,
                config.root_crl_validity,
                now,
                "system",
                root_crl::CommitWith::Nothing,
            )
            .await?;
        }
        Ok::<_, BootstrapError>((issued, server_key, admin_key))
    }
    .await;
    store.close().await;
    let (issued, server_key, admin_key) = written?;
    let [server, admin] = <[_; 2]>::try_from(issued).map_err(|_| {
        BootstrapError::Inconsistent("the first certificates were not recorded".into())
    })?;
    write_server_dir(dir, &server, &server_key)?;

    // 4. Trust bundle and admin bundle.
    let tb = dir.trust_bundle();
    fsutil::write_atomic(&tb, trust.bundle_pem().as_bytes(), 0o644).map_err(io_err(&tb))?;
    write_admin_bundle(&dir.admin(), &admin, admin_key)?;

    // Last: the marker that makes the data dir count as initialised.
    let marker = dir.marker();
    let text = DataDir::marker_text(&dir.database(config)?);
    fsutil::write_atomic(&marker, text.as_bytes(), 0o644).map_err(io_err(&marker))?;
    Ok(InitReport {
        admin_dir: dir.admin(),
        trust_bundle: tb,
        root_key: root_key_path,
        encrypted: pass.is_some(),
    })
}
