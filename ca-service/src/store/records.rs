//! Rows of the store as Rust types. Times are Unix seconds, serials lower-case hex.

use serde::{Deserialize, Serialize};

/// Kind of an issuer row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerKind {
    /// Self-signed (or external) root; trusted, never signs leaves here.
    Root,
    /// Signs leaves and CRLs.
    Issuing,
}

impl IssuerKind {
    /// Text stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Root => "root",
            IssuerKind::Issuing => "issuing",
        }
    }
}

/// A CA certificate known to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerRecord {
    /// Stable id (`root-xxxxxxxx`, `issuing-xxxxxxxx`).
    pub id: String,
    /// Root or issuing.
    pub kind: IssuerKind,
    /// Subject DN as text.
    pub subject: String,
    /// DER.
    pub cert_der: Vec<u8>,
    /// Validity start.
    pub not_before: i64,
    /// Validity end.
    pub not_after: i64,
    /// Whether it is the active signer (`true`) or retired.
    pub active: bool,
    /// When it was revoked (`hallmark-ca issuer revoke`), Unix seconds: a revoked issuing CA
    /// signs nothing more, leaves the trust bundle and is listed on its root's CRL.
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason code of the revocation.
    pub revocation_reason: Option<i64>,
}

impl IssuerRecord {
    /// Whether it is revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// `active`, `retired` or `revoked`, as listings show it.
    pub fn status_text(&self) -> &'static str {
        match (self.is_revoked(), self.active) {
            (true, _) => "revoked",
            (false, true) => "active",
            (false, false) => "retired",
        }
    }
}

/// A caller's certificate with what else the per-call check needs.
#[derive(Debug, Clone)]
pub struct CallerCertificate {
    /// The certificate.
    pub record: CertificateRecord,
    /// Registry status of its device.
    pub device_status: DeviceStatus,
    /// Whether its issuing CA is revoked (then none of its certificates is valid).
    pub issuer_revoked: bool,
}

/// The newest CRL of a root, as stored (see `hallmark_ca::root_crl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCrlRecord {
    /// The root's issuer id.
    pub issuer_id: String,
    /// CRL number.
    pub number: u64,
    /// `thisUpdate`, Unix seconds.
    pub this_update: i64,
    /// `nextUpdate`, Unix seconds.
    pub next_update: i64,
    /// Number of entries (revoked issuing CAs).
    pub entries: usize,
    /// The CRL, DER.
    pub der: Vec<u8>,
    /// When it was signed, Unix seconds.
    pub signed_at: i64,
    /// Who signed it (`system`, `system:issuer-revoke`...).
    pub signed_by: String,
}

/// The newest CRL of an issuing CA, as one replica built it for all (on a shared database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuingCrlRecord {
    /// The issuing CA's id.
    pub issuer_id: String,
    /// CRL number.
    pub number: u64,
    /// The status version ([`StatusBatch::version`]) whose changes it holds, all of them and
    /// all before.
    pub basis: i64,
    /// `thisUpdate`, Unix seconds.
    pub this_update: i64,
    /// `nextUpdate`, Unix seconds.
    pub next_update: i64,
    /// Number of entries.
    pub entries: usize,
    /// The CRL, DER.
    pub der: Vec<u8>,
    /// When it was built, Unix seconds.
    pub built_at: i64,
}

/// A failed enrollment, counted against the peer address it came from (the enrollment
/// throttle, shared by replicas).
#[derive(Debug, Clone)]
pub struct EnrollFailure {
    /// The peer's address.
    pub peer: String,
    /// Unix seconds.
    pub at: i64,
    /// Length of a throttle window, seconds: failures count from the first one in a window.
    pub window: i64,
    /// Failures within a window after which the peer is refused until the window ends.
    pub max_failures: i64,
    /// Recorded with the failure that reaches `max_failures` (once per window, whichever
    /// replica counts it).
    pub throttled_event: crate::audit::AuditEvent,
}

/// One committed batch of certificate status changes, as the status feed carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBatch {
    /// The status version this batch's commit made: one more than the batch committed before
    /// it, by any replica of the database.
    pub version: i64,
    /// The changes, in order.
    pub changes: Vec<RevocationStatus>,
}

/// Registry state of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// May hold and obtain certificates.
    Active,
    /// Temporarily barred.
    Suspended,
    /// Retired for good.
    Decommissioned,
}

impl DeviceStatus {
    /// Text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Suspended => "suspended",
            DeviceStatus::Decommissioned => "decommissioned",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "active" => DeviceStatus::Active,
            "decommissioned" => DeviceStatus::Decommissioned,
            // Fail closed on anything unexpected.
            _ => DeviceStatus::Suspended,
        }
    }
}

/// A registered device (or operator credential name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Device id.
    pub id: String,
    /// Zone.
    pub zone: String,
    /// Production lot.
    pub lot: Option<String>,
    /// Profile its certificates use.
    pub profile: String,
    /// Device model.
    pub model: Option<String>,
    /// Manufacturer serial number (matched against IDevID subjects).
    pub serial_number: Option<String>,
    /// Manufacturer (name of its manufacturer CA) the serial number belongs to; set by
    /// registration or bound by the first IDevID enrollment.
    pub manufacturer: Option<String>,
    /// Registry status.
    pub status: DeviceStatus,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

/// A device to register; see [`DeviceRecord`] for the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewDevice {
    pub id: String,
    pub zone: String,
    pub profile: String,
    pub lot: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    pub manufacturer: Option<String>,
}

/// Filters of a device listing; `None` matches all.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct DeviceFilter {
    pub zone: Option<String>,
    pub profile: Option<String>,
    pub lot: Option<String>,
    pub status: Option<DeviceStatus>,
}

/// A stored enrollment token (only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// SHA-256 of the token text.
    pub hash: Vec<u8>,
    /// Device it enrolls.
    pub device_id: String,
    /// Profile of the certificate it yields.
    pub profile: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// When it was used, if it was.
    pub used_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A registered manufacturer CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManufacturerCaRecord {
    /// Stable id (`mfr-` + hash prefix of the certificate).
    pub id: String,
    /// Short name.
    pub name: String,
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
    /// Zone its devices get.
    pub zone: String,
    /// Profile its devices get.
    pub profile: String,
    /// Whether unknown serial numbers register themselves.
    pub auto_register: bool,
    /// Subject DN as text.
    pub subject: String,
    /// Validity end of the CA certificate.
    pub not_after: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// Status of a certificate row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Not revoked.
    Active,
    /// Revoked for good.
    Revoked,
    /// On hold.
    Suspended,
}

impl CertStatus {
    /// Text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Active => "active",
            CertStatus::Revoked => "revoked",
            CertStatus::Suspended => "suspended",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "active" => CertStatus::Active,
            "suspended" => CertStatus::Suspended,
            // Fail closed on anything unexpected.
            _ => CertStatus::Revoked,
        }
    }
}

/// What a provisioner credential may issue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Profiles it may request.
    pub profiles: Vec<String>,
    /// Zones it may issue into.
    pub zones: Vec<String>,
}

/// A recorded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Issue order.
    pub seq: i64,
    /// Serial, hex.
    pub serial: String,
    /// Device id (CN).
    pub device_id: String,
    /// Profile.
    pub profile: String,
    /// Zone (OU).
    pub zone: String,
    /// Issuer id.
    pub issuer_id: String,
    /// Subject DN as text.
    pub subject: String,
    /// Validity start.
    pub not_before: i64,
    /// Validity end.
    pub not_after: i64,
    /// Status.
    pub status: CertStatus,
    /// When revoked or suspended.
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason code.
    pub revocation_reason: Option<i64>,
    /// Provisioner scope.
    pub scope: Option<Scope>,
    /// Who asked for it (`name/serial` or `system`).
    pub requested_by: String,
    /// Hex SHA-256 of the SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// DER.
    pub der: Vec<u8>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Serial of the certificate that replaced this one by renewal.
    pub superseded_by: Option<String>,
    /// Unix seconds at which it first authenticated a call to the CA.
    pub first_authenticated_at: Option<i64>,
}

/// A certificate to record; see [`CertificateRecord`] for the fields.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct NewCertificate {
    pub serial: String,
    pub device_id: String,
    pub profile: String,
    pub zone: String,
    pub issuer_id: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub scope: Option<Scope>,
    pub requested_by: String,
    pub spki_sha256: String,
    pub der: Vec<u8>,
    pub issued_at: i64,
}

/// The registry entry an issuance expects: created if the device is new, checked if it exists.
#[derive(Debug, Clone)]
pub struct DeviceClaim {
    /// Device id.
    pub id: String,
    /// Zone the certificate was signed for.
    pub zone: String,
    /// Profile the certificate was signed for.
    pub profile: String,
    /// Serial number to record when the device is new (IDevID self-registration).
    pub serial_number: Option<String>,
    /// Manufacturer whose IDevID made the claim: an existing device must belong to it (or to
    /// no manufacturer yet, and is then bound to it).
    pub manufacturer: Option<String>,
}

/// Filters of a certificate listing; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    /// Device id.
    pub device_id: Option<String>,
    /// Profile.
    pub profile: Option<String>,
    /// Status.
    pub status: Option<CertStatus>,
    /// Issuer id.
    pub issuer_id: Option<String>,
    /// Only unrevoked certificates with `from < notAfter <= to` (Unix seconds).
    pub expiring: Option<(i64, i64)>,
    /// Only these serials (lower-case hex); `None` for any.
    pub serials: Option<Vec<String>>,
    /// Only certificates replaced by a renewal (`Some(true)`) or not (`Some(false)`).
    pub superseded: Option<bool>,
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor for the next page; `None` on the last page.
    pub next: Option<i64>,
}

/// Which certificates a revocation, suspension or resumption applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSelector {
    /// One certificate.
    Serial(String),
    /// Every certificate of a device.
    Device(String),
    /// Every certificate of the devices of a production lot.
    Lot(String),
    /// Every certificate issued into a zone.
    Zone(String),
    /// Every certificate of a profile.
    Profile(String),
}

impl CertSelector {
    /// The selector's value.
    pub fn value(&self) -> &str {
        match self {
            CertSelector::Serial(v)
            | CertSelector::Device(v)
            | CertSelector::Lot(v)
            | CertSelector::Zone(v)
            | CertSelector::Profile(v) => v,
        }
    }

    /// `serial`, `device`, ... for messages and audit events.
    pub fn kind(&self) -> &'static str {
        match self {
            CertSelector::Serial(_) => "serial",
            CertSelector::Device(_) => "device",
            CertSelector::Lot(_) => "lot",
            CertSelector::Zone(_) => "zone",
            CertSelector::Profile(_) => "profile",
        }
    }
}

/// A status change of certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// Revoke for good (active or suspended certificates), with an RFC 5280 reason code.
    Revoke(i64),
    /// Put on hold (active certificates): reason certificateHold.
    Suspend,
    /// Take off hold (suspended certificates).
    Resume,
}

impl StatusChange {
    /// The statuses a certificate may have for the change to apply (twice when only one).
    pub fn from_statuses(self) -> (CertStatus, CertStatus) {
        match self {
            StatusChange::Revoke(_) => (CertStatus::Active, CertStatus::Suspended),
            StatusChange::Suspend => (CertStatus::Active, CertStatus::Active),
            StatusChange::Resume => (CertStatus::Suspended, CertStatus::Suspended),
        }
    }

    /// Status after the change.
    pub fn to_status(self) -> CertStatus {
        match self {
            StatusChange::Revoke(_) => CertStatus::Revoked,
            StatusChange::Suspend => CertStatus::Suspended,
            StatusChange::Resume => CertStatus::Active,
        }
    }

    /// RFC 5280 reason recorded with the change.
    pub fn reason(self) -> Option<i64> {
        match self {
            StatusChange::Revoke(r) => Some(r),
            StatusChange::Suspend => Some(6),
            StatusChange::Resume => None,
        }
    }

    /// Audit action.
    pub fn action(self) -> &'static str {
        match self {
            StatusChange::Revoke(_) => "certificate.revoke",
            StatusChange::Suspend => "certificate.suspend",
            StatusChange::Resume => "certificate.resume",
        }
    }
}

/// A certificate's revocation status as a CRL needs it: what the store hands the CRL
/// publisher when it loads an issuer's entries and, after every committed status change, on
/// its feed ([`super::Store::status_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationStatus {
    /// Serial, lower-case hex.
    pub serial: String,
    /// Issuing CA id.
    pub issuer_id: String,
    /// `notAfter`, Unix seconds (its entry leaves the CRL once it has passed).
    pub not_after: i64,
    /// Status after the change.
    pub status: CertStatus,
    /// Unix seconds; `None` when active.
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason code.
    pub reason: Option<i64>,
}

impl RevocationStatus {
    /// Whether the certificate belongs on its issuer's CRL at `now`.
    pub fn listed(&self, now: i64) -> bool {
        matches!(self.status, CertStatus::Revoked | CertStatus::Suspended) && self.not_after > now
    }
}
