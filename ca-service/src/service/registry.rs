//! The registry's use cases: registering devices (one or a lot), suspending, resuming,
//! decommissioning and re-admitting them, enrollment tokens and manufacturer CAs.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Caller, Service, ServiceError, ServiceResult};
use crate::authority::profile::Role;
use crate::authority::server_identity::SERVER_DEVICE;
use crate::authority::token::new_token;
use crate::identity::{DeviceId, validate_name};
use crate::store::{
    DeviceRecord, DeviceStatus, DeviceStatusUpdate, ManufacturerCaRecord, NewDevice, TokenRecord,
};

/// Most rows one import takes.
pub const MAX_IMPORT_ROWS: usize = 1000;
/// Longest free-text field (model, serial number).
const MAX_FREE_TEXT: usize = 128;
/// Token lifetime when the request names none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A device to register, as sent (empty text: not given).
#[derive(Debug, Clone, Default)]
pub struct DeviceRow {
    /// Device id.
    pub id: String,
    /// Zone.
    pub zone: String,
    /// Device profile.
    pub profile: String,
    /// Production lot.
    pub lot: String,
    /// Model (free text).
    pub model: String,
    /// Serial number (free text).
    pub serial_number: String,
    /// Manufacturer name (binds IDevID enrollment to it).
    pub manufacturer: String,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportOutcome {
    /// Rows registered.
    pub imported: usize,
    /// `(row index, reason)` of every refused row, by index.
    pub errors: Vec<(usize, String)>,
}

/// A new enrollment token.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    /// The token text (shown once; only its hash is kept).
    pub token: String,
    /// The device it enrolls.
    pub device_id: String,
    /// That device's profile.
    pub profile: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A manufacturer CA to register.
#[derive(Debug, Clone, Default)]
pub struct ManufacturerCaRequest {
    /// Its name.
    pub name: String,
    /// Zone of devices it enrolls.
    pub zone: String,
    /// Device profile of devices it enrolls.
    pub profile: String,
    /// Whether unknown serial numbers register themselves.
    pub auto_register: bool,
    /// The CA certificate, DER or PEM.
    pub ca_cert: Vec<u8>,
}

/// Why a row was refused: a scope refusal is the caller's, anything else the row's.
enum RowError {
    OutOfScope(String),
    Invalid(String),
}

impl RowError {
    fn message(self) -> String {
        match self {
            RowError::OutOfScope(m) | RowError::Invalid(m) => m,
        }
    }
}

fn free_text(field: &str, value: &str) -> Result<Option<String>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_FREE_TEXT || v.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{field} `{}` must be at most {MAX_FREE_TEXT} printable characters",
            v.escape_default()
        ));
    }
    Ok(Some(v.to_owned()))
}

impl Service {
    /// Validates a registration row against the grammar, the profiles and the caller's scope.
    fn check_row(&self, caller: &Caller, r: &DeviceRow) -> Result<NewDevice, RowError> {
        let invalid = |e: String| RowError::Invalid(e);
        DeviceId::parse(&r.id).map_err(|e| invalid(e.to_string()))?;
        self.host_names
            .check_device_id(&r.id)
            .map_err(|e| invalid(e.to_string()))?;
        if r.zone.is_empty() {
            return Err(invalid(format!("device {}: zone is missing", r.id)));
        }
        validate_name("zone", &r.zone).map_err(|e| invalid(e.to_string()))?;
        match self.profiles.get(&r.profile) {
            Some(p) if p.role == Role::Device => {}
            Some(_) => {
                return Err(invalid(format!(
                    "profile {} is not a device profile; operator credentials are made with `hallmark credential create`",
                    r.profile
                )));
            }
            None if r.profile.is_empty() => {
                return Err(invalid(format!("device {}: profile is missing", r.id)));
            }
            None => {
                return Err(invalid(format!(
                    "unknown profile `{}`",
                    r.profile.escape_default()
                )));
            }
        }
        caller
            .require_scope("register", &r.profile, &r.zone)
            .map_err(RowError::OutOfScope)?;
        let lot = if r.lot.is_empty() {
            None
        } else {
            validate_name("lot", &r.lot).map_err(|e| invalid(e.to_string()))?;
            Some(r.lot.clone())
        };
        let manufacturer = if r.manufacturer.is_empty() {
            None
        } else {
            validate_name("manufacturer", &r.manufacturer).map_err(|e| invalid(e.to_string()))?;
            Some(r.manufacturer.clone())
        };
        Ok(NewDevice {
            manufacturer,
            id: r.id.clone(),
            zone: r.zone.clone(),
            profile: r.profile.clone(),
            lot,
            model: free_text("model", &r.model).map_err(invalid)?,
            serial_number: free_text("serial number", &r.serial_number).map_err(invalid)?,
        })
    }

    async fn register_rows(
        &self,
        caller: &Caller,
        devices: Vec<NewDevice>,
    ) -> ServiceResult<(usize, Vec<(usize, String)>)> {
        let done = self
            .store
            .register_devices(devices, self.clock().now(), &caller.actor())
            .await?;
        Ok((done.registered, done.rejected))
    }

    /// Registers one device (admins, and provisioners within their scope).
    pub async fn register_device(
        &self,
        caller: &Caller,
        row: DeviceRow,
    ) -> ServiceResult<DeviceRecord> {
        caller.require(&[Role::Admin, Role::Provisioner], "Register")?;
        let device = self.check_row(caller, &row).map_err(|e| match e {
            RowError::OutOfScope(m) => ServiceError::Denied(m),
            RowError::Invalid(m) => ServiceError::Invalid(m),
        })?;
        let (_, rejected) = self.register_rows(caller, vec![device]).await?;
        if let Some((_, reason)) = rejected.into_iter().next() {
            return Err(ServiceError::AlreadyExists(reason));
        }
        self.store
            .device(&row.id)
            .await?
            .ok_or_else(|| ServiceError::internal("registered device not found"))
    }

    /// Registers a lot of devices; refused rows are reported one by one, the others kept.
    pub async fn import_devices(
        &self,
        caller: &Caller,
        rows: Vec<DeviceRow>,
    ) -> ServiceResult<ImportOutcome> {
        caller.require(&[Role::Admin, Role::Provisioner], "Import")?;
        if rows.len() > MAX_IMPORT_ROWS {
            return Err(ServiceError::invalid(format!(
                "{} rows in one call; send at most {MAX_IMPORT_ROWS} per call",
                rows.len()
            )));
        }
        let mut errors = Vec::new();
        let mut valid = Vec::new();
        let mut index_of = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match self.check_row(caller, row) {
                Ok(d) => {
                    index_of.push(i);
                    valid.push(d);
                }
                Err(e) => errors.push((i, e.message())),
            }
        }
        let (imported, rejected) = self.register_rows(caller, valid).await?;
        for (i, message) in rejected {
            errors.push((index_of[i], message));
        }
        errors.sort_by_key(|e| e.0);
        Ok(ImportOutcome { imported, errors })
    }

    /// Suspends, resumes or decommissions a device with its certificates (admins only).
    pub async fn set_device_status(
        &self,
        caller: &Caller,
        id: &str,
        status: Option<DeviceStatus>,
    ) -> ServiceResult<DeviceRecord> {
        caller.require(&[Role::Admin], "SetStatus")?;
        DeviceId::parse(id)?;
        if id == SERVER_DEVICE {
            return Err(ServiceError::invalid(format!(
                "{id} is the CA's own API identity; it cannot be suspended or decommissioned"
            )));
        }
        let status = status.ok_or_else(|| ServiceError::invalid("status is missing"))?;
        let changed = self
            .store
            .set_device_status(DeviceStatusUpdate {
                id: id.to_owned(),
                status,
                admin_profiles: self.operators(false).admin_profiles,
                at: self.clock().now(),
                actor: caller.actor(),
            })
            .await?;
        // The CRL publisher hears of the certificates from the store's status feed.
        tracing::info!(
            status = status.as_str(),
            certificates = changed.len(),
            "device status set"
        );
        self.store
            .device(id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("device {id} is not registered")))
    }

    /// Re-admits a decommissioned device (admins only).
    pub async fn readmit_device(&self, caller: &Caller, id: &str) -> ServiceResult<DeviceRecord> {
        caller.require(&[Role::Admin], "Readmit")?;
        DeviceId::parse(id)?;
        if id == SERVER_DEVICE {
            return Err(ServiceError::invalid(format!(
                "{id} is the CA's own API identity; it is never decommissioned or re-admitted"
            )));
        }
        self.store
            .readmit_device(id, self.clock().now(), &caller.actor())
            .await?;
        tracing::info!("device re-admitted");
        self.store
            .device(id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("device {id} is not registered")))
    }

    /// Makes a one-time enrollment token for a registered, active device (admins only).
    /// `ttl` 0 means [`DEFAULT_TOKEN_TTL`].
    pub async fn create_token(
        &self,
        caller: &Caller,
        device_id: &str,
        ttl_seconds: u64,
    ) -> ServiceResult<CreatedToken> {
        caller.require(&[Role::Admin], "CreateToken")?;
        DeviceId::parse(device_id)?;
        let ttl = match ttl_seconds {
            0 => DEFAULT_TOKEN_TTL,
            s if Duration::from_secs(s) > MAX_TOKEN_TTL => {
                return Err(ServiceError::invalid(format!(
                    "token lifetime {s}s is over the maximum of {}s (30 days)",
                    MAX_TOKEN_TTL.as_secs()
                )));
            }
            s => Duration::from_secs(s),
        };
        let device = self.store.device(device_id).await?.ok_or_else(|| {
            ServiceError::not_found(format!(
                "device {device_id} is not registered; register it first (`hallmark device register`)"
            ))
        })?;
        let is_device = self
            .profiles
            .get(&device.profile)
            .is_some_and(|p| p.role == Role::Device);
        if !is_device {
            return Err(ServiceError::precondition(format!(
                "{} has profile {}, not a device profile: tokens enroll devices only \
                 (operator credentials come from `hallmark credential create`)",
                device.id, device.profile
            )));
        }
        if device.status != DeviceStatus::Active {
            return Err(ServiceError::precondition(format!(
                "device {} is {}; resume it before creating a token",
                device.id,
                device.status.as_str()
            )));
        }
        let (text, hash) =
            new_token().map_err(|_| ServiceError::internal("no randomness for the token"))?;
        let now = self.clock().now();
        let expires_at = now + ttl.as_secs() as i64;
        self.store
            .create_token(TokenRecord {
                hash: hash.to_vec(),
                device_id: device.id.clone(),
                profile: device.profile.clone(),
                expires_at,
                created_at: now,
                created_by: caller.actor(),
                used_at: None,
                revoked_at: None,
            })
            .await?;
        Ok(CreatedToken {
            token: text,
            device_id: device.id,
            profile: device.profile,
            expires_at,
        })
    }

    /// Revokes every unused token of a device (admins only); returns how many.
    pub async fn revoke_tokens(&self, caller: &Caller, device_id: &str) -> ServiceResult<u32> {
        caller.require(&[Role::Admin], "RevokeTokens")?;
        DeviceId::parse(device_id)?;
        let revoked = self
            .store
            .revoke_tokens(device_id, self.clock().now(), &caller.actor())
            .await?;
        Ok(u32::try_from(revoked).unwrap_or(u32::MAX))
    }

    /// Registers a manufacturer CA whose IDevIDs may enroll devices (admins only).
    pub async fn register_manufacturer_ca(
        &self,
        caller: &Caller,
        req: ManufacturerCaRequest,
    ) -> ServiceResult<ManufacturerCaRecord> {
        caller.require(&[Role::Admin], "RegisterManufacturerCa")?;
        validate_name("manufacturer name", &req.name)?;
        validate_name("zone", &req.zone)?;
        match self.profiles.get(&req.profile) {
            Some(p) if p.role == Role::Device => {}
            Some(_) => {
                return Err(ServiceError::invalid(format!(
                    "profile {} is not a device profile",
                    req.profile
                )));
            }
            None => {
                return Err(ServiceError::invalid(format!(
                    "unknown profile `{}`",
                    req.profile.escape_default()
                )));
            }
        }
        let der = if req.ca_cert.starts_with(b"-----BEGIN") {
            CertificateDer::from_pem_slice(&req.ca_cert)
                .map_err(|e| ServiceError::invalid(format!("CA certificate PEM: {e}")))?
                .as_ref()
                .to_vec()
        } else {
            req.ca_cert.clone()
        };
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| {
            ServiceError::invalid(format!(
                "the manufacturer CA is not an X.509 certificate: {e}"
            ))
        })?;
        if !crate::authority::ca::is_ca(&cert) {
            return Err(ServiceError::invalid(format!(
                "`{}` is not a CA certificate (basicConstraints CA:TRUE missing)",
                cert.subject()
            )));
        }
        let now = self.clock().now();
        if cert.validity().not_after.timestamp() <= now {
            return Err(ServiceError::invalid(format!(
                "the manufacturer CA `{}` expired at {}",
                cert.subject(),
                cert.validity().not_after
            )));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let record = ManufacturerCaRecord {
            id: format!("mfr-{}", hex::encode(&digest.as_ref()[..4])),
            name: req.name,
            subject: cert.subject().to_string(),
            not_after: cert.validity().not_after.timestamp(),
            cert_der: der.clone(),
            zone: req.zone,
            profile: req.profile,
            auto_register: req.auto_register,
            created_at: now,
        };
        self.store
            .add_manufacturer_ca(record.clone(), &caller.actor())
            .await?;
        Ok(record)
    }
}
