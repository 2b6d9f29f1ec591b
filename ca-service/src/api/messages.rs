//! Wire forms of the records the service returns.

use hallmark_proto::v1 as pb;

use crate::authority::name::rfc4514_subject;
use crate::store::{
    CertStatus, CertificateRecord, DeviceRecord, DeviceStatus, ManufacturerCaRecord,
};

/// A certificate record in its wire form.
pub fn certificate_message(r: &CertificateRecord) -> pb::Certificate {
    pb::Certificate {
        serial: r.serial.clone(),
        device_id: r.device_id.clone(),
        profile: r.profile.clone(),
        zone: r.zone.clone(),
        issuer_id: r.issuer_id.clone(),
        not_before: r.not_before,
        not_after: r.not_after,
        status: match r.status {
            CertStatus::Active if r.superseded_by.is_some() => pb::CertificateStatus::Superseded,
            CertStatus::Active => pb::CertificateStatus::Active,
            CertStatus::Revoked => pb::CertificateStatus::Revoked,
            CertStatus::Suspended => pb::CertificateStatus::Suspended,
        } as i32,
        revoked_at: r.revoked_at.unwrap_or(0),
        revocation_reason: r.revocation_reason.unwrap_or(0) as u32,
        der: r.der.clone(),
        // From the certificate itself, so rows recorded before subjects were RFC 4514 strings
        // read the same.
        subject: rfc4514_subject(&r.der).unwrap_or_else(|| r.subject.clone()),
        issued_at: r.issued_at,
        superseded_by: r.superseded_by.clone().unwrap_or_default(),
        scope: r.scope.as_ref().map(|s| pb::ProvisionerScope {
            profiles: s.profiles.clone(),
            zones: s.zones.clone(),
        }),
    }
}

/// A registry entry in its wire form.
pub fn device_message(d: &DeviceRecord) -> pb::Device {
    pb::Device {
        id: d.id.clone(),
        zone: d.zone.clone(),
        profile: d.profile.clone(),
        lot: d.lot.clone().unwrap_or_default(),
        model: d.model.clone().unwrap_or_default(),
        serial_number: d.serial_number.clone().unwrap_or_default(),
        manufacturer: d.manufacturer.clone().unwrap_or_default(),
        status: device_status_message(d.status) as i32,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

/// A device status in its wire form.
pub fn device_status_message(s: DeviceStatus) -> pb::DeviceStatus {
    match s {
        DeviceStatus::Active => pb::DeviceStatus::Active,
        DeviceStatus::Suspended => pb::DeviceStatus::Suspended,
        DeviceStatus::Decommissioned => pb::DeviceStatus::Decommissioned,
    }
}

/// A manufacturer CA in its wire form.
pub fn manufacturer_message(m: &ManufacturerCaRecord) -> pb::ManufacturerCa {
    pb::ManufacturerCa {
        id: m.id.clone(),
        name: m.name.clone(),
        zone: m.zone.clone(),
        profile: m.profile.clone(),
        auto_register: m.auto_register,
        subject: m.subject.clone(),
        not_after: m.not_after,
        created_at: m.created_at,
    }
}
