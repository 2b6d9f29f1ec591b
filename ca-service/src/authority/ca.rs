//! CA certificates: creating a root and an issuing CA, importing an issuing CA signed by an
//! existing root, and reading validity out of CA certificates.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{BACKDATE_SECONDS, IssuingCa, random_serial};
use crate::clock::to_offset;
use crate::keys::{CaKey, FileKey};

// Moved to hallmark-core (clients write PEM too); re-exported at its old path.
pub use hallmark_core::pem::der_to_pem;

/// Default root CA lifetime: 20 years.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Default issuing CA lifetime: 5 years.
pub const ISSUING_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// Why an imported CA was refused.
#[derive(Debug, thiserror::Error)]
pub enum CaImportError {
    /// Not a parseable certificate.
    #[error("{what} is not a valid X.509 certificate: {reason}")]
    Parse {
        /// Which file.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// The certificate is not a CA.
    #[error("{0} is not a CA certificate (basicConstraints CA:TRUE missing)")]
    NotCa(&'static str),
    /// The issuing CA may sign further CAs, which device PKI does not need.
    #[error(
        "the issuing CA allows sub-CAs (pathlen missing or > 0); Hallmark signs only leaves, use pathlen 0"
    )]
    PathLen,
    /// The issuing certificate was not signed by the given root.
    #[error("the issuing CA certificate is not signed by the given root certificate")]
    NotSignedByRoot,
    /// The key does not belong to the certificate.
    #[error("the issuing CA key does not match the public key of the issuing CA certificate")]
    KeyMismatch,
    /// The key cannot sign CRLs or certificates.
    #[error("the issuing CA certificate lacks keyCertSign or cRLSign key usage")]
    KeyUsage,
    /// Expired or not yet valid.
    #[error("{0} is expired or not yet valid")]
    Validity(&'static str),
}

/// Whether the certificate says `CA:TRUE` in its basic constraints.
pub fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

/// `(notBefore, notAfter)` of a certificate, Unix seconds.
pub fn validity(der: &[u8]) -> Result<(i64, i64), rcgen::Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
    Ok((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

pub use hallmark_core::serial::serial_hex;

/// Serial of a certificate as the store writes serials: lower-case hex of the number, without
/// leading zero bytes.
pub fn serial_hex_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(hex::encode(cert.serial.to_bytes_be()))
}

/// Short stable id of a CA certificate: `<prefix>-` + 8 hex digits of its key identifier.
pub fn ca_id(prefix: &str, cert_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
    format!("{prefix}-{}", hex::encode(&digest.as_ref()[..4]))
}

fn ca_params(
    cn: String,
    org: &str,
    now: i64,
    lifetime: Duration,
    pathlen: Option<u8>,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, org);
    params.distinguished_name = dn;
    params.not_before = to_offset(now - BACKDATE_SECONDS);
    params.not_after = to_offset(now + lifetime.as_secs() as i64);
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.is_ca = match pathlen {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The common name of a CA: `<org> Hallmark <kind> <suffix>`, but without saying Hallmark
/// twice when the organisation is (or ends with) Hallmark, as with the default organisation.
fn ca_name(org: &str, kind: &str, suffix: &str) -> String {
    let org = org.trim();
    let ends_with_hallmark = org
        .rsplit(' ')
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("hallmark"));
    if ends_with_hallmark {
        format!("{org} {kind} {suffix}")
    } else {
        format!("{org} Hallmark {kind} {suffix}")
    }
}

/// Creates a self-signed root CA (P-256). Returns its DER and key (in memory, to be written to
/// a key file).
pub fn create_root(
    org: &str,
    now: i64,
    lifetime: Duration,
) -> Result<(Vec<u8>, FileKey), rcgen::Error> {
    let key = FileKey::generate_p256()?;
    let suffix = hex::encode(&random_serial()?[..3]);
    let mut params = ca_params(
        ca_name(org, "Root CA", &suffix),
        org,
        now,
        lifetime,
        Some(1),
    )?;
    // A self-signed certificate's AKI would equal its SKI; leave it out like most roots.
    params.use_authority_key_identifier_extension = false;
    let cert = params.self_signed(&key)?;
    Ok((cert.der().to_vec(), key))
}

/// Creates an issuing CA (P-256, pathlen 0) signed by the root, capped by the root's expiry.
pub fn create_issuing(
    root_der: &[u8],
    root_key: impl Into<CaKey>,
    org: &str,
    now: i64,
    lifetime: Duration,
) -> Result<(Vec<u8>, FileKey), rcgen::Error> {
    let root = IssuingCa::new(ca_id("root", root_der), root_der.to_vec(), root_key)?;
    create_issuing_under(&root, org, now, lifetime, None)
}

/// Creates an issuing CA (P-256, pathlen 0) signed by `root`, capped by the root's expiry,
/// carrying `crl_distribution_point` (the URL of the root's CRL) when given.
pub fn create_issuing_under(
    root: &IssuingCa,
    org: &str,
    now: i64,
    lifetime: Duration,
    crl_distribution_point: Option<String>,
) -> Result<(Vec<u8>, FileKey), rcgen::Error> {
    let key = FileKey::generate_p256()?;
    let suffix = hex::encode(&random_serial()?[..3]);
    let mut params = ca_params(
        ca_name(org, "Issuing CA", &suffix),
        org,
        now,
        lifetime,
        Some(0),
    )?;
    params.not_after = to_offset((now + lifetime.as_secs() as i64).min(root.not_after));
    if let Some(uri) = crl_distribution_point {
        params.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec![uri] }];
    }
    let cert = params.signed_by(&key, &root.issuer)?;
    Ok((cert.der().to_vec(), key))
}

/// Checks an issuing CA to be imported: a CA with pathlen 0 able to sign certificates and CRLs,
/// signed by `root_der`, whose public key is `key`'s, valid at `now`.
pub fn check_import(
    issuing_der: &[u8],
    root_der: &[u8],
    key: &(impl PublicKeyData + ?Sized),
    now: i64,
) -> Result<(), CaImportError> {
    let parse = |what, der| {
        X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| CaImportError::Parse {
                what,
                reason: e.to_string(),
            })
    };
    let issuing = parse("the issuing CA certificate", issuing_der)?;
    let root = parse("the root CA certificate", root_der)?;
    for (what, cert) in [
        ("the issuing CA certificate", &issuing),
        ("the root CA certificate", &root),
    ] {
        if !is_ca(cert) {
            return Err(CaImportError::NotCa(what));
        }
        let v = cert.validity();
        if now < v.not_before.timestamp() || now >= v.not_after.timestamp() {
            return Err(CaImportError::Validity(what));
        }
    }
    let pathlen = issuing
        .basic_constraints()
        .ok()
        .flatten()
        .and_then(|bc| bc.value.path_len_constraint);
    if pathlen != Some(0) {
        return Err(CaImportError::PathLen);
    }
    match issuing.key_usage().ok().flatten() {
        Some(ku) if ku.value.key_cert_sign() && ku.value.crl_sign() => {}
        _ => return Err(CaImportError::KeyUsage),
    }
    issuing
        .verify_signature(Some(root.public_key()))
        .map_err(|_| CaImportError::NotSignedByRoot)?;
    check_key_matches(issuing_der, key)
}

/// Checks that `key` is the key of the certificate `cert_der`.
pub fn check_key_matches(
    cert_der: &[u8],
    key: &(impl PublicKeyData + ?Sized),
) -> Result<(), CaImportError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| CaImportError::Parse {
        what: "the CA certificate",
        reason: e.to_string(),
    })?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(CaImportError::KeyMismatch);
    }
    Ok(())
}

/// Whether the certificate's SANs contain every DNS name / IP address in `names`.
pub fn has_names(cert_der: &[u8], names: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return names.is_empty();
    };
    let present: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names.iter().all(|n| present.contains(n))
}

#[cfg(test)]
mod tests {
    use super::ca_name;

    #[test]
    fn ca_names_say_hallmark_once() {
        assert_eq!(
            ca_name("Hallmark", "Root CA", "a1b2c3"),
            "Hallmark Root CA a1b2c3"
        );
        assert_eq!(
            ca_name("ACME Plant 4", "Issuing CA", "a1b2c3"),
            "ACME Plant 4 Hallmark Issuing CA a1b2c3"
        );
        assert_eq!(
            ca_name("ACME hallmark", "Issuing CA", "0f"),
            "ACME hallmark Issuing CA 0f"
        );
    }
}
