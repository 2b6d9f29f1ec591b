//! Rows to records: the column lists the reads and writes select, and their mapping.

use super::DbRow;
use sqlx::Row;

use crate::store::{CertStatus, CertificateRecord, DeviceRecord, DeviceStatus, Scope, StoreError};

macro_rules! device_columns {
    () => {
        "id, zone, lot, profile, model, serial_number, manufacturer, status, created_at, updated_at"
    };
}
pub(crate) use device_columns;

pub(crate) fn device_from_row(r: &DbRow) -> DeviceRecord {
    DeviceRecord {
        id: r.get("id"),
        zone: r.get("zone"),
        lot: r.get("lot"),
        profile: r.get("profile"),
        model: r.get("model"),
        serial_number: r.get("serial_number"),
        manufacturer: r.get("manufacturer"),
        status: DeviceStatus::parse(r.get("status")),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

macro_rules! cert_columns {
    () => {
        "seq, serial, device_id, profile, zone, issuer_id, subject, not_before, not_after, status, \
         revoked_at, revocation_reason, scope, requested_by, spki_sha256, der, issued_at, superseded_by, \
         first_authenticated_at"
    };
}
pub(crate) use cert_columns;

pub(crate) fn cert_from_row(r: &DbRow) -> Result<CertificateRecord, StoreError> {
    let scope: Option<String> = r.get("scope");
    let scope = scope
        .map(|s| serde_json::from_str::<Scope>(&s))
        .transpose()
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
    Ok(CertificateRecord {
        seq: r.get("seq"),
        serial: r.get("serial"),
        device_id: r.get("device_id"),
        profile: r.get("profile"),
        zone: r.get("zone"),
        issuer_id: r.get("issuer_id"),
        subject: r.get("subject"),
        not_before: r.get("not_before"),
        not_after: r.get("not_after"),
        status: CertStatus::parse(r.get("status")),
        revoked_at: r.get("revoked_at"),
        revocation_reason: r.get("revocation_reason"),
        scope,
        requested_by: r.get("requested_by"),
        spki_sha256: r.get("spki_sha256"),
        der: r.get("der"),
        issued_at: r.get("issued_at"),
        superseded_by: r.get("superseded_by"),
        first_authenticated_at: r.get("first_authenticated_at"),
    })
}
