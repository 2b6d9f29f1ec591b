//! Who is calling: the client certificate of the connection, looked up in the store on every
//! call. The role comes from the profile recorded for that serial, never from anything the
//! client sends, and a revoked, suspended, expired or unknown certificate is refused at once.

use std::sync::Arc;

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::profile::{ProfileSet, Role};
use crate::clock::SharedClock;
use crate::store::{CertStatus, DeviceStatus, Scope, Store, WriteOp};

pub use crate::authority::ca::serial_hex;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// CN of its certificate (device id or credential name).
    pub name: String,
    /// Serial of its certificate, hex.
    pub serial: String,
    /// Profile recorded for that serial.
    pub profile: String,
    /// Role from that profile.
    pub role: Role,
    /// Zone recorded for it.
    pub zone: String,
    /// Provisioner scope, when it has one.
    pub scope: Option<Scope>,
    /// Hex SHA-256 of its certificate's public key.
    pub spki_sha256: String,
    /// Its certificate's validity end.
    pub not_after: i64,
}

impl Caller {
    /// `name/serial`, as written into audit events.
    pub fn actor(&self) -> String {
        format!("{}/{}", self.name, self.serial)
    }

    /// Whether a provisioner's scope covers `profile` in `zone` (false for other roles).
    pub fn scope_covers(&self, profile: &str, zone: &str) -> bool {
        self.scope.as_ref().is_some_and(|s| {
            s.profiles.iter().any(|p| p == profile) && s.zones.iter().any(|z| z == zone)
        })
    }

    /// Refuses, with the provisioner's scope in the message, unless it covers `profile` in
    /// `zone`; other roles pass.
    pub fn require_scope(&self, action: &str, profile: &str, zone: &str) -> Result<(), String> {
        if self.role != Role::Provisioner || self.scope_covers(profile, zone) {
            return Ok(());
        }
        let scope = self.scope.clone().unwrap_or_default();
        Err(format!(
            "provisioner {} may {action} profiles [{}] in zones [{}]; not profile {profile} in zone {zone}",
            self.name,
            scope.profiles.join(", "),
            scope.zones.join(", ")
        ))
    }

    /// Whether the caller may read what belongs to `device` (of `profile`, in `zone`).
    pub fn may_read(&self, device: &str, profile: &str, zone: &str) -> bool {
        match self.role {
            Role::Admin | Role::BrokerAgent => true,
            Role::Provisioner => self.scope_covers(profile, zone),
            Role::Device => self.name == device,
            Role::Server => false,
        }
    }

    /// Refuses the call unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], rpc: &str) -> Result<(), Status> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let wanted: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        Err(Status::permission_denied(format!(
            "{} has role {}; {rpc} needs role {}",
            self.name,
            self.role,
            wanted.join(" or ")
        )))
    }
}

/// Authenticates callers against the store.
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Store,
    profiles: Arc<ProfileSet>,
    clock: SharedClock,
}

impl Authenticator {
    /// An authenticator reading from `store`.
    pub fn new(store: Store, profiles: Arc<ProfileSet>, clock: SharedClock) -> Self {
        Self {
            store,
            profiles,
            clock,
        }
    }

    /// Whether `chain` is a valid IDevID of a registered manufacturer (only to explain a refusal).
    async fn is_idevid(&self, chain: &[rustls_pki_types::CertificateDer<'static>]) -> bool {
        match self.store.manufacturer_cas().await {
            Ok(m) if !m.is_empty() => {
                crate::authority::idevid::verify_idevid(chain, &m, self.clock.now()).is_ok()
            }
            _ => false,
        }
    }

    /// The caller of `request`, or UNAUTHENTICATED with the reason.
    pub async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.caller_from_certs(request.peer_certs()).await
    }

    /// The caller presenting `certs` (the TLS peer chain), checked against the store now.
    pub async fn caller_from_certs(
        &self,
        certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    ) -> Result<Caller, Status> {
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(Status::unauthenticated(
                "no client certificate: this call needs a Hallmark credential as TLS client \
                 certificate",
            ));
        };
        let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|_| {
            Status::unauthenticated("the client certificate is not a parseable X.509 certificate")
        })?;
        let serial = serial_hex(cert.raw_serial());
        let foreign = || {
            Status::unauthenticated(format!(
                "client certificate `{}` (issuer `{}`, serial {serial}) was not issued by this \
                 Hallmark CA; use a credential from `hallmark credential create`",
                cert.subject(),
                cert.issuer()
            ))
        };
        let found = self
            .store
            .certificate_of_caller(&serial)
            .await
            .map_err(super::store_status)?;
        let (record, device_status, issuer_revoked) = match found {
            Some(c) if c.record.der == leaf.as_ref() => {
                (Some(c.record), c.device_status, c.issuer_revoked)
            }
            _ => (None, DeviceStatus::Active, false),
        };
        let Some(record) = record else {
            if let Some(chain) = certs.as_deref()
                && self.is_idevid(chain).await
            {
                return Err(Status::unauthenticated(format!(
                    "client certificate `{}` is a manufacturer certificate (IDevID); those are \
                         accepted only by Enroll: enroll first and call with the operational credential",
                    cert.subject()
                )));
            }
            return Err(foreign());
        };
        match record.status {
            CertStatus::Active => {}
            CertStatus::Revoked => {
                return Err(Status::unauthenticated(format!(
                    "client certificate {serial} of {} is revoked",
                    record.device_id
                )));
            }
            CertStatus::Suspended => {
                return Err(Status::unauthenticated(format!(
                    "client certificate {serial} of {} is suspended (on hold)",
                    record.device_id
                )));
            }
        }
        if issuer_revoked {
            // A revoked issuing CA takes every certificate it signed with it (RFC 5280 path
            // validation refuses them through the root's CRL).
            return Err(Status::unauthenticated(format!(
                "client certificate {serial} of {} was signed by issuing CA {}, which is revoked; \
                 get a new credential (devices enroll again)",
                record.device_id, record.issuer_id
            )));
        }
        if device_status != DeviceStatus::Active {
            return Err(Status::unauthenticated(format!(
                "{} is {} in the registry; its certificates are refused until an admin resumes it",
                record.device_id,
                device_status.as_str()
            )));
        }
        let now = self.clock.now();
        if now >= record.not_after || now < record.not_before {
            return Err(Status::unauthenticated(format!(
                "client certificate {serial} of {} is not valid now (expired or not yet valid)",
                record.device_id
            )));
        }
        let role = self
            .profiles
            .get(&record.profile)
            .map(|p| p.role)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "client certificate {serial} has profile {}, which is no longer configured",
                    record.profile
                ))
            })?;
        if record.first_authenticated_at.is_none() {
            // Once per certificate: from now on its predecessor may no longer renew (a copy of
            // an old key cannot mint once the device has moved on).
            self.store
                .write(WriteOp::MarkAuthenticated {
                    serial: record.serial.clone(),
                    at: now,
                })
                .await
                .map_err(super::store_status)?;
        }
        Ok(Caller {
            name: record.device_id,
            serial,
            profile: record.profile,
            role,
            zone: record.zone,
            scope: record.scope,
            spki_sha256: record.spki_sha256,
            not_after: record.not_after,
        })
    }
}
