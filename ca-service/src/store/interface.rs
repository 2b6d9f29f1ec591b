//! The store interface: one method per operation, with typed inputs, results and conflicts, so
//! that backends (SQLite, PostgreSQL) are interchangeable behind `Arc<dyn Store>`.
//!
//! What every backend guarantees: a write returns only once it is durably committed; it runs
//! whole or not at all, its audit events (hash-chained) in the same transaction; a refusal is
//! a [`StoreError`] variant callers can act on (the API maps them to gRPC codes); committed
//! certificate status changes go on the status feed ([`Store::status_changes`]) before the
//! writer is answered.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

use super::{
    CallerCertificate, CertFilter, CertSelector, CertStatus, CertificateRecord, CountedTable,
    DeviceClaim, DeviceFilter, DeviceRecord, DeviceStatus, EnrollFailure, IssuerRecord,
    IssuingCrlRecord, ManufacturerCaRecord, NewCertificate, NewDevice, Operators, Page,
    RevocationStatus, RootCrlRecord, Selection, StatusBatch, StatusChange, StoreError, TokenRecord,
};
use crate::audit::AuditEvent;

/// The CA's persistent state: issuers, devices, certificates, tokens, manufacturer CAs, root
/// CRLs, CRL numbers and the audit chain.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Every certificate status change this process commits from now on, in commit order, each
    /// batch sent before any of its writers is answered. A receiver that falls too far behind
    /// gets `Lagged` and must reload what it keeps. On a shared database ([`Store::is_shared`])
    /// other replicas' changes are not on it: [`Store::remote_changes`] tells of them.
    fn status_changes(&self) -> broadcast::Receiver<Arc<StatusBatch>>;

    /// Whether other processes serve this database too (PostgreSQL replicas): they then share
    /// CRLs through [`Store::issuing_crl`] and [`Store::lock_crl_build`].
    fn is_shared(&self) -> bool;

    /// A counter that moves whenever another replica committed status changes or stored a
    /// CRL, or when such news may have been missed (the listening connection was lost). Never
    /// moves on a database of one process.
    fn remote_changes(&self) -> watch::Receiver<u64>;

    /// A counter that moves whenever a committed change may have changed what
    /// [`Store::certificate_of_caller`] answers for a certificate already recorded (a status,
    /// a device's status, an issuer), whether this process made it or another replica announced
    /// it, and when such news may have been missed. It moves before the writer of the change is
    /// answered. Callers' records may be kept in memory while it stands still (see
    /// `service::callers`); issuing new certificates does not move it.
    fn caller_generation(&self) -> u64;

    /// The status version now: how many batches of status changes were committed, by any
    /// replica ([`StatusBatch::version`]).
    async fn status_version(&self) -> Result<i64, StoreError>;

    /// The stored CRL of issuing CA `issuer_id` (shared databases), if one was stored.
    async fn issuing_crl(&self, issuer_id: &str) -> Result<Option<IssuingCrlRecord>, StoreError>;

    /// Stores a CRL of an issuing CA for every replica to serve. Refused with
    /// [`StoreError::Changed`] when one numbered as high is stored already.
    async fn store_issuing_crl(&self, crl: IssuingCrlRecord) -> Result<(), StoreError>;

    /// Seconds until `peer` may enroll again, when `max_failures` of its enrollments failed
    /// within a throttle window (`window` seconds from its first failure) still open at `now`;
    /// `None` when it may enroll.
    async fn enroll_throttled(
        &self,
        peer: &str,
        now: i64,
        window: i64,
        max_failures: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Counts a failed enrollment against its peer, in the window open at `failure.at` (a new
    /// one when none is). Returns whether this failure started the throttle; its event is then
    /// audited in the same transaction, once per window.
    async fn record_enroll_failure(&self, failure: EnrollFailure) -> Result<bool, StoreError>;

    /// Waits until this process alone among the replicas may build CRLs of `issuer_id`, and
    /// holds that until the returned lock is dropped. [`StoreError::Conflict`] when another
    /// replica holds it too long (it may hang); a database of one process returns at once.
    async fn lock_crl_build(&self, issuer_id: &str) -> Result<CrlBuildLock, StoreError>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the store after the writer has drained.
    async fn close(&self);

    /// All issuers, roots first, oldest first.
    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError>;

    /// The newest stored CRL of root `issuer_id`, if it has one.
    async fn root_crl(&self, issuer_id: &str) -> Result<Option<RootCrlRecord>, StoreError>;

    /// `(root id, CRL number)` of every stored root CRL: what a serving CA polls to notice a
    /// root CRL signed by another process.
    async fn root_crl_numbers(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// How many certificates of issuer `issuer_id` are active and unexpired at `now`.
    async fn valid_certificates_of(&self, issuer_id: &str, now: i64) -> Result<i64, StoreError>;

    /// One device.
    async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// The device with this serial number of this manufacturer, or else one registered with
    /// this serial number and no manufacturer yet.
    async fn device_by_serial_number(
        &self,
        serial_number: &str,
        manufacturer: &str,
    ) -> Result<Option<DeviceRecord>, StoreError>;

    /// Devices matching `filter`, ordered by id, after id `after`, at most `limit`, with the
    /// cursor of the next page (`None` on the last).
    async fn list_devices(
        &self,
        filter: &DeviceFilter,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<DeviceRecord>, Option<String>), StoreError>;

    /// The enrollment token with this hash.
    async fn token(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError>;

    /// All manufacturer CAs, by name.
    async fn manufacturer_cas(&self) -> Result<Vec<ManufacturerCaRecord>, StoreError>;

    /// One certificate by serial (hex, any case).
    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError>;

    /// The certificate with this serial, the registry status of its device and whether its
    /// issuing CA is revoked, in one read (the per-call caller check).
    async fn certificate_of_caller(
        &self,
        serial: &str,
    ) -> Result<Option<CallerCertificate>, StoreError>;

    /// Entries of issuer `issuer_id`'s CRL: revoked or held certificates not yet expired, in
    /// issue order.
    async fn revocation_entries(
        &self,
        issuer_id: &str,
        now: i64,
    ) -> Result<Vec<RevocationStatus>, StoreError>;

    /// Certificates matching `filter`, in issue order, after cursor `after`, at most `limit`.
    async fn list_certificates(
        &self,
        filter: &CertFilter,
        after: i64,
        limit: u32,
    ) -> Result<Page<CertificateRecord>, StoreError>;

    /// Unexpired certificates (other than the CA's own) that `selector` picks and `change`
    /// applies to, without what `operators` and device holds leave out, in issue order: what
    /// [`Store::change_status`] changes, for a dry run.
    async fn certificates_selected(
        &self,
        selector: &CertSelector,
        change: StatusChange,
        operators: &Operators,
        now: i64,
    ) -> Result<Selection<CertificateRecord>, StoreError>;

    /// Audit events in order, from id `after` on, at most `limit`, with their stored
    /// `(prev_hash, hash)`.
    async fn audit_events(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, AuditEvent, Vec<u8>, Vec<u8>)>, StoreError>;

    /// Walks the whole audit chain and recomputes every hash. Returns the number of events, or
    /// the id of the first event whose hash or link does not match.
    async fn verify_audit_chain(&self) -> Result<Result<u64, i64>, StoreError> {
        let mut prev = crate::audit::GENESIS_HASH.to_vec();
        let mut after = 0;
        let mut count = 0u64;
        loop {
            let page = self.audit_events(after, 1000).await?;
            if page.is_empty() {
                return Ok(Ok(count));
            }
            for (id, event, prev_hash, hash) in page {
                if prev_hash != prev || event.chain_hash(&prev).as_slice() != hash.as_slice() {
                    return Ok(Err(id));
                }
                prev = hash;
                after = id;
                count += 1;
            }
        }
    }

    /// Number of rows in a table, for tests and health figures.
    async fn count(&self, table: CountedTable) -> Result<i64, StoreError>;

    /// Records an issued certificate under its rule, registering its device if it is new.
    /// Refused with [`StoreError::DeviceConflict`] when the device exists in another zone or
    /// profile or is not active, [`StoreError::Conflict`] when it belongs to another
    /// manufacturer or serial number, the token is spent, the renewed certificate is no longer
    /// active, the IDevID may not enroll the device, or the issuer is revoked,
    /// [`StoreError::NotFound`] when the renewed certificate is unknown,
    /// [`StoreError::Duplicate`] for a serial recorded already, [`StoreError::TooSoon`] and
    /// [`StoreError::Superseded`] under [`IssuanceRule::Limited`].
    async fn record_issuance(&self, issuance: IssuanceRecord) -> Result<Recorded, StoreError>;

    /// Records a new CA's root and issuing CA and its first certificates (API server, first
    /// admin) in one transaction; [`StoreError::Conflict`] when the database holds an issuer
    /// already (a CA initialised from another data dir).
    async fn record_initial_hierarchy(&self, initial: InitialHierarchy) -> Result<(), StoreError>;

    /// Notes that a certificate authenticated a call for the first time (no audit event: it
    /// observes use and changes no status; see docs/decisions.md). Later calls change nothing.
    async fn mark_authenticated(&self, serial: &str, at: i64) -> Result<(), StoreError>;

    /// Revokes, suspends or resumes every certificate the selector picks (see
    /// [`Store::certificates_selected`]); returns them, in order. Refused whole with
    /// [`StoreError::Conflict`] if it takes the last valid admin credential.
    async fn change_status(
        &self,
        change: StatusChangeRequest,
    ) -> Result<Vec<RevocationStatus>, StoreError>;

    /// Changes one certificate's status (revoke, suspend, resume); [`StoreError::NotFound`]
    /// when it does not exist or is revoked already (revocation is final).
    async fn set_certificate_status(
        &self,
        update: CertificateStatusUpdate,
    ) -> Result<RevocationStatus, StoreError>;

    /// Takes the next CRL number of an issuer (strictly increasing, across restarts).
    async fn next_crl_number(&self, issuer_id: &str, at: i64) -> Result<u64, StoreError>;

    /// Rolls the issuing CA over: records the new one and retires the old one (which stays
    /// valid until it expires), with a new root CRL if given, in one transaction.
    /// [`StoreError::NotFound`] when the old one is not the active issuing CA,
    /// [`StoreError::Duplicate`] when the new one is known already, [`StoreError::Changed`]
    /// for a root CRL refused as in [`Store::store_root_crl`].
    async fn rotate_issuer(&self, rotation: IssuerRotation) -> Result<(), StoreError>;

    /// Revokes a retired issuing CA and stores the root CRL that lists it, in one transaction:
    /// it signs nothing more (no certificate of it is recorded from then on) and leaves the
    /// trust bundle. Refused ([`StoreError::Conflict`]) for the active issuing CA, a root, an
    /// issuer revoked already, and when it would take the last valid admin credential;
    /// [`StoreError::NotFound`] for an unknown issuer; [`StoreError::Changed`] for a root CRL
    /// refused as in [`Store::store_root_crl`].
    async fn revoke_issuer(&self, revocation: IssuerRevocation) -> Result<(), StoreError>;

    /// Stores a newly signed CRL of a root as the one it publishes. Refused with
    /// [`StoreError::Changed`] when a CRL numbered as high is stored already, or when the
    /// revoked issuing CAs are no longer those it was signed for (sign again).
    async fn store_root_crl(&self, update: RootCrlUpdate) -> Result<(), StoreError>;

    /// Registers devices (at most 1000); rows that collide with existing ids or serial numbers,
    /// or repeat one of the request, are refused one by one, the others kept.
    async fn register_devices(
        &self,
        devices: Vec<NewDevice>,
        at: i64,
        actor: &str,
    ) -> Result<Registration, StoreError>;

    /// Suspends, resumes or decommissions a device, holding, releasing or revoking its
    /// certificates with it; returns the certificates changed. [`StoreError::NotFound`] for an
    /// unknown device; [`StoreError::Conflict`] when it is decommissioned (final except for
    /// [`Store::readmit_device`]) or the change takes the last valid admin credential.
    async fn set_device_status(
        &self,
        update: DeviceStatusUpdate,
    ) -> Result<Vec<RevocationStatus>, StoreError>;

    /// Re-admits a device: active again if decommissioned, and its IDevID may enroll it again
    /// although certificates of it were revoked before. [`StoreError::Conflict`] for a
    /// suspended device, [`StoreError::TooSoon`] when one of its certificates was revoked
    /// within this second.
    async fn readmit_device(&self, id: &str, at: i64, actor: &str) -> Result<(), StoreError>;

    /// Stores a new enrollment token (its hash).
    async fn create_token(&self, token: TokenRecord) -> Result<(), StoreError>;

    /// Revokes every unused token of a device; returns how many.
    async fn revoke_tokens(&self, device_id: &str, at: i64, actor: &str)
    -> Result<u64, StoreError>;

    /// Registers a manufacturer CA; [`StoreError::Duplicate`] when its name or certificate is
    /// registered already.
    async fn add_manufacturer_ca(
        &self,
        record: ManufacturerCaRecord,
        actor: &str,
    ) -> Result<(), StoreError>;

    /// Records an event that changes no other state (e.g. an enrollment throttle).
    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError>;
}

/// A certificate to record, with the registry entry it was signed for and the rule it is
/// recorded under.
#[derive(Debug, Clone)]
pub struct IssuanceRecord {
    /// The registry entry the certificate was signed for: created if new, checked if not.
    pub device: DeviceClaim,
    /// The certificate.
    pub cert: NewCertificate,
    /// Caller (`name/serial` or `system...`).
    pub actor: String,
    /// What else the issuance checks and changes.
    pub rule: IssuanceRule,
    /// Events to record in the same transaction (e.g. `admin.create`): they are recorded only
    /// with the certificate, and the certificate only with them.
    pub audit: Vec<AuditEvent>,
}

impl IssuanceRecord {
    /// A certificate recorded under `rule`, with no further audit events.
    pub fn new(
        device: DeviceClaim,
        cert: NewCertificate,
        actor: impl Into<String>,
        rule: IssuanceRule,
    ) -> Self {
        Self {
            device,
            cert,
            actor: actor.into(),
            rule,
            audit: Vec::new(),
        }
    }

    /// Adds an event recorded in the same transaction.
    pub fn with_audit(mut self, event: AuditEvent) -> Self {
        self.audit.push(event);
        self
    }
}

/// What an issuance checks and changes besides recording the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuanceRule {
    /// Nothing else.
    Plain,
    /// Revoke (reason superseded) the device's other unexpired active or held certificates:
    /// a re-provisioned device keeps exactly one.
    ReplaceActive,
    /// Consume this one-time enrollment token of the device: a token that is used, revoked
    /// or expired by commit time fails the whole write ([`StoreError::Conflict`]).
    ConsumeToken {
        /// SHA-256 of the token.
        token_hash: Vec<u8>,
    },
    /// At most one certificate per device per `min_interval` seconds (checked inside the
    /// transaction, so concurrent requests cannot both pass): renewals, which also mark the
    /// renewed certificate superseded, and IDevID enrollments (a claim naming a manufacturer),
    /// which a revocation or hold since the device's last re-admission refuses.
    Limited {
        /// Serial of the certificate this one renews, which must still be active.
        supersedes: Option<String>,
        /// Minimum seconds between two certificates of one device.
        min_interval: i64,
        /// The renewed certificate's key may be exposed: revoke it (and a successor of it that
        /// never authenticated) as keyCompromise; exempt from `min_interval` once.
        key_compromise: bool,
    },
}

/// What recording an issuance did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Whether the device was registered by this issuance.
    pub device_registered: bool,
    /// Certificates whose status changed with it, in order (replaced by
    /// [`IssuanceRule::ReplaceActive`], revoked by a key-compromise renewal); also on the
    /// status feed.
    pub changed: Vec<RevocationStatus>,
}

/// A certificate the CA host makes itself, recorded with the hierarchy.
#[derive(Debug, Clone)]
pub struct SystemCertificate {
    /// The registry entry it was signed for.
    pub device: DeviceClaim,
    /// The certificate.
    pub cert: NewCertificate,
}

/// A new CA: its root, its first issuing CA and its first certificates.
#[derive(Debug, Clone)]
pub struct InitialHierarchy {
    /// The root.
    pub root: IssuerRecord,
    /// The issuing CA (active).
    pub issuing: IssuerRecord,
    /// The certificates (API server, first admin), recorded as plain issuances.
    pub certificates: Vec<SystemCertificate>,
    /// Unix seconds.
    pub at: i64,
    /// Who records it (`system`).
    pub actor: String,
}

/// A status change of the certificates a selector picks.
#[derive(Debug, Clone)]
pub struct StatusChangeRequest {
    /// Which certificates.
    pub selector: CertSelector,
    /// What to do.
    pub change: StatusChange,
    /// Which profiles are operator credentials, and whether a bulk selection takes them.
    pub operators: Operators,
    /// Unix seconds.
    pub at: i64,
    /// Caller.
    pub actor: String,
}

/// A new status of one certificate.
#[derive(Debug, Clone)]
pub struct CertificateStatusUpdate {
    /// Serial, hex.
    pub serial: String,
    /// New status.
    pub status: CertStatus,
    /// RFC 5280 reason code (ignored when resuming).
    pub reason: Option<i64>,
    /// Unix seconds.
    pub at: i64,
    /// Caller.
    pub actor: String,
}

/// A newly signed CRL of a root, with what it was signed from.
#[derive(Debug, Clone)]
pub struct RootCrlUpdate {
    /// The CRL.
    pub crl: RootCrlRecord,
    /// Ids of every revoked issuing CA, sorted, as the signer saw them (with the writes of the
    /// same transaction applied).
    pub revoked_issuers: Vec<String>,
}

/// An issuing CA rollover.
#[derive(Debug, Clone)]
pub struct IssuerRotation {
    /// The new issuing CA (active).
    pub issuer: IssuerRecord,
    /// Id of the active issuing CA it replaces, retired.
    pub retire: String,
    /// A fresh root CRL, stored in the same transaction (when the root publishes one).
    pub root_crl: Option<RootCrlUpdate>,
    /// Unix seconds.
    pub at: i64,
    /// Caller.
    pub actor: String,
}

/// The revocation of a retired issuing CA, published on its root's CRL.
#[derive(Debug, Clone)]
pub struct IssuerRevocation {
    /// Issuer id.
    pub id: String,
    /// RFC 5280 reason code.
    pub reason: Option<i64>,
    /// Profiles whose role is `admin`.
    pub admin_profiles: Vec<String>,
    /// The root CRL listing it, stored in the same transaction.
    pub root_crl: RootCrlUpdate,
    /// Particulars for the audit event (serial, who ran it).
    pub details: serde_json::Value,
    /// Unix seconds.
    pub at: i64,
    /// Caller.
    pub actor: String,
}

/// What a device registration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// How many devices were registered.
    pub registered: usize,
    /// Refused rows: `(index in the request, reason)`.
    pub rejected: Vec<(usize, String)>,
}

/// A new registry status of a device.
#[derive(Debug, Clone)]
pub struct DeviceStatusUpdate {
    /// Device id.
    pub id: String,
    /// New status.
    pub status: DeviceStatus,
    /// Profiles whose role is `admin`.
    pub admin_profiles: Vec<String>,
    /// Unix seconds.
    pub at: i64,
    /// Caller.
    pub actor: String,
}

/// The right to build CRLs of one issuing CA among the replicas of a database, held until
/// dropped (see [`Store::lock_crl_build`]).
#[must_use = "the lock is released when dropped"]
pub struct CrlBuildLock(Option<Box<dyn Send>>);

impl CrlBuildLock {
    /// A lock that holds `guard` (released by its `Drop`).
    pub(crate) fn held(guard: Box<dyn Send>) -> Self {
        Self(Some(guard))
    }

    /// Nothing to hold: no other process builds CRLs of this database.
    pub(crate) fn alone() -> Self {
        Self(None)
    }
}

impl std::fmt::Debug for CrlBuildLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CrlBuildLock(held)"
        } else {
            "CrlBuildLock(alone)"
        })
    }
}
