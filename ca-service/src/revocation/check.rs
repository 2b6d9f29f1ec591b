//! What a broker agent checks before it lets a CRL near the broker (Mosquitto turns revocation
//! checking off when its CRL file is bad): it parses, its signature verifies with a known CA
//! (an issuing CA, or the root for the root's CRL), its `nextUpdate` is in the future, and it
//! carries a CRL number.

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// Facts of a CRL that passed [`check_crl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCrl {
    /// The issuer's subject, DER (identifies the issuer across CRLs).
    pub issuer: Vec<u8>,
    /// The issuer's subject, as text.
    pub issuer_name: String,
    /// CRL number.
    pub number: u64,
    /// `thisUpdate`, Unix seconds.
    pub this_update: i64,
    /// `nextUpdate`, Unix seconds.
    pub next_update: i64,
    /// Serial numbers of the entries, as the store writes them (lower-case hex), sorted.
    pub serials: Vec<String>,
    /// Those of them revoked with reason superseded (replaced by a newer certificate), sorted.
    pub superseded: Vec<String>,
    /// URIs of the issuing distribution point.
    pub distribution_points: Vec<String>,
    /// Whether a root (a self-issued CA) signed it: it lists revoked CAs, not devices.
    pub root: bool,
}

impl CheckedCrl {
    /// When the CA built it (its `thisUpdate` is backdated for clock skew).
    pub fn built_at(&self) -> i64 {
        crate::authority::made_at(self.this_update, self.next_update)
    }
}

/// Why a CRL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlCheckError {
    /// Not a CRL.
    #[error("not a parseable CRL: {0}")]
    Parse(String),
    /// No known issuer signed it.
    #[error("no CA of the trust bundle signed this CRL (issuer `{0}`)")]
    UnknownIssuer(String),
    /// The signature does not verify.
    #[error("the CRL of `{0}` has a bad signature")]
    BadSignature(String),
    /// `nextUpdate` has passed or is missing.
    #[error("the CRL of `{issuer}` is stale: nextUpdate {next_update} is not in the future")]
    Stale {
        /// Issuer.
        issuer: String,
        /// `nextUpdate`, Unix seconds (0 when missing).
        next_update: i64,
    },
    /// No CRL number.
    #[error("the CRL of `{0}` has no CRL number")]
    NoNumber(String),
}

/// Checks `der` against the CA certificates `issuers` (DER) at `now`.
pub fn check_crl(der: &[u8], issuers: &[Vec<u8>], now: i64) -> Result<CheckedCrl, CrlCheckError> {
    let (_, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| CrlCheckError::Parse(e.to_string()))?;
    let issuer_name = crl.issuer().to_string();
    let issuer_raw = crl.issuer().as_raw().to_vec();
    let mut same_name = false;
    let mut verified = false;
    let mut root = false;
    for ca in issuers {
        let Ok((_, cert)) = X509Certificate::from_der(ca) else {
            continue;
        };
        if cert.subject().as_raw() != issuer_raw.as_slice() {
            continue;
        }
        same_name = true;
        if crl.verify_signature(cert.public_key()).is_ok() {
            verified = true;
            root = cert.subject().as_raw() == cert.issuer().as_raw();
            break;
        }
    }
    if !same_name {
        return Err(CrlCheckError::UnknownIssuer(issuer_name));
    }
    if !verified {
        return Err(CrlCheckError::BadSignature(issuer_name));
    }
    let next_update = crl.next_update().map_or(0, |t| t.timestamp());
    if next_update <= now {
        return Err(CrlCheckError::Stale {
            issuer: issuer_name,
            next_update,
        });
    }
    let number = crl
        .crl_number()
        .map(|n| n.to_u64_digits().first().copied().unwrap_or(0))
        .ok_or_else(|| CrlCheckError::NoNumber(issuer_name.clone()))?;
    let distribution_points = crl
        .extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::IssuingDistributionPoint(idp) => Some(idp),
            _ => None,
        })
        .flat_map(|idp| match &idp.distribution_point {
            Some(x509_parser::extensions::DistributionPointName::FullName(names)) => names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    let (mut serials, mut superseded) = (Vec::new(), Vec::new());
    for entry in crl.iter_revoked_certificates() {
        let serial = crate::authority::ca::serial_hex(entry.raw_serial());
        if entry
            .reason_code()
            .is_some_and(|(_, r)| r == x509_parser::x509::ReasonCode::Superseded)
        {
            superseded.push(serial.clone());
        }
        serials.push(serial);
    }
    serials.sort_unstable();
    superseded.sort_unstable();
    Ok(CheckedCrl {
        issuer: issuer_raw,
        issuer_name,
        number,
        this_update: crl.last_update().timestamp(),
        next_update,
        serials,
        superseded,
        distribution_points,
        root,
    })
}
