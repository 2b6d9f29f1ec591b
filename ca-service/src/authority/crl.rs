//! Certificate revocation lists: one per issuing CA, v2, signed by it, with AKI, CRL number,
//! a backdated `thisUpdate` and a critical issuing distribution point equal to the CDP its
//! certificates carry (rustls treats a mismatch as "unknown status").

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateRevocationListParams, CrlDistributionPoint, CrlIssuingDistributionPoint, CrlScope,
    KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use super::{AuthorityError, IssuingCa, backdate};
use crate::clock::to_offset;
use crate::keys::run_signing;

/// One revoked (or held) certificate on a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Serial, lower-case hex.
    pub serial: String,
    /// Unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 reason code.
    pub reason: Option<i64>,
}

/// What to put on a CRL.
#[derive(Debug, Clone)]
pub struct CrlRequest<'a> {
    /// CRL number (strictly increasing per issuer).
    pub number: u64,
    /// Unix seconds.
    pub now: i64,
    /// `nextUpdate - now`.
    pub validity: Duration,
    /// URI of the issuing distribution point (the certificates' CDP), if any.
    pub distribution_point: Option<String>,
    /// The entries.
    pub entries: &'a [RevokedEntry],
}

fn reason(code: Option<i64>) -> Option<RevocationReason> {
    use RevocationReason::*;
    Some(match code? {
        // RFC 5280: the reasonCode extension should be absent rather than `unspecified`.
        1 => KeyCompromise,
        2 => CaCompromise,
        3 => AffiliationChanged,
        4 => Superseded,
        5 => CessationOfOperation,
        6 => CertificateHold,
        9 => PrivilegeWithdrawn,
        10 => AaCompromise,
        _ => return None,
    })
}

/// The subject key identifier of a CA certificate: the CRL's AKI must equal it (imported CAs
/// may use another key-id method than rcgen's).
fn subject_key_id(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// `(thisUpdate, nextUpdate)` of a CRL built at `now`, Unix seconds.
pub fn crl_window(now: i64, validity: Duration) -> (i64, i64) {
    (now - backdate(validity), now + validity.as_secs() as i64)
}

/// Builds and signs the CRL of `ca`, on the calling thread however slow its key is; async
/// code calls [`build_crl_async`].
pub fn build_crl(ca: &IssuingCa, req: &CrlRequest<'_>) -> Result<Vec<u8>, AuthorityError> {
    let crl = crl_params(ca, req)?.signed_by(&ca.issuer)?;
    Ok(crl.der().to_vec())
}

/// Builds and signs the CRL of `ca` from async code: inline with a fast key, on the blocking
/// pool with a slow one (see [`run_signing`]).
pub async fn build_crl_async(
    ca: &Arc<IssuingCa>,
    req: &CrlRequest<'_>,
) -> Result<Vec<u8>, AuthorityError> {
    let params = crl_params(ca, req)?;
    if !ca.key().is_slow() {
        return Ok(params.signed_by(&ca.issuer)?.der().to_vec());
    }
    let signer = ca.clone();
    let crl = run_signing(ca.key(), move || {
        params
            .signed_by(&signer.issuer)
            .map(|crl| crl.der().to_vec())
    })
    .await??;
    Ok(crl)
}

/// The CRL `req` asks for, to be signed by `ca`.
fn crl_params(
    ca: &IssuingCa,
    req: &CrlRequest<'_>,
) -> Result<CertificateRevocationListParams, AuthorityError> {
    let (this_update, next_update) = crl_window(req.now, req.validity);
    let revoked_certs = req
        .entries
        .iter()
        .map(|e| {
            let serial = hex::decode(&e.serial).map_err(|_| {
                rcgen::Error::X509(format!("stored serial {} is not hex", e.serial))
            })?;
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: to_offset(e.revoked_at),
                reason_code: reason(e.reason),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    let params = CertificateRevocationListParams {
        this_update: to_offset(this_update),
        next_update: to_offset(next_update),
        crl_number: SerialNumber::from_slice(&req.number.to_be_bytes()),
        issuing_distribution_point: req.distribution_point.as_ref().map(|uri| {
            CrlIssuingDistributionPoint {
                distribution_point: CrlDistributionPoint {
                    uris: vec![uri.clone()],
                },
                // The issuing CA signs end-entity certificates only.
                scope: Some(CrlScope::UserCertsOnly),
            }
        }),
        revoked_certs,
        key_identifier_method: match subject_key_id(&ca.cert_der) {
            Some(ski) => KeyIdMethod::PreSpecified(ski),
            None => KeyIdMethod::Sha256,
        },
    };
    Ok(params)
}

/// The CDP URI of the certificates of issuer `issuer_id` under `base`.
pub fn distribution_point(base: &str, issuer_id: &str) -> String {
    format!("{}/crl/{issuer_id}.crl", base.trim_end_matches('/'))
}
