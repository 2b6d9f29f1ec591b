//! Changes to the CA hierarchy made on the CA host with the root key: rolling the issuing CA
//! over, revoking an issuing CA, and signing the root's CRL (see [`crate::root_crl`]). Each
//! works beside a running CA on the same data dir (SQLite WAL); the CA follows within seconds.

use std::path::PathBuf;
use std::sync::Arc;

use crate::authority::IssuingCa;
use crate::authority::ca::{self, ISSUING_LIFETIME, der_to_pem};
use crate::bootstrap::{BootstrapError, io_err, issuer_record, read_cert_pem, root_crl_url};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::fsutil;
use crate::keys::{Passphrase, file as keyfile};
use crate::root_crl::CommitWith;
use crate::root_crl::{self, RootCrlError};
use crate::store::{IssuerKind, IssuerRecord, IssuerRotation, RootCrlRecord, Store, StoreError};
use crate::trust::TrustMaterial;

/// Where the root key is, for the commands that sign with it (`issuer rotate`, `issuer
/// revoke`, `issuer root-crl`).
#[derive(Debug, Clone)]
pub struct RootKeyOptions {
    /// The data dir.
    pub data_dir: PathBuf,
    /// The root key; `None` uses `ca/root.key` of the data dir when it is there.
    pub root_key: Option<PathBuf>,
    /// Passphrase of the CA keys (a new issuing key is written with it).
    pub passphrase: Option<Passphrase>,
    /// Passphrase of the root key when it differs.
    pub root_passphrase: Option<Passphrase>,
}

impl RootKeyOptions {
    fn root_key_path(&self, dir: &DataDir) -> PathBuf {
        self.root_key.clone().unwrap_or_else(|| dir.root_key())
    }

    /// The root key of `root`, checked to be its key.
    fn root_signer(
        &self,
        dir: &DataDir,
        root: &IssuerRecord,
    ) -> Result<Arc<IssuingCa>, RootCrlError> {
        let pass = self.root_passphrase.as_ref().or(self.passphrase.as_ref());
        root_crl::load_key(&self.root_key_path(dir), pass, root).map(Arc::new)
    }
}

/// Options of `hallmark-ca issuer rotate`.
pub type RotateIssuerOptions = RootKeyOptions;

/// Opens the store of the initialised data dir of `opts`, runs `f` and closes the store.
async fn with_store<T>(
    opts: &RootKeyOptions,
    config: &Config,
    f: impl AsyncFnOnce(&DataDir, &dyn Store) -> Result<T, BootstrapError>,
) -> Result<T, BootstrapError> {
    let dir = DataDir::new(&opts.data_dir);
    if dir.is_half_initialised() {
        return Err(BootstrapError::HalfInitialised(opts.data_dir.clone()));
    }
    if !dir.is_initialised() {
        return Err(BootstrapError::NotInitialised(opts.data_dir.clone()));
    }
    let store = dir.database(config)?.open(config.max_commit_batch).await?;
    let result = f(&dir, store.as_ref()).await;
    store.close().await;
    result
}

/// Rewrites `trust-bundle.pem` from the store's issuers.
async fn write_trust_bundle(
    dir: &DataDir,
    store: &dyn Store,
    now: i64,
) -> Result<(), BootstrapError> {
    let trust = TrustMaterial::from_issuers(&store.issuers().await?, now);
    let tb = dir.trust_bundle();
    fsutil::write_atomic(&tb, trust.bundle_pem().as_bytes(), 0o644).map_err(io_err(&tb))
}

/// The valid root that publishes through Hallmark: the newest valid root of `issuers`.
fn current_root(issuers: &[IssuerRecord], now: i64) -> Result<&IssuerRecord, BootstrapError> {
    issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Root && i.active && i.not_after > now)
        .max_by_key(|i| i.not_before)
        .ok_or_else(|| BootstrapError::Inconsistent("no valid root CA in the store".into()))
}

/// Signs and stores a new CRL of `root_ca` in one transaction with the writes it publishes:
/// `change` turns the issuers as stored into the issuers as they will be and those writes. A
/// concurrent signer (a serving CA holding the root key) getting there first makes the store
/// refuse with [`StoreError::Changed`]: then again from a fresh read, three times at most. Any
/// other refusal of the store is the answer.
async fn sign_root_crl_with(
    store: &dyn Store,
    root_ca: &Arc<IssuingCa>,
    config: &Config,
    now: i64,
    actor: &str,
    change: impl Fn(Vec<IssuerRecord>) -> (Vec<IssuerRecord>, CommitWith),
) -> Result<RootCrlRecord, BootstrapError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (issuers, writes) = change(store.issuers().await?);
        let validity = config.root_crl_validity;
        match root_crl::sign(store, root_ca, &issuers, validity, now, actor, writes).await {
            Err(RootCrlError::Store(StoreError::Changed(_))) if attempt < 3 => {}
            Err(RootCrlError::Store(StoreError::Conflict(m) | StoreError::Changed(m))) => {
                return Err(BootstrapError::Refused(m));
            }
            other => return Ok(other?),
        }
    }
}

/// Rolls the issuing CA over: a new issuing CA signed by the root becomes the signer, the old
/// one is retired (still valid, still trusted, until it expires). A running `serve` picks the
/// new one up within seconds. When the root publishes a CRL (see [`crate::root_crl`]), the new
/// CA carries its distribution point and a fresh root CRL is signed in the same transaction.
/// Returns the new issuer.
pub async fn rotate_issuer(
    opts: &RotateIssuerOptions,
    config: &Config,
    clock: SharedClock,
) -> Result<IssuerRecord, BootstrapError> {
    with_store(opts, config, async |dir, store| {
        rotate_issuer_inner(dir, store, opts, config, clock).await
    })
    .await
}

async fn rotate_issuer_inner(
    dir: &DataDir,
    store: &dyn Store,
    opts: &RotateIssuerOptions,
    config: &Config,
    clock: SharedClock,
) -> Result<IssuerRecord, BootstrapError> {
    let now = clock.now();
    let issuers = store.issuers().await?;
    let root = current_root(&issuers, now)?;
    let old = issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Issuing && i.active)
        .max_by_key(|i| i.not_before)
        .ok_or_else(|| BootstrapError::Inconsistent("no active issuing CA in the store".into()))?;
    let root_key_path = opts.root_key_path(dir);
    if !root_key_path.exists() {
        return Err(BootstrapError::Inconsistent(format!(
            "the root CA key is needed to sign a new issuing CA and {} does not exist; \
             give it with --root-key FILE (an imported CA is rolled over by its own root)",
            root_key_path.display()
        )));
    }
    let root_ca = opts.root_signer(dir, root)?;
    // A root publishes through Hallmark once Hallmark signed its first CRL (an imported
    // corporate root never does unless asked: its own PKI publishes its CRL).
    let publishes = store.root_crl(&root.id).await?.is_some();
    let (der, key) = ca::create_issuing_under(
        &root_ca,
        &config.organisation,
        now,
        ISSUING_LIFETIME,
        publishes.then(|| root_crl_url(config, &root.id)),
    )?;
    let id = ca::ca_id("issuing", &der);
    // Files first, under their own names; the store switch below is what makes it live.
    let (old_crt, old_key) = dir.issuing_files(&old.id);
    for (from, to, mode) in [
        (&old_crt, dir.ca(&format!("{}.crt", old.id)), 0o644),
        (&old_key, dir.ca(&format!("{}.key", old.id)), 0o600),
    ] {
        if *from != to {
            let bytes = std::fs::read(from).map_err(io_err(from))?;
            fsutil::write_atomic(&to, &bytes, mode).map_err(io_err(&to))?;
        }
    }
    let crt_path = dir.ca(&format!("{id}.crt"));
    fsutil::write_atomic(&crt_path, der_to_pem(&der).as_bytes(), 0o644)
        .map_err(io_err(&crt_path))?;
    keyfile::write_key(
        &dir.ca(&format!("{id}.key")),
        &key,
        opts.passphrase.as_ref(),
    )?;

    const ACTOR: &str = "system:issuer-rotate";
    let record = issuer_record(IssuerKind::Issuing, id.clone(), &der)?;
    if publishes {
        // The key is at hand: a fresh root CRL, so that an offline root's CRL is renewed at
        // every ceremony.
        let switch = CommitWith::Rotation {
            issuer: record.clone(),
            retire: old.id.clone(),
            at: now,
            actor: ACTOR.into(),
        };
        sign_root_crl_with(store, &root_ca, config, now, ACTOR, |issuers| {
            (issuers, switch.clone())
        })
        .await?;
    } else {
        store
            .rotate_issuer(IssuerRotation {
                issuer: record.clone(),
                retire: old.id.clone(),
                root_crl: None,
                at: now,
                actor: ACTOR.into(),
            })
            .await?;
    }
    // Convenience copies for people and scripts: ca/issuing.* is always the active CA.
    let active_crt = dir.ca("issuing.crt");
    fsutil::write_atomic(&active_crt, der_to_pem(&der).as_bytes(), 0o644)
        .map_err(io_err(&active_crt))?;
    keyfile::write_key(&dir.ca("issuing.key"), &key, opts.passphrase.as_ref())?;
    write_trust_bundle(dir, store, now).await?;
    Ok(record)
}

/// Options of `hallmark-ca issuer revoke`.
#[derive(Debug, Clone)]
pub struct RevokeIssuerOptions {
    /// The data dir and root key.
    pub root: RootKeyOptions,
    /// The issuing CA: its id (`issuing-1a2b3c4d`) or its certificate's serial (hex).
    pub issuer: String,
    /// RFC 5280 reason code; `None` for unspecified.
    pub reason: Option<i64>,
}

/// What [`revoke_issuer`] did.
#[derive(Debug, Clone)]
pub struct RevokedIssuer {
    /// The revoked issuing CA.
    pub issuer: IssuerRecord,
    /// The root CRL that lists it.
    pub root_crl: RootCrlRecord,
    /// Certificates it signed that were still valid: they are refused from now on.
    pub valid_certificates: i64,
    /// Whether the CA's own API server certificate was among them (renewed at the next start).
    pub server_certificate: bool,
}

/// The issuing CA `given` names: its id, or its certificate's serial (hex, any case, colons
/// allowed).
fn find_issuer<'a>(
    issuers: &'a [IssuerRecord],
    given: &str,
) -> Result<&'a IssuerRecord, BootstrapError> {
    let serial = given.trim().to_ascii_lowercase().replace(':', "");
    let serial = serial.trim_start_matches('0');
    issuers
        .iter()
        .find(|i| {
            i.id == given
                || (!serial.is_empty()
                    && ca::serial_hex_of(&i.cert_der)
                        .is_some_and(|s| s.trim_start_matches('0') == serial))
        })
        .ok_or_else(|| {
            BootstrapError::Refused(format!(
                "no CA has id or serial `{}`; `hallmark-ca issuer list` shows them",
                given.escape_default()
            ))
        })
}

/// Revokes a retired issuing CA: recorded and audited (`issuer.revoke`) in one transaction with
/// a new CRL of its root that lists it, signed with the root key (`--root-key`, or
/// `ca/root.key` of the data dir). From then on it signs nothing, it leaves the trust bundle,
/// and the certificates it signed are refused as callers. Refused, changing nothing, for the
/// active issuing CA (roll over first), a root, an issuer revoked already, without the root
/// key or with another key, and when it would take the last valid admin credential.
pub async fn revoke_issuer(
    opts: &RevokeIssuerOptions,
    config: &Config,
    clock: SharedClock,
) -> Result<RevokedIssuer, BootstrapError> {
    let profiles = config
        .profile_set()
        .map_err(|e| BootstrapError::Inconsistent(e.to_string()))?;
    let admin_profiles = profiles.names_where(|p| p.role == crate::authority::profile::Role::Admin);
    with_store(&opts.root, config, async |dir, store| {
        const ACTOR: &str = "system:issuer-revoke";
        let now = clock.now();
        let issuers = store.issuers().await?;
        let target = find_issuer(&issuers, &opts.issuer)?.clone();
        if target.kind == IssuerKind::Root {
            return Err(BootstrapError::Refused(format!(
                "{} is a root CA; only issuing CAs are revoked (on their root's CRL). A root is \
                 retired by removing it from every trust bundle",
                target.id
            )));
        }
        if let Some(at) = target.revoked_at {
            return Err(BootstrapError::Refused(format!(
                "issuing CA {} is revoked already (since {})",
                target.id,
                crate::clock::rfc3339(at)
            )));
        }
        if target.active {
            return Err(BootstrapError::Refused(format!(
                "issuing CA {} is the active one, which signs every new certificate; roll over \
                 first (`hallmark-ca issuer rotate`), then revoke it",
                target.id
            )));
        }
        let root = root_crl::root_of(&target, &issuers).ok_or_else(|| {
            BootstrapError::Refused(format!(
                "issuing CA {} was not signed by a root in the store; revoke it where its root \
                 is kept",
                target.id
            ))
        })?;
        let root_ca = opts.root.root_signer(dir, root)?;
        let valid_certificates = store.valid_certificates_of(&target.id, now).await?;
        let server_certificate = read_cert_pem(&dir.server("cert.pem"))
            .is_ok_and(|der| root_crl::signed_by(&der, &target.cert_der));
        let details = serde_json::json!({
            "serial": ca::serial_hex_of(&target.cert_der),
            "root": root.id,
            "valid_certificates": valid_certificates,
            "os_user": std::env::var("USER").unwrap_or_default(),
        });
        // A concurrent root CRL signature (a serving CA holding the root key) makes the store
        // refuse ours with a conflict: sign again with what is stored then.
        let root_crl = sign_root_crl_with(store, &root_ca, config, now, ACTOR, |mut after| {
            for i in after.iter_mut().filter(|i| i.id == target.id) {
                i.revoked_at = Some(now);
                i.revocation_reason = opts.reason;
            }
            let revoke = CommitWith::Revocation {
                id: target.id.clone(),
                reason: opts.reason,
                admin_profiles: admin_profiles.clone(),
                details: details.clone(),
                at: now,
                actor: ACTOR.into(),
            };
            (after, revoke)
        })
        .await?;
        write_trust_bundle(dir, store, now).await?;
        let issuer = store
            .issuers()
            .await?
            .into_iter()
            .find(|i| i.id == target.id)
            .unwrap_or(target);
        Ok(RevokedIssuer {
            issuer,
            root_crl,
            valid_certificates,
            server_certificate,
        })
    })
    .await
}

/// Signs a fresh CRL of the current root with the root key and stores it for the CA to serve:
/// how a root kept offline renews its CRL before `nextUpdate` (the CA warns when under a
/// quarter of its validity is left), and how an older data dir starts publishing one.
pub async fn sign_root_crl(
    opts: &RootKeyOptions,
    config: &Config,
    clock: SharedClock,
) -> Result<RootCrlRecord, BootstrapError> {
    with_store(opts, config, async |dir, store| {
        let now = clock.now();
        let issuers = store.issuers().await?;
        let root = current_root(&issuers, now)?;
        let root_ca = opts.root_signer(dir, root)?;
        sign_root_crl_with(store, &root_ca, config, now, "system:root-crl", |issuers| {
            (issuers, CommitWith::Nothing)
        })
        .await
    })
    .await
}
