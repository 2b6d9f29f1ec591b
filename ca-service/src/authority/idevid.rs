//! Manufacturer birth certificates (IEEE 802.1AR IDevID): which registered manufacturer CA a
//! presented chain leads to, and the device serial number it names. Pure: the caller supplies
//! the manufacturer CAs and the time.

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::store::ManufacturerCaRecord;

/// Why an IDevID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdevidError {
    /// The chain leads to no registered manufacturer CA.
    #[error(
        "the client certificate (issuer `{issuer}`) does not chain to a registered manufacturer CA; register it with `hallmark manufacturer add`"
    )]
    UnknownManufacturer {
        /// Issuer DN of the leaf.
        issuer: String,
    },
    /// The IDevID (or a CA above it) has expired or is not yet valid.
    #[error("the IDevID of `{subject}` is expired or not yet valid (valid until {not_after})")]
    Expired {
        /// Subject DN.
        subject: String,
        /// notAfter, RFC 2822-ish text.
        not_after: String,
    },
    /// The chain does not verify for another reason.
    #[error("the IDevID chain does not verify: {0}")]
    Invalid(String),
    /// The subject has no serialNumber attribute.
    #[error(
        "the IDevID subject `{0}` has no serialNumber attribute, so the device cannot be identified"
    )]
    NoSerialNumber(String),
}

/// A verified IDevID.
#[derive(Debug, Clone)]
pub struct VerifiedIdevid {
    /// The manufacturer CA it chains to.
    pub manufacturer: ManufacturerCaRecord,
    /// The `serialNumber` of its subject.
    pub serial_number: String,
    /// Its SubjectPublicKeyInfo, DER (to refuse operational keys equal to it).
    pub spki_der: Vec<u8>,
    /// Its subject, as text.
    pub subject: String,
}

/// Verifies `chain` (leaf first, then any intermediates the device sent) against each
/// manufacturer CA, for client authentication at `now` (Unix seconds).
pub fn verify_idevid(
    chain: &[CertificateDer<'_>],
    manufacturers: &[ManufacturerCaRecord],
    now: i64,
) -> Result<VerifiedIdevid, IdevidError> {
    let leaf = chain
        .first()
        .ok_or_else(|| IdevidError::Invalid("no certificate".into()))?;
    let (_, parsed) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| IdevidError::Invalid(format!("unparseable certificate: {e}")))?;
    let ee = EndEntityCert::try_from(leaf).map_err(|e| IdevidError::Invalid(format!("{e:?}")))?;
    let intermediates = &chain[1..];
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64));
    let mut last = None;
    // webpki does not check the validity of trust anchors: skip expired manufacturer CAs here.
    for m in manufacturers.iter().filter(|m| m.not_after > now) {
        let ca = CertificateDer::from(m.cert_der.as_slice());
        let Ok(anchor) = anchor_from_trusted_cert(&ca) else {
            continue;
        };
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            intermediates,
            time,
            KeyUsage::client_auth(),
            None,
            None,
        ) {
            Ok(_) => {
                let serial_number = parsed
                    .subject()
                    .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
                    .next()
                    .and_then(|a| a.as_str().ok())
                    .map(str::to_owned)
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| IdevidError::NoSerialNumber(parsed.subject().to_string()))?;
                return Ok(VerifiedIdevid {
                    manufacturer: m.clone(),
                    serial_number,
                    spki_der: parsed.public_key().raw.to_vec(),
                    subject: parsed.subject().to_string(),
                });
            }
            Err(webpki::Error::UnknownIssuer) => {}
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }) => {
            IdevidError::Expired {
                subject: parsed.subject().to_string(),
                not_after: parsed.validity().not_after.to_string(),
            }
        }
        Some(e) => IdevidError::Invalid(format!("{e:?}")),
        None => IdevidError::UnknownManufacturer {
            issuer: parsed.issuer().to_string(),
        },
    })
}

/// Device id for a self-registering device: `<manufacturer>-<serial>`, lower-cased, with
/// characters outside the id grammar replaced by `-`, cut to 64 characters.
pub fn auto_device_id(manufacturer: &str, serial_number: &str) -> String {
    let cleaned: String = serial_number
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut id = format!("{manufacturer}-{cleaned}");
    id.truncate(crate::identity::MAX_NAME_LEN);
    id
}

#[cfg(test)]
mod tests {
    use super::auto_device_id;

    #[test]
    fn auto_ids_follow_the_grammar() {
        assert_eq!(auto_device_id("acme", "SN 00/42"), "acme-sn-00-42");
        let long = auto_device_id("acme", &"9".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(crate::identity::DeviceId::parse(&long).is_ok());
    }
}
