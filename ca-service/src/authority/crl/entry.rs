//! CRL entries encoded once, when a certificate is revoked, and kept that way: a CRL of a
//! million entries is then a concatenation of bytes rather than a million re-encodings.

use std::borrow::Borrow;
use std::cmp::Ordering;

use yasna::models::{GeneralizedTime, ObjectIdentifier, UTCTime};

use crate::clock::to_offset;

/// id-ce-cRLReasons (RFC 5280 section 5.3.1).
const CRL_REASONS: &[u64] = &[2, 5, 29, 21];
/// Longest entry kept inline: a 20-byte serial with its sign byte (RFC 5280's limit), a UTCTime
/// and a reason code take 54 bytes. Longer ones (non-conforming serials, dates from 2050 on)
/// go to the heap.
const INLINE: usize = 54;

/// One CRL entry, DER-encoded exactly as rcgen encodes a `RevokedCertParams` without an
/// invalidity date (`SEQUENCE { userCertificate INTEGER, revocationDate Time,
/// crlEntryExtensions SEQUENCE { reasonCode } OPTIONAL }`).
///
/// Entries compare, and can be looked up, by the content octets of their serial's INTEGER (see
/// [`serial_key`]): a set of them is the revocation list of one issuer.
#[derive(Clone, Debug)]
pub enum EncodedEntry {
    /// Up to [`INLINE`] bytes, in place.
    Inline {
        /// Bytes used.
        len: u8,
        /// The DER, then zeros.
        der: [u8; INLINE],
    },
    /// Anything longer.
    Heap(Box<[u8]>),
}

impl EncodedEntry {
    /// Encodes the entry of the certificate with serial `serial` (big-endian bytes), revoked at
    /// `revoked_at` (Unix seconds) with RFC 5280 reason code `reason`. The reason code
    /// `unspecified` (0) and codes RFC 5280 does not define are left out, as rcgen does.
    pub fn new(serial: &[u8], revoked_at: i64, reason: Option<i64>) -> Self {
        let der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_bigint_bytes(serial, true);
                let at = to_offset(revoked_at);
                // RFC 5280 section 5.1.2.6: UTCTime through 2049, GeneralizedTime from 2050.
                if (1950..2050).contains(&at.year()) {
                    w.next().write_utctime(&UTCTime::from_datetime(at));
                } else {
                    w.next()
                        .write_generalized_time(&GeneralizedTime::from_datetime(at));
                }
                if let Some(code) = reason.filter(|c| is_listed_reason(*c)) {
                    w.next().write_sequence(|w| {
                        w.next().write_sequence(|w| {
                            w.next()
                                .write_oid(&ObjectIdentifier::from_slice(CRL_REASONS));
                            let value = yasna::construct_der(|w| w.write_enum(code));
                            w.next().write_bytes(&value);
                        })
                    })
                }
            })
        });
        if der.len() <= INLINE {
            let mut inline = [0u8; INLINE];
            inline[..der.len()].copy_from_slice(&der);
            EncodedEntry::Inline {
                len: der.len() as u8,
                der: inline,
            }
        } else {
            EncodedEntry::Heap(der.into_boxed_slice())
        }
    }

    /// The entry's DER.
    pub fn der(&self) -> &[u8] {
        match self {
            EncodedEntry::Inline { len, der } => &der[..usize::from(*len)],
            EncodedEntry::Heap(der) => der,
        }
    }

    /// The content octets of the serial's INTEGER, as [`serial_key`] gives them.
    fn serial(&self) -> &[u8] {
        // Built by `new` only: a SEQUENCE whose first element is the INTEGER.
        let der = self.der();
        let (_, seq_header, _) = super::der::header(der).unwrap_or((0, 0, 0));
        let rest = &der[seq_header..];
        let (_, int_header, int_len) = super::der::header(rest).unwrap_or((0, 0, 0));
        &rest[int_header..int_header + int_len]
    }
}

/// The reason codes rcgen writes (see `reason` in the parent module): 1-6, 9 and 10.
fn is_listed_reason(code: i64) -> bool {
    matches!(code, 1..=6 | 9 | 10)
}

/// The content octets of the DER INTEGER of serial `serial` (big-endian bytes): leading zeros
/// dropped, a zero put first when the high bit is set, as the entry encodes it. The key under
/// which an [`EncodedEntry`] is found in a set.
pub fn serial_key(serial: &[u8]) -> Vec<u8> {
    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    let digits = &serial[start..];
    match digits.first() {
        None => vec![0],
        Some(b) if *b >= 0x80 => [&[0u8][..], digits].concat(),
        Some(_) => digits.to_vec(),
    }
}

impl PartialEq for EncodedEntry {
    fn eq(&self, other: &Self) -> bool {
        self.serial() == other.serial()
    }
}

impl Eq for EncodedEntry {}

impl PartialOrd for EncodedEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EncodedEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.serial().cmp(other.serial())
    }
}

/// Consistent with `Ord`: both compare the serial's content octets.
impl Borrow<[u8]> for EncodedEntry {
    fn borrow(&self) -> &[u8] {
        self.serial()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_inline_up_to_a_twenty_byte_serial_and_are_keyed_by_it() {
        let twenty = [0xffu8; 20];
        let e = EncodedEntry::new(&twenty, 1_790_000_000, Some(1));
        assert!(matches!(e, EncodedEntry::Inline { len: 54, .. }), "{e:?}");
        assert_eq!(Borrow::<[u8]>::borrow(&e), serial_key(&twenty).as_slice());
        let long = EncodedEntry::new(&[0x7f; 40], 1_790_000_000, Some(1));
        assert!(matches!(long, EncodedEntry::Heap(_)));
        assert_eq!(long.serial(), &[0x7f; 40]);
        assert_eq!(serial_key(&[0, 0, 0x05]), [0x05]);
        assert_eq!(serial_key(&[0x80]), [0x00, 0x80]);
        assert_eq!(serial_key(&[]), [0x00]);
        // The same serial with another date or reason is the same entry.
        assert_eq!(e, EncodedEntry::new(&twenty, 1, None));
        assert_eq!(
            EncodedEntry::new(&[0x01], 1_790_000_000, Some(0))
                .der()
                .len(),
            2 + 3 + 15,
            "no reasonCode for unspecified"
        );
    }
}
