//! The certificates the CA makes for itself on its host: the API server certificate and admin
//! credentials, asked for through the service's [`SystemCredential`] method, signed by the
//! active issuing CA and recorded like any issuance.

use std::path::Path;

use std::sync::Arc;

use super::{BootstrapError, io_err};
use crate::authority::Authority;
use crate::authority::ca::der_to_pem;
use crate::authority::profile::ProfileSet;
use crate::authority::server_identity::SERVER_DEVICE;
use crate::bundle::{CredentialBundle, new_key_and_csr};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::fsutil;
use crate::identity::DeviceId;
use crate::service::issuance::{Issued, Signed};
use crate::service::methods::{EnrollmentMethod, SystemCredential};
use crate::service::{Service, ServiceParts};
use crate::store::Store;
use crate::trust::{TrustHandle, TrustMaterial};

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

/// The service that makes the CA's own credentials on this host: the same issuance path as
/// every other certificate (a [`SystemCredential`] plan, signed and recorded by the service).
pub(super) fn system_service(
    store: Arc<dyn Store>,
    authority: Authority,
    profiles: Arc<ProfileSet>,
    config: &Config,
    trust: TrustMaterial,
) -> Result<Service, BootstrapError> {
    let host_names = config
        .host_names(&server_names(config))
        .map_err(|e| BootstrapError::Inconsistent(e.to_string()))?;
    Ok(Service::new(ServiceParts {
        store,
        authority,
        profiles,
        host_names: Arc::new(host_names),
        default_zone: config.default_zone.clone(),
        trust: TrustHandle::new(trust),
    }))
}

/// Signs (not yet records) a fresh API server certificate; returns it with its new key (PEM).
pub(super) async fn sign_server_cert(
    service: &Service,
    config: &Config,
) -> Result<(Signed, String), BootstrapError> {
    let (key_pem, csr) = new_key_and_csr(SERVER_DEVICE)?;
    let method = SystemCredential::CaServer {
        names: server_names(config),
        csr,
    };
    let plan = method.plan(service).await?;
    Ok((service.sign_plan(plan).await?, key_pem))
}

/// Signs (not yet records) an admin credential for `name` in `zone` with a fresh key, asked
/// for by `actor`: the first admin at init and a break-glass admin (`hallmark-ca admin
/// create`). Returns it with its key (PEM).
pub(super) async fn sign_admin(
    service: &Service,
    name: &DeviceId,
    zone: &str,
    actor: &str,
) -> Result<(Signed, String), BootstrapError> {
    let (key_pem, csr) = new_key_and_csr(name.as_str())?;
    let method = SystemCredential::Admin {
        name: name.clone(),
        zone: zone.to_owned(),
        csr,
        actor: actor.to_owned(),
    };
    let plan = method.plan(service).await?;
    Ok((service.sign_plan(plan).await?, key_pem))
}

/// Writes an admin credential bundle into `out` (after its certificate is recorded).
pub(super) fn write_admin_bundle(
    out: &Path,
    issued: &Issued,
    key_pem: String,
) -> Result<(), BootstrapError> {
    CredentialBundle {
        key_pem,
        chain_pem: issued.chain_pem.clone(),
        cert_pem: der_to_pem(&issued.record.der),
        ca_pem: issued.trust_bundle_pem.clone(),
    }
    .write(out)
    .map_err(|e| BootstrapError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Replaces `server/` (key, cert, chain) as one directory, after the certificate is recorded.
pub(super) fn write_server_dir(
    dir: &DataDir,
    issued: &Issued,
    key_pem: &str,
) -> Result<(), BootstrapError> {
    let cert_pem = der_to_pem(&issued.record.der);
    let server_dir = dir.path().join("server");
    fsutil::replace_dir_atomically(
        &server_dir,
        &[
            ("cert.pem", cert_pem.as_bytes(), 0o644),
            ("chain.pem", issued.chain_pem.as_bytes(), 0o644),
            ("key.pem", key_pem.as_bytes(), 0o600),
        ],
    )
    .map_err(io_err(&server_dir))
}
