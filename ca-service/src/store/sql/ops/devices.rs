//! Device registry writes: registering devices in bulk. (Status changes and re-admission,
//! which carry over to certificates, are lifecycle rules: see `lifecycle`.)

use super::super::{Conn, Db};
use std::collections::HashSet;

use sqlx::{QueryBuilder, Row};

use super::super::writer::WriteOutput;
use super::audit::audit_many;
use crate::audit::AuditEvent;
use crate::store::{DeviceStatus, NewDevice, StoreError};

/// Inserts the devices with one statement; rows colliding with an existing id or serial
/// number are not inserted and are explained one by one.
pub(super) async fn register_devices(
    conn: &mut Conn,
    devices: &[NewDevice],
    at: i64,
    actor: &str,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    if devices.is_empty() {
        return Ok(WriteOutput::Registered {
            registered: 0,
            rejected: Vec::new(),
        });
    }
    let rows: Vec<(&NewDevice, i64)> = devices.iter().map(|d| (d, at)).collect();
    let inserted = insert_devices(conn, &rows, SkipConflicts::AnyUnique).await?;

    // Explain every refused row; `seen` catches repeats of an id or serial within the request.
    let mut rejected = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut seen_serials = HashSet::new();
    let mut events = Vec::with_capacity(inserted.len());
    for (i, d) in devices.iter().enumerate() {
        let first_of_id = seen_ids.insert(d.id.as_str());
        let first_of_serial = d
            .serial_number
            .as_deref()
            .is_none_or(|s| seen_serials.insert(s));
        if inserted.contains(&d.id) && first_of_id && first_of_serial {
            events.push(AuditEvent::new(
                at,
                actor,
                "device.register",
                d.id.as_str(),
                serde_json::json!({"zone": d.zone, "profile": d.profile, "lot": d.lot, "serial_number": d.serial_number}),
            ));
            continue;
        }
        let reason = if !first_of_id {
            format!("device {} appears twice in this import", d.id)
        } else if !first_of_serial {
            format!(
                "serial number {} appears twice in this import",
                d.serial_number.as_deref().unwrap_or("")
            )
        } else if inserted.contains(&d.id) {
            // Inserted although a repeat: cannot happen (ids are the primary key).
            continue;
        } else {
            let holder: Option<String> = sqlx::query_scalar("SELECT id FROM devices WHERE id = $1")
                .bind(&d.id)
                .fetch_optional(&mut *conn)
                .await?;
            match holder {
                Some(_) => format!("device {} is already registered", d.id),
                None => format!(
                    "serial number {} is already registered to another device",
                    d.serial_number.as_deref().unwrap_or("")
                ),
            }
        };
        rejected.push((i, reason));
    }
    let registered = events.len();
    audit_many(conn, events, chain).await?;
    Ok(WriteOutput::Registered {
        registered,
        rejected,
    })
}

/// Which uniqueness conflicts [`insert_devices`] skips silently.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SkipConflicts {
    /// An existing id only (a serial-number clash fails the statement).
    Id,
    /// Any unique constraint (id or serial number).
    AnyUnique,
}

/// Inserts active devices (each with its creation time) in one statement; returns the ids
/// actually inserted.
pub(crate) async fn insert_devices(
    conn: &mut Conn,
    rows: &[(&NewDevice, i64)],
    skip: SkipConflicts,
) -> Result<HashSet<String>, StoreError> {
    let mut insert = QueryBuilder::<Db>::new(
        "INSERT INTO devices (id, zone, lot, profile, model, serial_number, manufacturer, status, created_at, updated_at) ",
    );
    insert.push_values(rows, |mut b, (d, at)| {
        b.push_bind(&d.id)
            .push_bind(&d.zone)
            .push_bind(d.lot.as_deref())
            .push_bind(&d.profile)
            .push_bind(d.model.as_deref())
            .push_bind(d.serial_number.as_deref())
            .push_bind(d.manufacturer.as_deref())
            .push_bind(DeviceStatus::Active.as_str())
            .push_bind(*at)
            .push_bind(*at);
    });
    insert.push(match skip {
        SkipConflicts::Id => " ON CONFLICT (id) DO NOTHING RETURNING id",
        SkipConflicts::AnyUnique => " ON CONFLICT DO NOTHING RETURNING id",
    });
    Ok(insert
        .build()
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.get("id"))
        .collect())
}
