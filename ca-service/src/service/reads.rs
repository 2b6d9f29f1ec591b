//! The store as a front-end sees it: the lookups and listings it renders, and no write (a
//! write is a use case of the service, with its checks and audit events).

use crate::store::{
    CertFilter, CertificateRecord, DeviceFilter, DeviceRecord, ManufacturerCaRecord, Page, Store,
    StoreError,
};

/// Read-only access to the store; see [`super::Service::reads`].
#[derive(Debug, Clone, Copy)]
pub struct Reads<'a>(pub(super) &'a dyn Store);

impl Reads<'_> {
    /// One certificate by serial (hex, any case).
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        self.0.certificate(serial).await
    }

    /// Certificates matching `filter`, in issue order, after cursor `after`, at most `limit`.
    pub async fn list_certificates(
        &self,
        filter: &CertFilter,
        after: i64,
        limit: u32,
    ) -> Result<Page<CertificateRecord>, StoreError> {
        self.0.list_certificates(filter, after, limit).await
    }

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.0.device(id).await
    }

    /// Devices matching `filter`, ordered by id, after id `after`, at most `limit`.
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<DeviceRecord>, Option<String>), StoreError> {
        self.0.list_devices(filter, after, limit).await
    }

    /// All manufacturer CAs, by name.
    pub async fn manufacturer_cas(&self) -> Result<Vec<ManufacturerCaRecord>, StoreError> {
        self.0.manufacturer_cas().await
    }
}
