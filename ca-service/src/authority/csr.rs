//! CSR checks. The CSR contributes exactly one thing to a certificate: its public key, after its
//! signature proves possession. Its subject and extensions are ignored (the registry and the
//! profile decide those), so CSRs with any extension (e.g. OpenSSL's subjectKeyIdentifier) are
//! accepted. Parsed with x509-parser, not rcgen: rcgen labels the key by the signature algorithm
//! (a P-384 key signed with ecdsa-with-SHA256 comes back as P-256) and rejects extensions.

use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use super::profile::{KeyType, Profile};

/// Largest CSR accepted, in bytes (DER or PEM as sent).
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// A CSR whose signature verified and whose key type the profile accepts.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// The public key, as rcgen wants it for signing.
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// Its type.
    pub key_type: KeyType,
    /// DER SubjectPublicKeyInfo, for comparing keys (re-key checks).
    pub spki_der: Vec<u8>,
}

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Nothing was sent.
    #[error("CSR is empty; send a PKCS#10 request in DER or PEM")]
    Empty,
    /// Over [`MAX_CSR_BYTES`].
    #[error("CSR is {len} bytes; at most 65536 bytes are accepted")]
    TooLarge {
        /// Size sent.
        len: usize,
    },
    /// Not a parseable PKCS#10 request.
    #[error("CSR is not a valid PKCS#10 request in DER or PEM ({0})")]
    Malformed(String),
    /// The signature does not verify with the CSR's own key.
    #[error("CSR signature does not verify with the key it carries (corrupted or tampered CSR)")]
    BadSignature,
    /// The key type is not one the profile accepts.
    #[error("CSR key is {found}, profile {profile} allows {allowed}")]
    KeyNotAllowed {
        /// Key type found in the SubjectPublicKeyInfo.
        found: String,
        /// The profile.
        profile: String,
        /// What it accepts.
        allowed: String,
    },
}

fn describe_key(req: &X509CertificationRequest<'_>) -> (Option<KeyType>, String) {
    let spki = &req.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => (Some(KeyType::P256), "P-256".into()),
            Some(c) if c == OID_NIST_EC_P384 => (Some(KeyType::P384), "P-384".into()),
            Some(c) => (None, format!("EC on curve {c}")),
            None => (None, "EC without a named curve".into()),
        };
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(k)) => k.key_size().to_string(),
            _ => "?".into(),
        };
        return (None, format!("RSA-{bits}"));
    }
    if *alg == OID_SIG_ED25519 {
        return (None, "Ed25519".into());
    }
    (None, format!("of algorithm {alg}"))
}

/// Parses `input` (DER or PEM), checks the key type against `profile` and verifies the signature.
pub fn check_csr(input: &[u8], profile: &Profile) -> Result<CheckedCsr, CsrError> {
    if input.is_empty() {
        return Err(CsrError::Empty);
    }
    if input.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge { len: input.len() });
    }
    let der: Vec<u8> = if input.starts_with(b"-----BEGIN") {
        CertificateSigningRequestDer::from_pem_slice(input)
            .map_err(|_| {
                CsrError::Malformed("the PEM text holds no readable CERTIFICATE REQUEST".into())
            })?
            .as_ref()
            .to_vec()
    } else {
        input.to_vec()
    };
    // The parser's own error is debug text (`Parsing Error: Der(...)`): say what it means.
    let (rest, req) = X509CertificationRequest::from_der(&der).map_err(|_| {
        CsrError::Malformed("the bytes are not a DER-encoded CertificationRequest".into())
    })?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!(
            "{} trailing bytes after the request",
            rest.len()
        )));
    }
    let (key_type, found) = describe_key(&req);
    let key_type = match key_type {
        Some(k) if profile.key_types.contains(&k) => k,
        _ => {
            let allowed: Vec<String> = profile.key_types.iter().map(|k| k.to_string()).collect();
            return Err(CsrError::KeyNotAllowed {
                found,
                profile: profile.name.clone(),
                allowed: allowed.join(" or "),
            });
        }
    };
    req.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let spki_der = req.certification_request_info.subject_pki.raw.to_vec();
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki_der)
        .map_err(|_| CsrError::Malformed("its public key cannot be read".into()))?;
    Ok(CheckedCsr {
        public_key,
        key_type,
        spki_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::profile::builtin_profiles;

    fn sensor() -> Profile {
        builtin_profiles()
            .into_iter()
            .find(|p| p.name == "sensor")
            .unwrap()
    }

    fn csr_for(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["ignored.example".to_owned()]).unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn accepts_p256_der_and_pem() {
        let der = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(check_csr(&der, &sensor()).unwrap().key_type, KeyType::P256);
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(check_csr(pem.as_bytes(), &sensor()).is_ok());
    }

    #[test]
    fn refuses_p384_naming_both_curves() {
        let der = csr_for(&rcgen::PKCS_ECDSA_P384_SHA384);
        let err = check_csr(&der, &sensor()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSR key is P-384, profile sensor allows P-256"
        );
    }

    #[test]
    fn refuses_flipped_signature_and_garbage() {
        let mut der = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256);
        let n = der.len();
        der[n - 5] ^= 0x55;
        assert_eq!(
            check_csr(&der, &sensor()).unwrap_err(),
            CsrError::BadSignature
        );
        assert!(matches!(
            check_csr(b"\x01\x02\x03garbage", &sensor()),
            Err(CsrError::Malformed(_))
        ));
        assert!(matches!(
            check_csr(&vec![0x30; MAX_CSR_BYTES + 1], &sensor()),
            Err(CsrError::TooLarge { .. })
        ));
    }
}
