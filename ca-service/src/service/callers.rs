//! Who is calling: the client certificate of the connection, looked up in the store on every
//! call (the front-end hands over the TLS peer chain; nothing else of the client counts). The role comes from the profile recorded for that serial, never from anything the
//! client sends, and a revoked, suspended, expired or unknown certificate is refused at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::{ServiceError, ServiceResult};
use crate::authority::profile::{ProfileSet, Role};
use crate::clock::SharedClock;
use crate::store::interface::Store;
use crate::store::{CallerCertificate, CertStatus, DeviceStatus, Scope};
use hallmark_core::serial::serial_hex;

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
    /// Its certificate, DER (byte for byte the one recorded).
    pub der: Vec<u8>,
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
    pub fn require(&self, roles: &[Role], rpc: &str) -> ServiceResult<()> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let wanted: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        Err(ServiceError::denied(format!(
            "{} has role {}; {rpc} needs role {}",
            self.name,
            self.role,
            wanted.join(" or ")
        )))
    }
}

/// How long a caller's record is taken from memory at most. Every change this process makes,
/// and every change another replica announces, ends it at once
/// ([`Store::caller_generation`]); this bounds what no announcement covers: a command run on
/// the same SQLite file by another process (`hallmark-ca issuer revoke`) and a notification
/// lost with its connection before the loss is noticed.
const CALLER_TTL: Duration = Duration::from_secs(1);

/// Callers' records kept at most this many; a full cache drops what is stale, else all.
const CALLER_CACHE_MAX: usize = 4096;

/// A caller's record as read, the store's caller generation before the read, and when.
#[derive(Debug)]
struct CachedCaller {
    found: Arc<CallerCertificate>,
    generation: u64,
    read_at: Instant,
}

/// Records of recent callers by serial, so that a credential making many calls (a
/// provisioner, an admin, a broker agent) is not read from the store on every one. Only what
/// the store says is kept: every check of [`Authenticator::caller_from_certs`] (status, device,
/// issuer, validity now, role) runs on every call.
#[derive(Debug, Default)]
struct CallerCache {
    entries: Mutex<HashMap<String, CachedCaller>>,
}

impl CallerCache {
    /// The record of `serial` if it was read at `generation` less than [`CALLER_TTL`] ago.
    fn get(&self, serial: &str, generation: u64) -> Option<Arc<CallerCertificate>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(serial)
            .filter(|c| c.generation == generation && c.read_at.elapsed() < CALLER_TTL)
            .map(|c| c.found.clone())
    }

    /// Keeps `found`, read after the caller generation was `generation` at `asked` (the TTL
    /// counts from before the read, so a slow read does not stretch it).
    fn put(&self, found: Arc<CallerCertificate>, generation: u64, asked: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CALLER_CACHE_MAX {
            entries.retain(|_, c| c.generation == generation && c.read_at.elapsed() < CALLER_TTL);
            if entries.len() >= CALLER_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(
            found.record.serial.clone(),
            CachedCaller {
                found,
                generation,
                read_at: asked,
            },
        );
    }
}

/// Authenticates callers against the store.
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    profiles: Arc<ProfileSet>,
    clock: SharedClock,
    cache: Arc<CallerCache>,
}

impl Authenticator {
    /// An authenticator reading from `store`.
    pub fn new(store: Arc<dyn Store>, profiles: Arc<ProfileSet>, clock: SharedClock) -> Self {
        Self {
            store,
            profiles,
            clock,
            cache: Arc::default(),
        }
    }

    /// The record of the caller with `serial` (any certificate with that serial), from memory
    /// while nothing that could change it was committed, else from the store.
    async fn certificate_of_caller(
        &self,
        serial: &str,
    ) -> ServiceResult<Option<Arc<CallerCertificate>>> {
        // Taken before the read: a change committed during the read moves it, and the record
        // read is then never used again.
        let generation = self.store.caller_generation();
        let asked = Instant::now();
        if let Some(found) = self.cache.get(serial, generation) {
            return Ok(Some(found));
        }
        let Some(found) = self.store.certificate_of_caller(serial).await? else {
            return Ok(None);
        };
        let found = Arc::new(found);
        if found.record.status == CertStatus::Active
            && found.record.first_authenticated_at.is_some()
        {
            self.cache.put(found.clone(), generation, asked);
        }
        Ok(Some(found))
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

    /// The caller presenting `certs` (the TLS peer chain), checked against the store now.
    pub async fn caller_from_certs(
        &self,
        certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    ) -> ServiceResult<Caller> {
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(ServiceError::unauthenticated(
                "no client certificate: this call needs a Hallmark credential as TLS client \
                 certificate",
            ));
        };
        let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|_| {
            ServiceError::unauthenticated(
                "the client certificate is not a parseable X.509 certificate",
            )
        })?;
        let serial = serial_hex(cert.raw_serial());
        let foreign = || {
            ServiceError::unauthenticated(format!(
                "client certificate `{}` (issuer `{}`, serial {serial}) was not issued by this \
                 Hallmark CA; use a credential from `hallmark credential create`",
                cert.subject(),
                cert.issuer()
            ))
        };
        let found = self.certificate_of_caller(&serial).await?;
        let (record, device_status, issuer_revoked) = match found.as_deref() {
            Some(c) if c.record.der == leaf.as_ref() => {
                (Some(&c.record), c.device_status, c.issuer_revoked)
            }
            _ => (None, DeviceStatus::Active, false),
        };
        let Some(record) = record else {
            if let Some(chain) = certs.as_deref()
                && self.is_idevid(chain).await
            {
                return Err(ServiceError::unauthenticated(format!(
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
                return Err(ServiceError::unauthenticated(format!(
                    "client certificate {serial} of {} is revoked",
                    record.device_id
                )));
            }
            CertStatus::Suspended => {
                return Err(ServiceError::unauthenticated(format!(
                    "client certificate {serial} of {} is suspended (on hold)",
                    record.device_id
                )));
            }
        }
        if issuer_revoked {
            // A revoked issuing CA takes every certificate it signed with it (RFC 5280 path
            // validation refuses them through the root's CRL).
            return Err(ServiceError::unauthenticated(format!(
                "client certificate {serial} of {} was signed by issuing CA {}, which is revoked; \
                 get a new credential (devices enroll again)",
                record.device_id, record.issuer_id
            )));
        }
        if device_status != DeviceStatus::Active {
            return Err(ServiceError::unauthenticated(format!(
                "{} is {} in the registry; its certificates are refused until an admin resumes it",
                record.device_id,
                device_status.as_str()
            )));
        }
        let now = self.clock.now();
        if now >= record.not_after || now < record.not_before {
            return Err(ServiceError::unauthenticated(format!(
                "client certificate {serial} of {} is not valid now (expired or not yet valid)",
                record.device_id
            )));
        }
        let role = self
            .profiles
            .get(&record.profile)
            .map(|p| p.role)
            .ok_or_else(|| {
                ServiceError::denied(format!(
                    "client certificate {serial} has profile {}, which is no longer configured",
                    record.profile
                ))
            })?;
        if record.first_authenticated_at.is_none() {
            // Once per certificate: from now on its predecessor may no longer renew (a copy of
            // an old key cannot mint once the device has moved on). Until the mark is read
            // back, the record is not kept in memory.
            self.store.mark_authenticated(&record.serial, now).await?;
        }
        Ok(Caller {
            name: record.device_id.clone(),
            serial,
            profile: record.profile.clone(),
            role,
            zone: record.zone.clone(),
            scope: record.scope.clone(),
            spki_sha256: record.spki_sha256.clone(),
            not_after: record.not_after,
            der: record.der.clone(),
        })
    }
}
