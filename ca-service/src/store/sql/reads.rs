//! Reads: plain queries on the pool, outside the writer (WAL readers do not wait for it).

use super::Pool;
use futures::TryStreamExt;
use sqlx::Row;

use super::rows::{cert_columns, cert_from_row, device_columns, device_from_row};
use crate::audit::AuditEvent;
use crate::store::{
    CallerCertificate, CertFilter, CertStatus, CertificateRecord, CountedTable, DeviceFilter,
    DeviceRecord, DeviceStatus, IssuerKind, IssuerRecord, IssuingCrlRecord, ManufacturerCaRecord,
    Page, RevocationStatus, RootCrlRecord, StoreError, TokenRecord,
};

/// Checks that the database answers.
pub(super) async fn ping(pool: &Pool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// All issuers, roots first, oldest first.
pub(super) async fn issuers(pool: &Pool) -> Result<Vec<IssuerRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, kind, subject, cert_der, not_before, not_after, status, revoked_at, \
         revocation_reason FROM issuers ORDER BY kind DESC, created_at, id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| IssuerRecord {
            id: r.get("id"),
            kind: if r.get::<String, _>("kind") == "root" {
                IssuerKind::Root
            } else {
                IssuerKind::Issuing
            },
            subject: r.get("subject"),
            cert_der: r.get("cert_der"),
            not_before: r.get("not_before"),
            not_after: r.get("not_after"),
            active: r.get::<String, _>("status") == "active",
            revoked_at: r.get("revoked_at"),
            revocation_reason: r.get("revocation_reason"),
        })
        .collect())
}

/// The newest stored CRL of root `issuer_id`, if it has one.
pub(super) async fn root_crl(
    pool: &Pool,
    issuer_id: &str,
) -> Result<Option<RootCrlRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT issuer_id, crl_number, this_update, next_update, entries, der, signed_at, \
         signed_by FROM root_crls WHERE issuer_id = $1",
    )
    .bind(issuer_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| RootCrlRecord {
        issuer_id: r.get("issuer_id"),
        number: r.get::<i64, _>("crl_number") as u64,
        this_update: r.get("this_update"),
        next_update: r.get("next_update"),
        entries: r.get::<i64, _>("entries") as usize,
        der: r.get("der"),
        signed_at: r.get("signed_at"),
        signed_by: r.get("signed_by"),
    }))
}

/// Seconds left of `peer`'s throttle window at `now` when it holds `max_failures` failures.
pub(super) async fn enroll_throttled(
    pool: &Pool,
    peer: &str,
    now: i64,
    window: i64,
    max_failures: i64,
) -> Result<Option<i64>, StoreError> {
    let start: Option<i64> = sqlx::query_scalar(
        "SELECT window_start FROM enroll_failures \
         WHERE peer = $1 AND window_start > $2 AND failures >= $3",
    )
    .bind(peer)
    .bind(now - window)
    .bind(max_failures)
    .fetch_optional(pool)
    .await?;
    Ok(start.map(|s| (s + window - now).max(1)))
}

/// The status version now.
pub(super) async fn status_version(pool: &Pool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT version FROM status_version WHERE id = 1")
            .fetch_one(pool)
            .await?,
    )
}

/// The stored CRL of issuing CA `issuer_id`.
pub(super) async fn issuing_crl(
    pool: &Pool,
    issuer_id: &str,
) -> Result<Option<IssuingCrlRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT issuer_id, crl_number, basis, this_update, next_update, entries, der, built_at \
         FROM issuing_crls WHERE issuer_id = $1",
    )
    .bind(issuer_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| IssuingCrlRecord {
        issuer_id: r.get("issuer_id"),
        number: r.get::<i64, _>("crl_number") as u64,
        basis: r.get("basis"),
        this_update: r.get("this_update"),
        next_update: r.get("next_update"),
        entries: r.get::<i64, _>("entries") as usize,
        der: r.get("der"),
        built_at: r.get("built_at"),
    }))
}

/// `(root id, CRL number)` of every stored root CRL: what a serving CA polls to notice a
/// root CRL signed by another process.
pub(super) async fn root_crl_numbers(pool: &Pool) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = sqlx::query("SELECT issuer_id, crl_number FROM root_crls ORDER BY issuer_id")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("issuer_id"), r.get::<i64, _>("crl_number") as u64))
        .collect())
}

/// How many certificates of issuer `issuer_id` are active and unexpired at `now`.
pub(super) async fn valid_certificates_of(
    pool: &Pool,
    issuer_id: &str,
    now: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM certificates WHERE issuer_id = $1 AND status = 'active' \
         AND not_after > $2",
    )
    .bind(issuer_id)
    .bind(now)
    .fetch_one(pool)
    .await?)
}

/// One device.
pub(super) async fn device(pool: &Pool, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        device_columns!(),
        " FROM devices WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(device_from_row))
}

/// The device with this serial number of this manufacturer, or else one registered with
/// this serial number and no manufacturer yet.
pub(super) async fn device_by_serial_number(
    pool: &Pool,
    serial_number: &str,
    manufacturer: &str,
) -> Result<Option<DeviceRecord>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        device_columns!(),
        " FROM devices WHERE serial_number = $1 AND (manufacturer = $2 OR manufacturer IS NULL) \
          ORDER BY manufacturer IS NULL LIMIT 1"
    ))
    .bind(serial_number)
    .bind(manufacturer)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(device_from_row))
}

/// Devices matching `filter`, ordered by id, after id `after`, at most `limit`.
pub(super) async fn list_devices(
    pool: &Pool,
    filter: &DeviceFilter,
    after: &str,
    limit: u32,
) -> Result<(Vec<DeviceRecord>, Option<String>), StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        device_columns!(),
        " FROM devices WHERE id > $1 \
          AND ($2 IS NULL OR zone = $2) AND ($3 IS NULL OR profile = $3) \
          AND ($4 IS NULL OR lot = $4) AND ($5 IS NULL OR status = $5) \
          ORDER BY id LIMIT $6"
    ))
    .bind(after)
    .bind(filter.zone.as_deref())
    .bind(filter.profile.as_deref())
    .bind(filter.lot.as_deref())
    .bind(filter.status.map(|s| s.as_str()))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut items: Vec<DeviceRecord> = rows.iter().map(device_from_row).collect();
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|d| d.id.clone())
    } else {
        None
    };
    Ok((items, next))
}

/// The enrollment token with this hash.
pub(super) async fn token(pool: &Pool, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT hash, device_id, profile, expires_at, created_at, created_by, used_at, revoked_at \
         FROM enrollment_tokens WHERE hash = $1",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| TokenRecord {
        hash: r.get("hash"),
        device_id: r.get("device_id"),
        profile: r.get("profile"),
        expires_at: r.get("expires_at"),
        created_at: r.get("created_at"),
        created_by: r.get("created_by"),
        used_at: r.get("used_at"),
        revoked_at: r.get("revoked_at"),
    }))
}

/// All manufacturer CAs, by name.
pub(super) async fn manufacturer_cas(pool: &Pool) -> Result<Vec<ManufacturerCaRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, name, cert_der, zone, profile, auto_register, subject, not_after, created_at \
         FROM manufacturer_cas ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ManufacturerCaRecord {
            id: r.get("id"),
            name: r.get("name"),
            cert_der: r.get("cert_der"),
            zone: r.get("zone"),
            profile: r.get("profile"),
            auto_register: r.get("auto_register"),
            subject: r.get("subject"),
            not_after: r.get("not_after"),
            created_at: r.get("created_at"),
        })
        .collect())
}

/// One certificate by serial (hex, any case).
pub(super) async fn certificate(
    pool: &Pool,
    serial: &str,
) -> Result<Option<CertificateRecord>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        cert_columns!(),
        " FROM certificates WHERE serial = $1"
    ))
    .bind(serial.to_ascii_lowercase())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(cert_from_row).transpose()
}

/// The certificate with this serial, the registry status of its device and whether its
/// issuing CA is revoked, in one query (the per-call caller check).
pub(super) async fn certificate_of_caller(
    pool: &Pool,
    serial: &str,
) -> Result<Option<CallerCertificate>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        cert_columns!(),
        ", (SELECT status FROM devices WHERE devices.id = certificates.device_id) AS device_status, \
         (SELECT revoked_at FROM issuers WHERE issuers.id = certificates.issuer_id) AS issuer_revoked_at \
         FROM certificates WHERE serial = $1"
    ))
    .bind(serial.to_ascii_lowercase())
    .fetch_optional(pool)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let status: Option<String> = r.get("device_status");
            let device_status = status
                .as_deref()
                .map_or(DeviceStatus::Decommissioned, DeviceStatus::parse);
            let issuer_revoked_at: Option<i64> = r.get("issuer_revoked_at");
            Ok(Some(CallerCertificate {
                record: cert_from_row(&r)?,
                device_status,
                issuer_revoked: issuer_revoked_at.is_some(),
            }))
        }
    }
}

/// The read of [`revocation_entries`]. Its `status IN (...)` term is the one of the partial
/// index `certificates_listed`, so that the database reads only listed rows.
pub(crate) const REVOCATION_ENTRIES: &str = "SELECT serial, not_after, status, revoked_at, revocation_reason FROM certificates \
     WHERE issuer_id = $1 AND status IN ('revoked', 'suspended') AND not_after > $2 \
     ORDER BY seq";

/// Entries of issuer `issuer_id`'s CRL: revoked or held certificates not yet expired.
pub(super) async fn revocation_entries(
    pool: &Pool,
    issuer_id: &str,
    now: i64,
) -> Result<Vec<RevocationStatus>, StoreError> {
    let mut rows = sqlx::query(REVOCATION_ENTRIES)
        .bind(issuer_id)
        .bind(now)
        // Row by row, not `fetch_all`: a million rows held as rows beside their statuses would
        // double the memory of loading a large CRL.
        .fetch(pool);
    let mut out = Vec::new();
    while let Some(r) = rows.try_next().await? {
        out.push(RevocationStatus {
            serial: r.get("serial"),
            issuer_id: issuer_id.to_owned(),
            not_after: r.get("not_after"),
            status: CertStatus::parse(r.get("status")),
            revoked_at: r.get("revoked_at"),
            reason: r.get("revocation_reason"),
        });
    }
    Ok(out)
}

/// Certificates matching `filter`, in issue order, after cursor `after`, at most `limit`.
pub(super) async fn list_certificates(
    pool: &Pool,
    filter: &CertFilter,
    after: i64,
    limit: u32,
) -> Result<Page<CertificateRecord>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        cert_columns!(),
        " FROM certificates WHERE seq > $1 \
          AND ($2 IS NULL OR device_id = $2) AND ($3 IS NULL OR profile = $3) \
          AND ($4 IS NULL OR status = $4) AND ($5 IS NULL OR issuer_id = $5) \
          AND ($7 IS NULL OR (status = 'active' AND not_after > $7 AND not_after <= $8)) \
          AND ($9 IS NULL OR serial IN (",
        json_values!("$9"),
        ")) \
          AND ($10 IS NULL OR (superseded_by IS NOT NULL) = $10) \
          ORDER BY seq LIMIT $6"
    ))
    .bind(after)
    .bind(filter.device_id.as_deref())
    .bind(filter.profile.as_deref())
    .bind(filter.status.map(|s| s.as_str()))
    .bind(filter.issuer_id.as_deref())
    .bind(i64::from(limit) + 1)
    .bind(filter.expiring.map(|(from, _)| from))
    .bind(filter.expiring.map(|(_, to)| to))
    .bind(
        filter
            .serials
            .as_ref()
            .map(|s| serde_json::Value::from(s.clone()).to_string()),
    )
    .bind(filter.superseded)
    .fetch_all(pool)
    .await?;
    let mut items = rows
        .iter()
        .map(cert_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|c| c.seq)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// Audit events in order, from id `after` on, at most `limit`, with their stored hashes.
pub(super) async fn audit_events(
    pool: &Pool,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, AuditEvent, Vec<u8>, Vec<u8>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, actor, action, target, details, prev_hash, hash FROM audit_events \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get("id"),
                AuditEvent {
                    at: r.get("at"),
                    actor: r.get("actor"),
                    action: r.get("action"),
                    target: r.get("target"),
                    details: r.get("details"),
                },
                r.get("prev_hash"),
                r.get("hash"),
            )
        })
        .collect())
}

/// Number of rows in a table, for tests and health figures.
pub(super) async fn count(pool: &Pool, table: CountedTable) -> Result<i64, StoreError> {
    let sql = match table {
        CountedTable::Certificates => "SELECT COUNT(*) FROM certificates",
        CountedTable::Devices => "SELECT COUNT(*) FROM devices",
        CountedTable::AuditEvents => "SELECT COUNT(*) FROM audit_events",
        CountedTable::EnrollmentTokens => "SELECT COUNT(*) FROM enrollment_tokens",
    };
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}
