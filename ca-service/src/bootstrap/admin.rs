//! Break-glass admin credentials made on the CA host (`hallmark-ca admin create`).

use std::path::PathBuf;

use std::sync::Arc;

use super::credentials::{sign_admin, system_service, write_admin_bundle};
use super::{ADMIN_PROFILE, BootstrapError, naming};
use crate::authority::Authority;
use crate::authority::profile::ProfileSet;
use crate::authority::server_identity::SERVER_DEVICE;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::identity::DeviceId;
use crate::keyring::Keyring;
use crate::keys::Passphrase;
use crate::store::Store;
use crate::trust::TrustMaterial;

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
    let store = dir.database(config)?.open(config.max_commit_batch).await?;
    let result =
        create_admin_inner(&dir, &store, opts, &name, config, Arc::new(profiles), clock).await;
    store.close().await;
    result
}

async fn create_admin_inner(
    dir: &DataDir,
    store: &Arc<dyn Store>,
    opts: &CreateAdminOptions,
    name: &DeviceId,
    config: &Config,
    profiles: Arc<ProfileSet>,
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
    let keyring = Keyring::load(dir.clone(), opts.passphrase.clone(), &issuers)?;
    let authority = Authority::new(keyring.active(), naming(config), clock.clone());
    const ACTOR: &str = "system:admin-create";
    let trust = TrustMaterial::from_issuers(&issuers, now);
    let service = system_service(store.clone(), authority, profiles, config, trust)?;
    let (signed, key_pem) = sign_admin(&service, name, &zone, ACTOR).await?;
    let event = crate::audit::AuditEvent::new(
        now,
        ACTOR,
        "admin.create",
        name.as_str(),
        serde_json::json!({
            "serial": signed.serial(),
            "zone": zone,
            "out": opts.out.display().to_string(),
            "os_user": std::env::var("USER").unwrap_or_default(),
        }),
    );
    let issued = service.record(signed, vec![event]).await?;
    write_admin_bundle(&opts.out, &issued, key_pem)?;
    Ok(CreatedAdmin {
        name: name.to_string(),
        serial: issued.record.serial.clone(),
        not_after: issued.record.not_after,
    })
}
