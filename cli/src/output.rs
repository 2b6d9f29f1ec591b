//! Printing certificates as a table or JSON.

use clap::ValueEnum;
use hallmark_proto::v1 as pb;
use serde_json::json;

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// RFC 3339 text of Unix seconds.
pub fn time_text(unix: i64) -> String {
    hallmark_core::clock::rfc3339(unix)
}

/// Status as text.
pub fn status_text(status: i32) -> &'static str {
    match pb::CertificateStatus::try_from(status) {
        Ok(pb::CertificateStatus::Active) => "active",
        Ok(pb::CertificateStatus::Revoked) => "revoked",
        Ok(pb::CertificateStatus::Suspended) => "suspended",
        Ok(pb::CertificateStatus::Superseded) => "superseded",
        _ => "unknown",
    }
}

/// JSON object of a certificate (without DER; PEM included when `with_pem`).
pub fn cert_json(c: &pb::Certificate, with_pem: bool) -> serde_json::Value {
    let mut v = json!({
        "serial": c.serial,
        "device_id": c.device_id,
        "profile": c.profile,
        "zone": c.zone,
        "subject": c.subject,
        "issuer_id": c.issuer_id,
        "status": status_text(c.status),
        "not_before": time_text(c.not_before),
        "not_after": time_text(c.not_after),
        "issued_at": time_text(c.issued_at),
    });
    if c.revoked_at != 0 {
        v["revoked_at"] = json!(time_text(c.revoked_at));
        v["revocation_reason"] = json!(c.revocation_reason);
    }
    if !c.superseded_by.is_empty() {
        v["superseded_by"] = json!(c.superseded_by);
    }
    if let Some(s) = &c.scope {
        v["scope"] = json!({"profiles": s.profiles, "zones": s.zones});
    }
    if with_pem {
        v["pem"] = json!(hallmark_core::pem::der_to_pem(&c.der));
    }
    v
}

/// Prints rows as aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// One table row of a certificate.
pub fn cert_row(c: &pb::Certificate) -> Vec<String> {
    vec![
        c.serial.clone(),
        c.device_id.clone(),
        c.profile.clone(),
        c.zone.clone(),
        status_text(c.status).to_owned(),
        time_text(c.not_after),
    ]
}

/// Header matching [`cert_row`].
pub const CERT_HEADER: [&str; 6] = ["SERIAL", "DEVICE", "PROFILE", "ZONE", "STATUS", "NOT_AFTER"];
