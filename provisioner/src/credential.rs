//! What the CA returns for a device, and the read-back checks every target runs on what it
//! injected: the certificate belongs to the key at the target, and the chain verifies to the
//! trust bundle.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};
use x509_parser::prelude::{FromDer, X509Certificate};

/// An issued credential, without its key (which stays at the target).
#[derive(Debug, Clone)]
pub struct Credential {
    /// Serial, hex.
    pub serial: String,
    /// Leaf followed by the issuing CA, PEM.
    pub chain_pem: String,
    /// Trust bundle (roots and issuing CAs), PEM.
    pub trust_pem: String,
}

/// Why a read-back check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A certificate could not be parsed.
    #[error("unreadable certificate: {0}")]
    Parse(String),
    /// The certificate at the target is not for the key at the target.
    #[error("the certificate does not belong to the key at the target")]
    KeyMismatch,
    /// The chain does not verify.
    #[error("the chain does not verify to the trust bundle: {0}")]
    Chain(String),
}

impl Credential {
    /// The certificates of the chain, leaf first.
    pub fn chain(&self) -> Result<Vec<CertificateDer<'static>>, CheckError> {
        let certs = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CheckError::Parse(e.to_string()))?;
        if certs.is_empty() {
            return Err(CheckError::Parse("the chain holds no certificate".into()));
        }
        Ok(certs)
    }

    /// The leaf certificate, DER.
    pub fn leaf_der(&self) -> Result<Vec<u8>, CheckError> {
        Ok(self.chain()?[0].as_ref().to_vec())
    }

    /// The leaf certificate, PEM.
    pub fn leaf_pem(&self) -> Result<String, CheckError> {
        Ok(pem::encode_config(
            &pem::Pem::new("CERTIFICATE", self.leaf_der()?),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ))
    }

    /// The trust bundle's certificates, DER.
    pub fn trust(&self) -> Result<Vec<CertificateDer<'static>>, CheckError> {
        CertificateDer::pem_slice_iter(self.trust_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CheckError::Parse(e.to_string()))
    }
}

/// Checks that `leaf_der` carries the public key `spki_der` (SubjectPublicKeyInfo, DER).
pub fn check_key(leaf_der: &[u8], spki_der: &[u8]) -> Result<(), CheckError> {
    let (_, cert) =
        X509Certificate::from_der(leaf_der).map_err(|e| CheckError::Parse(e.to_string()))?;
    if cert.public_key().raw == spki_der {
        Ok(())
    } else {
        Err(CheckError::KeyMismatch)
    }
}

/// Checks that `leaf_der`, with the intermediates of `chain` (after the leaf), verifies to a
/// root of `trust` at `now` for the leaf's own purpose (client or server authentication).
pub fn check_chain(
    leaf_der: &[u8],
    chain: &[CertificateDer<'_>],
    trust: &[CertificateDer<'_>],
    now: i64,
) -> Result<(), CheckError> {
    let (_, parsed) =
        X509Certificate::from_der(leaf_der).map_err(|e| CheckError::Parse(e.to_string()))?;
    let client_auth = parsed
        .extended_key_usage()
        .ok()
        .flatten()
        .is_none_or(|e| e.value.client_auth || e.value.any);
    let usage = if client_auth {
        KeyUsage::client_auth()
    } else {
        KeyUsage::server_auth()
    };
    let anchors: Vec<_> = trust
        .iter()
        .filter_map(|c| anchor_from_trusted_cert(c).ok())
        .collect();
    let leaf = CertificateDer::from(leaf_der);
    let ee = EndEntityCert::try_from(&leaf).map_err(|e| CheckError::Parse(format!("{e:?}")))?;
    let intermediates = chain.get(1..).unwrap_or_default();
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        time,
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| CheckError::Chain(format!("{e:?}")))
}

/// Both read-back checks on `credential` as found at the target: `leaf_der` is what the target
/// holds, `spki_der` the public key of the key it holds.
pub fn check_at_target(
    credential: &Credential,
    leaf_der: &[u8],
    spki_der: &[u8],
    now: i64,
) -> Result<(), CheckError> {
    check_key(leaf_der, spki_der)?;
    check_chain(leaf_der, &credential.chain()?, &credential.trust()?, now)
}
