//! The certificates the CA makes for itself on its host: the API server certificate and admin
//! credentials, signed by the active issuing CA and recorded like any issuance.

use std::path::Path;

use super::{ADMIN_PROFILE, BootstrapError, io_err};
use crate::authority::ca::der_to_pem;
use crate::authority::csr::check_csr;
use crate::authority::profile::{ProfileSet, SERVER_PROFILE};
use crate::authority::server_identity::SERVER_DEVICE;
use crate::authority::{Authority, IssuedLeaf, LeafRequest};
use crate::bundle::{CredentialBundle, new_key_and_csr};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::fsutil;
use crate::identity::DeviceId;
use crate::store::{DeviceClaim, NewCertificate, WriteOp};
use crate::trust::TrustMaterial;

fn spki_sha256_of_cert(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let spki = X509Certificate::from_der(der)
        .map(|(_, c)| c.public_key().raw.to_vec())
        .unwrap_or_default();
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki))
}

/// The write that records a certificate issued by the CA itself (`system`).
pub(super) fn system_issue(
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
pub(super) fn issue_by(
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
pub(super) async fn make_server_cert(
    authority: &Authority,
    profiles: &ProfileSet,
    config: &Config,
) -> Result<(IssuedLeaf, String), BootstrapError> {
    let profile = profiles
        .get(SERVER_PROFILE)
        .ok_or_else(|| BootstrapError::Inconsistent("internal server profile missing".into()))?;
    let (key_pem, csr) = new_key_and_csr(SERVER_DEVICE)?;
    let csr = check_csr(&csr, profile).map_err(|e| BootstrapError::Certificate(e.to_string()))?;
    let leaf = authority
        .sign_server_async(&server_names(config), &csr, profile)
        .await?;
    Ok((leaf, key_pem))
}

/// Signs an admin credential for `name` in `zone` with a fresh key: the first admin at init
/// and a break-glass admin (`hallmark-ca admin create`). Returns the leaf and its key (PEM).
pub(super) async fn sign_admin(
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
    let leaf = authority
        .sign_leaf_async(&LeafRequest {
            device_id: name,
            zone,
            profile: admin_profile,
            csr: &csr,
            lifetime: None,
            dns_san_allowed: true,
        })
        .await?;
    Ok((leaf, key_pem))
}

/// Writes an admin credential bundle into `out` (after its certificate is recorded).
pub(super) fn write_admin_bundle(
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
pub(super) fn write_server_dir(
    dir: &DataDir,
    leaf: &IssuedLeaf,
    key_pem: &str,
) -> Result<(), BootstrapError> {
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
