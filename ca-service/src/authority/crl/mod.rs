//! Certificate revocation lists: one per issuing CA, v2, signed by it, with AKI, CRL number,
//! a backdated `thisUpdate` and a critical issuing distribution point equal to the CDP its
//! certificates carry (rustls treats a mismatch as "unknown status").

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateRevocationListParams, CrlDistributionPoint, CrlIssuingDistributionPoint, CrlScope,
    KeyIdMethod, SerialNumber,
};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

mod der;
mod entry;

pub use entry::{EncodedEntry, serial_key};

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

/// A CRL's fields other than its entries.
#[derive(Debug, Clone)]
pub struct CrlHeader {
    /// CRL number (strictly increasing per issuer).
    pub number: u64,
    /// Unix seconds.
    pub now: i64,
    /// `nextUpdate - now`.
    pub validity: Duration,
    /// URI of the issuing distribution point (the certificates' CDP), if any.
    pub distribution_point: Option<String>,
}

impl CrlRequest<'_> {
    fn header(&self) -> CrlHeader {
        CrlHeader {
            number: self.number,
            now: self.now,
            validity: self.validity,
            distribution_point: self.distribution_point.clone(),
        }
    }

    /// The entries, encoded.
    fn encoded(&self) -> Result<Vec<EncodedEntry>, AuthorityError> {
        self.entries
            .iter()
            .map(|e| {
                let serial = hex::decode(&e.serial).map_err(|_| {
                    rcgen::Error::X509(format!("stored serial {} is not hex", e.serial))
                })?;
                Ok(EncodedEntry::new(&serial, e.revoked_at, e.reason))
            })
            .collect()
    }
}

/// Entries already encoded, in the order they go on a CRL: the publisher's in-memory list, or
/// a `Vec` of [`EncodedEntry`].
pub trait CrlEntries: Sync {
    /// How many there are.
    fn count(&self) -> usize;
    /// Calls `f` with each entry's DER, in order.
    fn each(&self, f: &mut dyn FnMut(&[u8]));
}

impl CrlEntries for Vec<EncodedEntry> {
    fn count(&self) -> usize {
        self.len()
    }

    fn each(&self, f: &mut dyn FnMut(&[u8])) {
        for e in self {
            f(e.der());
        }
    }
}

/// Builds and signs the CRL of `ca`, on the calling thread however slow its key is; async
/// code calls [`build_crl_async`].
pub fn build_crl(ca: &IssuingCa, req: &CrlRequest<'_>) -> Result<Vec<u8>, AuthorityError> {
    build_crl_from(ca, &req.header(), &req.encoded()?)
}

/// Builds and signs the CRL of `ca` from async code: inline with a fast key, on the blocking
/// pool with a slow one (see [`run_signing`]).
pub async fn build_crl_async(
    ca: &Arc<IssuingCa>,
    req: &CrlRequest<'_>,
) -> Result<Vec<u8>, AuthorityError> {
    let entries = req.encoded()?;
    build_crl_from_async(ca, &req.header(), &entries).await
}

/// The key rcgen writes the CRL template with: the CA key's public key and algorithm (so the
/// template carries the right algorithm identifier and key identifier), and no signature. A
/// real signature over the template would be a valid CRL with the real number that lists
/// nothing: whoever saw it leave the signer (an HSM's or a remote signer's log) could hand it
/// to a broker in place of the real one.
#[derive(Debug)]
pub struct TemplateKey(pub(crate) crate::keys::CaKey);

impl rcgen::PublicKeyData for TemplateKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen::PublicKeyData::algorithm(&self.0)
    }
}

impl rcgen::SigningKey for TemplateKey {
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(Vec::new())
    }
}

/// rcgen's CRL without entries, unsigned.
fn template(ca: &IssuingCa, header: &CrlHeader) -> Result<Vec<u8>, AuthorityError> {
    Ok(crl_params(ca, header)?
        .signed_by(&ca.template_issuer)?
        .der()
        .to_vec())
}

/// [`build_crl`] with entries already encoded.
pub fn build_crl_from(
    ca: &IssuingCa,
    header: &CrlHeader,
    entries: &dyn CrlEntries,
) -> Result<Vec<u8>, AuthorityError> {
    let spliced = Spliced::new(&template(ca, header)?, entries)?;
    let signature = ca.key().signer().sign(spliced.tbs())?;
    Ok(spliced.finish(&signature))
}

/// [`build_crl_async`] with entries already encoded: the entries are copied into the CRL on
/// the calling thread (a memory copy), the signature made as [`run_signing`] decides.
pub async fn build_crl_from_async(
    ca: &Arc<IssuingCa>,
    header: &CrlHeader,
    entries: &dyn CrlEntries,
) -> Result<Vec<u8>, AuthorityError> {
    let spliced = Spliced::new(&template(ca, header)?, entries)?;
    let key = ca.key().clone();
    let (spliced, signature) = run_signing(ca.key(), move || {
        let signature = key.signer().sign(spliced.tbs());
        (spliced, signature)
    })
    .await?;
    Ok(spliced.finish(&signature?))
}

/// A CRL being assembled from rcgen's CRL without entries (the template: version, algorithm,
/// issuer, dates and extensions, all written by rcgen, its signature left empty) and the
/// encoded entries, which go between the template's `nextUpdate` and its `crlExtensions` (RFC
/// 5280 section 5.1; with no entries the list is left out, as the RFC requires). rcgen
/// re-encodes every entry from owned parameters at every build, which at a million entries
/// takes half a second and several hundred megabytes; here an entry is encoded once, when its
/// certificate is revoked.
struct Spliced {
    /// Room for the outer SEQUENCE header, then the new `tbsCertList`.
    buf: Vec<u8>,
    /// The `signatureAlgorithm` of the template (the same algorithm signs the new TBS).
    algorithm: Vec<u8>,
}

/// The largest SEQUENCE header [`der::write_header`] writes.
const ROOM: usize = 2 + std::mem::size_of::<usize>();

impl Spliced {
    fn new(template: &[u8], entries: &dyn CrlEntries) -> Result<Self, AuthorityError> {
        let bad = || rcgen::Error::X509("rcgen's CRL is not the DER expected".into());
        let (_, outer, _) = der::header(template).ok_or_else(bad)?;
        let list = &template[outer..];
        let (_, tbs_header, tbs_len) = der::header(list).ok_or_else(bad)?;
        let tbs = &list[tbs_header..tbs_header + tbs_len];
        let algorithm = &list[tbs_header + tbs_len..];
        let (_, alg_header, alg_len) = der::header(algorithm).ok_or_else(bad)?;
        let algorithm = algorithm[..alg_header + alg_len].to_vec();
        // The template's TBS has no revokedCertificates: they go before `[0] crlExtensions`.
        let mut at = 0;
        while at < tbs.len() && tbs[at] != 0xa0 {
            let (_, h, l) = der::header(&tbs[at..]).ok_or_else(bad)?;
            at += h + l;
        }
        let (before, extensions) = tbs.split_at(at);
        let mut entries_len = 0;
        entries.each(&mut |e| entries_len += e.len());
        let revoked_len = if entries_len == 0 {
            0
        } else {
            der::header_len(entries_len) + entries_len
        };
        let new_tbs_len = before.len() + revoked_len + extensions.len();
        let mut buf = Vec::with_capacity(
            ROOM + der::header_len(new_tbs_len) + new_tbs_len + algorithm.len() + 160,
        );
        buf.resize(ROOM, 0);
        der::write_header(&mut buf, der::SEQUENCE, new_tbs_len);
        buf.extend_from_slice(before);
        if entries_len > 0 {
            der::write_header(&mut buf, der::SEQUENCE, entries_len);
            entries.each(&mut |e| buf.extend_from_slice(e));
        }
        buf.extend_from_slice(extensions);
        Ok(Self { buf, algorithm })
    }

    /// The new `tbsCertList`, to be signed.
    fn tbs(&self) -> &[u8] {
        &self.buf[ROOM..]
    }

    /// The CRL: `SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }`.
    fn finish(mut self, signature: &[u8]) -> Vec<u8> {
        let tbs_len = self.buf.len() - ROOM;
        self.buf.extend_from_slice(&self.algorithm);
        der::write_header(&mut self.buf, der::BIT_STRING, signature.len() + 1);
        self.buf.push(0);
        self.buf.extend_from_slice(signature);
        let content = self.buf.len() - ROOM;
        let mut outer = Vec::with_capacity(ROOM);
        der::write_header(&mut outer, der::SEQUENCE, content);
        debug_assert!(tbs_len < content);
        let start = ROOM - outer.len();
        self.buf[start..ROOM].copy_from_slice(&outer);
        // A memmove of the whole CRL (milliseconds at a million entries), no second copy.
        self.buf.drain(..start);
        self.buf
    }
}

/// rcgen's parameters of the CRL `header` describes, without entries: the template.
fn crl_params(
    ca: &IssuingCa,
    header: &CrlHeader,
) -> Result<CertificateRevocationListParams, AuthorityError> {
    let (this_update, next_update) = crl_window(header.now, header.validity);
    let params = CertificateRevocationListParams {
        this_update: to_offset(this_update),
        next_update: to_offset(next_update),
        crl_number: SerialNumber::from_slice(&header.number.to_be_bytes()),
        issuing_distribution_point: header.distribution_point.as_ref().map(|uri| {
            CrlIssuingDistributionPoint {
                distribution_point: CrlDistributionPoint {
                    uris: vec![uri.clone()],
                },
                // The issuing CA signs end-entity certificates only.
                scope: Some(CrlScope::UserCertsOnly),
            }
        }),
        revoked_certs: Vec::new(),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{RevocationReason, RevokedCertParams};
    use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

    use super::*;
    use crate::authority::ca::{create_issuing, create_root};
    use crate::clock::{Clock, SystemClock};

    fn issuing() -> IssuingCa {
        let now = SystemClock.now();
        let year = Duration::from_secs(365 * 86400);
        let (root, root_key) = create_root("Test", now, year).unwrap();
        let (der, key) = create_issuing(&root, root_key, "Test", now, year).unwrap();
        IssuingCa::new("issuing-test".into(), der, key).unwrap()
    }

    /// The `tbsCertList` of a CRL (the signatures differ: ECDSA is randomized).
    fn tbs(crl: &[u8]) -> &[u8] {
        let (_, outer, _) = der::header(crl).unwrap();
        let (_, h, l) = der::header(&crl[outer..]).unwrap();
        &crl[outer..outer + h + l]
    }

    fn rcgen_reason(code: Option<i64>) -> Option<RevocationReason> {
        use RevocationReason::*;
        Some(match code? {
            0 => Unspecified,
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

    #[test]
    fn the_spliced_crl_is_rcgens_crl_byte_for_byte_and_verifies() {
        let ca = issuing();
        let now = SystemClock.now();
        // Serials with a high bit, leading zeros, 20 bytes; every reason; dates past 2050.
        let entries: Vec<RevokedEntry> = [
            ("4f00aa11223344556677889900aabbcc", now, Some(1)),
            ("ff", now - 10, Some(0)),
            ("0000ab", now - 20, None),
            ("80ffffffffffffffffffffffffffffffffffffff", now, Some(6)),
            ("01", 2_600_000_000, Some(9)),
            ("7e", now, Some(7)),
            ("00", now, Some(10)),
        ]
        .iter()
        .map(|(serial, revoked_at, reason)| RevokedEntry {
            serial: (*serial).into(),
            revoked_at: *revoked_at,
            reason: *reason,
        })
        .collect();
        for count in [0, 1, entries.len()] {
            let req = CrlRequest {
                number: 7,
                now,
                validity: Duration::from_secs(3600),
                distribution_point: Some("http://ca.test/crl/issuing-test.crl".into()),
                entries: &entries[..count],
            };
            let ours = build_crl(&ca, &req).unwrap();
            let mut params = crl_params(&ca, &req.header()).unwrap();
            params.revoked_certs = req
                .entries
                .iter()
                .map(|e| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(&e.serial).unwrap()),
                    revocation_time: to_offset(e.revoked_at),
                    reason_code: rcgen_reason(e.reason),
                    invalidity_date: None,
                })
                .collect();
            let theirs = params.signed_by(&ca.issuer).unwrap();
            assert_eq!(tbs(&ours), tbs(theirs.der()), "{count} entries");
            let (_, issuer) = X509Certificate::from_der(&ca.cert_der).unwrap();
            let (rest, crl) = CertificateRevocationList::from_der(&ours).unwrap();
            assert!(rest.is_empty());
            crl.verify_signature(issuer.public_key())
                .unwrap_or_else(|e| panic!("{count} entries: {e}"));
            assert_eq!(crl.iter_revoked_certificates().count(), count);
        }
    }

    #[test]
    fn a_large_crl_gets_long_form_lengths() {
        let ca = issuing();
        let now = SystemClock.now();
        let entries: Vec<EncodedEntry> = (0u32..20_000)
            .map(|i| EncodedEntry::new(&(0x4000_0000 + i).to_be_bytes(), now, Some(5)))
            .collect();
        let header = CrlHeader {
            number: 2,
            now,
            validity: Duration::from_secs(3600),
            distribution_point: None,
        };
        let der = build_crl_from(&ca, &header, &entries).unwrap();
        let checked =
            crate::revocation::check::check_crl(&der, std::slice::from_ref(&ca.cert_der), now)
                .unwrap();
        assert_eq!(checked.serials.len(), 20_000);
        assert_eq!(der::header(&der).map(|(_, h, l)| h + l), Some(der.len()));
    }
}
