//! The mark of the CA's own API server certificate: a private extended key usage that only
//! hallmark-ca's `Authority::sign_server` writes. Clients accept a server as the CA only when
//! its certificate carries it, so a device certificate with a matching DNS name (any
//! serverAuth certificate chaining to the trust bundle) cannot pose as the CA.
//!
//! The OID sits under `2.25` (UUID-based OIDs, ITU-T X.667): no registration is needed, and no
//! one else will pick the same UUID. Profiles cannot name it: their EKUs are the closed set
//! `authority::profile::Eku` of hallmark-ca.

use rcgen::CustomExtension;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

/// Registry id (and subject CN) of the CA's own API server certificate.
pub const SERVER_DEVICE: &str = "hallmark-ca";

/// The marker OID in dotted form (UUID 83a05845-d4d7-429c-b74c-2fd406d2f75a as an integer).
pub const CA_SERVER_EKU: &str = "2.25.174961425329848942302630434754400548698";

/// The marker OID's DER content octets (without tag and length). Its last arc does not fit in
/// 64 bits, so it is kept encoded rather than as a list of arcs.
pub const CA_SERVER_EKU_DER: &[u8] = &[
    0x69, 0x82, 0x87, 0xa0, 0xac, 0x91, 0xba, 0xcd, 0xba, 0x8a, 0xb9, 0xb7, 0xa6, 0x8b, 0xfa, 0xc0,
    0xb6, 0xcb, 0xee, 0x5a,
];

/// id-kp-serverAuth (1.3.6.1.5.5.7.3.1), DER content octets.
const SERVER_AUTH_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// id-ce-extKeyUsage (2.5.29.37).
const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];

/// The extended key usage extension of the CA's server certificate: serverAuth and the marker.
/// Written as a custom extension because rcgen's EKU list takes arcs of at most 64 bits.
pub fn ca_server_eku_extension() -> CustomExtension {
    let mut seq = Vec::new();
    for oid in [SERVER_AUTH_DER, CA_SERVER_EKU_DER] {
        seq.push(0x06);
        seq.push(oid.len() as u8);
        seq.extend_from_slice(oid);
    }
    let mut content = vec![0x30, seq.len() as u8];
    content.extend(seq);
    CustomExtension::from_oid_content(EXT_KEY_USAGE, content)
}

/// Whether the certificate `der` carries the CA-server marker in its extended key usages.
pub fn has_ca_server_eku(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    cert.extensions()
        .iter()
        .any(|e| match e.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) => {
                eku.other.iter().any(|o| o.as_bytes() == CA_SERVER_EKU_DER)
            }
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoded_oid_is_the_documented_one() {
        // First octet: 2 * 40 + 25; then base-128 digits of the UUID's integer.
        assert_eq!(CA_SERVER_EKU_DER[0], 2 * 40 + 25);
        let mut arc: u128 = 0;
        for (i, b) in CA_SERVER_EKU_DER[1..].iter().enumerate() {
            assert_eq!(
                b & 0x80 == 0,
                i == CA_SERVER_EKU_DER.len() - 2,
                "continuation bits"
            );
            arc = (arc << 7) | u128::from(b & 0x7f);
        }
        assert_eq!(format!("2.25.{arc}"), CA_SERVER_EKU);
        let uuid = u128::from_str_radix("83a05845d4d7429cb74c2fd406d2f75a", 16).unwrap();
        assert_eq!(CA_SERVER_EKU, format!("2.25.{uuid}"));
    }

    #[test]
    fn the_extension_parses_as_server_auth_and_the_marker() {
        let ext = ca_server_eku_extension();
        let (_, eku) = x509_parser::extensions::ExtendedKeyUsage::from_der(ext.content()).unwrap();
        assert!(eku.server_auth && !eku.client_auth);
        assert_eq!(eku.other.len(), 1);
        assert_eq!(eku.other[0].as_bytes(), CA_SERVER_EKU_DER);
    }
}
