//! Compatibility shims from before the store interface (issue 12): the old name of the concrete
//! store, its constructor, its untyped write bus and inherent copies of the interface's methods,
//! so that callers naming the concrete type compile unchanged (without importing the trait).
//! Remove this module once every caller holds an `Arc<dyn Store>` and uses the typed methods;
//! `WriteOp` and `WriteOutput` then become private to `sqlite`.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::broadcast;

#[doc(hidden)]
pub use super::sqlite::writer::{WriteOp, WriteOutput};

use super::{
    CallerCertificate, CertFilter, CertSelector, CertificateRecord, CountedTable, DeviceFilter,
    DeviceRecord, IssuerRecord, ManufacturerCaRecord, Operators, Page, RevocationStatus,
    RootCrlRecord, Selection, SqliteStore, StatusChange, StoreError, TokenRecord,
};
use crate::audit::AuditEvent;

/// The old name of [`SqliteStore`] (compatibility: the name becomes the
/// [`super::interface::Store`] trait's once callers are converted).
pub type Store = SqliteStore;

impl SqliteStore {
    /// The old name of [`SqliteStore::open`].
    pub async fn open_sqlite(path: &Path, max_batch: usize) -> Result<Self, StoreError> {
        Self::open(path, max_batch).await
    }

    /// Deprecated: use the typed methods of [`super::interface::Store`]. Runs `op` in the next
    /// group commit and waits until it is durably committed.
    #[doc(hidden)]
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutput, StoreError> {
        self.submit(op).await
    }

    /// See [`super::interface::Store::status_changes`].
    pub fn status_changes(&self) -> broadcast::Receiver<Arc<Vec<RevocationStatus>>> {
        super::interface::Store::status_changes(self)
    }

    /// See [`super::interface::Store::ping`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        super::interface::Store::ping(self).await
    }

    /// See [`super::interface::Store::close`].
    pub async fn close(&self) {
        super::interface::Store::close(self).await
    }

    /// See [`super::interface::Store::issuers`].
    pub async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        super::interface::Store::issuers(self).await
    }

    /// See [`super::interface::Store::root_crl`].
    pub async fn root_crl(&self, issuer_id: &str) -> Result<Option<RootCrlRecord>, StoreError> {
        super::interface::Store::root_crl(self, issuer_id).await
    }

    /// See [`super::interface::Store::root_crl_numbers`].
    pub async fn root_crl_numbers(&self) -> Result<Vec<(String, u64)>, StoreError> {
        super::interface::Store::root_crl_numbers(self).await
    }

    /// See [`super::interface::Store::valid_certificates_of`].
    pub async fn valid_certificates_of(
        &self,
        issuer_id: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        super::interface::Store::valid_certificates_of(self, issuer_id, now).await
    }

    /// See [`super::interface::Store::device`].
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        super::interface::Store::device(self, id).await
    }

    /// See [`super::interface::Store::device_by_serial_number`].
    pub async fn device_by_serial_number(
        &self,
        serial_number: &str,
        manufacturer: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        super::interface::Store::device_by_serial_number(self, serial_number, manufacturer).await
    }

    /// See [`super::interface::Store::list_devices`].
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<DeviceRecord>, Option<String>), StoreError> {
        super::interface::Store::list_devices(self, filter, after, limit).await
    }

    /// See [`super::interface::Store::token`].
    pub async fn token(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
        super::interface::Store::token(self, hash).await
    }

    /// See [`super::interface::Store::manufacturer_cas`].
    pub async fn manufacturer_cas(&self) -> Result<Vec<ManufacturerCaRecord>, StoreError> {
        super::interface::Store::manufacturer_cas(self).await
    }

    /// See [`super::interface::Store::certificate`].
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        super::interface::Store::certificate(self, serial).await
    }

    /// See [`super::interface::Store::certificate_of_caller`].
    pub async fn certificate_of_caller(
        &self,
        serial: &str,
    ) -> Result<Option<CallerCertificate>, StoreError> {
        super::interface::Store::certificate_of_caller(self, serial).await
    }

    /// See [`super::interface::Store::revocation_entries`].
    pub async fn revocation_entries(
        &self,
        issuer_id: &str,
        now: i64,
    ) -> Result<Vec<RevocationStatus>, StoreError> {
        super::interface::Store::revocation_entries(self, issuer_id, now).await
    }

    /// See [`super::interface::Store::list_certificates`].
    pub async fn list_certificates(
        &self,
        filter: &CertFilter,
        after: i64,
        limit: u32,
    ) -> Result<Page<CertificateRecord>, StoreError> {
        super::interface::Store::list_certificates(self, filter, after, limit).await
    }

    /// See [`super::interface::Store::certificates_selected`].
    pub async fn certificates_selected(
        &self,
        selector: &CertSelector,
        change: StatusChange,
        operators: &Operators,
        now: i64,
    ) -> Result<Selection<CertificateRecord>, StoreError> {
        super::interface::Store::certificates_selected(self, selector, change, operators, now).await
    }

    /// See [`super::interface::Store::audit_events`].
    pub async fn audit_events(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, AuditEvent, Vec<u8>, Vec<u8>)>, StoreError> {
        super::interface::Store::audit_events(self, after, limit).await
    }

    /// See [`super::interface::Store::verify_audit_chain`].
    pub async fn verify_audit_chain(&self) -> Result<Result<u64, i64>, StoreError> {
        super::interface::Store::verify_audit_chain(self).await
    }

    /// See [`super::interface::Store::count`].
    pub async fn count(&self, table: CountedTable) -> Result<i64, StoreError> {
        super::interface::Store::count(self, table).await
    }
}
