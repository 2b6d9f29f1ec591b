//! Manufacturer CAs, whose IDevIDs enroll devices.

use super::super::Conn;
use super::super::writer::WriteOutput;
use super::audit::audit;
use super::unique_or;
use crate::audit::AuditEvent;
use crate::store::{ManufacturerCaRecord, StoreError};

/// Registers a manufacturer CA.
pub(super) async fn add_manufacturer_ca(
    conn: &mut Conn,
    record: &ManufacturerCaRecord,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    sqlx::query(
        "INSERT INTO manufacturer_cas (id, name, cert_der, zone, profile, auto_register, created_at, subject, not_after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&record.id)
    .bind(&record.name)
    .bind(&record.cert_der)
    .bind(&record.zone)
    .bind(&record.profile)
    .bind(record.auto_register)
    .bind(record.created_at)
    .bind(&record.subject)
    .bind(record.not_after)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        unique_or(e, || {
            format!(
                "a manufacturer CA named {} or with this certificate is registered already",
                record.name
            )
        })
    })?;
    let event = AuditEvent::new(
        record.created_at,
        actor,
        "manufacturer.add",
        record.name.as_str(),
        serde_json::json!({"id": record.id, "subject": record.subject, "zone": record.zone, "profile": record.profile, "auto_register": record.auto_register}),
    );
    audit(conn, &event, chain).await?;
    Ok(WriteOutput::Done)
}
