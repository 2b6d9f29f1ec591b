//! Every start of `serve`: opening the store, loading the issuer keys and renewing the API
//! server certificate when it is due.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::credentials::{server_names, sign_server_cert, system_service, write_server_dir};
use super::{BootstrapError, io_err, naming, read_cert_pem};
use crate::authority::Authority;
use crate::authority::ca;
use crate::authority::profile::ProfileSet;
use crate::authority::server_identity::has_ca_server_eku;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::keyring::Keyring;
use crate::keys::Passphrase;
use crate::root_crl;
use crate::store::Store;
use crate::trust::TrustMaterial;

/// Renew the API server certificate at start when less than this share of its life is left.
const SERVER_RENEW_FRACTION: f64 = 1.0 / 3.0;

/// Everything `serve` needs, loaded from an initialised data dir.
#[derive(Debug)]
pub struct Loaded {
    /// The open store.
    pub store: Arc<dyn Store>,
    /// The signing authority.
    pub authority: Authority,
    /// The issuer keys (the authority's active issuing CA among them).
    pub keyring: Keyring,
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
    let database = dir.database(config)?;
    let store = database.open(config.max_commit_batch).await?;
    let issuers = store.issuers().await?;
    if issuers.is_empty() {
        store.close().await;
        return Err(BootstrapError::Inconsistent(format!(
            "the database {database} holds no CA, but {} was initialised: serve it with the \
             database it was initialised with (--database-url, or none for its own SQLite file)",
            data_dir.display()
        )));
    }
    let keyring = Keyring::load(dir.clone(), passphrase.cloned(), &issuers)?;
    let authority = Authority::new(keyring.active(), naming(config), clock.clone());
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
        let service = system_service(
            store.clone(),
            authority.clone(),
            profiles.clone(),
            config,
            TrustMaterial::from_issuers(&issuers, now),
        )?;
        let (signed, key_pem) = sign_server_cert(&service, config).await?;
        // Recorded first: a certificate never goes live without its row.
        let issued = service.record(signed, Vec::new()).await?;
        write_server_dir(&dir, &issued, &key_pem)?;
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
        keyring,
        profiles,
        trust,
        server_chain,
        server_key,
    })
}
