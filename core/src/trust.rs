//! Accepting a new trust bundle from the CA. Clients replace their trust anchors with what the
//! CA answers (the `ca.pem` of a bundle, the broker's CA file, what the factory injects), so a
//! server that got past the TLS check, or a CA whose server key leaked, could otherwise plant a
//! root of its own. A new bundle is taken only when every certificate in it is a CA that chains
//! to a certificate the client trusts already; a new root is an operator's decision.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Longest chain from an offered CA to a trusted one.
const MAX_DEPTH: usize = 8;

/// Why an offered trust bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustBundleError {
    /// The client's own trust bundle is empty or unreadable.
    #[error("the trust bundle this client trusts holds no certificate")]
    NoAnchors,
    /// The offered bundle holds no certificate.
    #[error("the CA answered with an empty trust bundle")]
    Empty,
    /// A PEM block or certificate of the offered bundle does not parse.
    #[error("the CA's trust bundle holds something that is not a certificate: {0}")]
    Unparseable(String),
    /// The offered bundle holds a PEM block of another label. OpenSSL (Mosquitto's CA file)
    /// trusts `TRUSTED CERTIFICATE` and `X509 CERTIFICATE` blocks and loads `X509 CRL` blocks
    /// of a CA file, which the certificate check here would not see.
    #[error(
        "the CA's trust bundle holds a PEM block `{0}`, other than CERTIFICATE; a trust bundle \
         holds only CERTIFICATE blocks (OpenSSL would trust or load what other blocks carry); \
         nothing was written"
    )]
    OtherPem(String),
    /// An offered certificate is not a CA certificate.
    #[error("the CA's trust bundle holds `{subject}`, which is not a CA certificate")]
    NotCa {
        /// Its subject.
        subject: String,
    },
    /// An offered CA does not chain to a trusted certificate.
    #[error(
        "the CA's trust bundle holds `{subject}` (SHA-256 fingerprint {fingerprint}), which does \
         not chain to a root this client trusts; nothing was written. A root rollover is an \
         explicit operator action: check the new root's fingerprint out of band, add it to the \
         trust bundle this client starts with (--trust-bundle / HALLMARK_CA, or the bundle's \
         ca.pem), and run again"
    )]
    NewRoot {
        /// Its subject.
        subject: String,
        /// Hex SHA-256 of its DER.
        fingerprint: String,
    },
}

struct Cert {
    der: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_text: String,
    is_ca: bool,
}

fn parse_all(pem: &[u8]) -> Result<Vec<Cert>, TrustBundleError> {
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| TrustBundleError::Unparseable(e.to_string()))?;
        let (_, c) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| TrustBundleError::Unparseable(e.to_string()))?;
        out.push(Cert {
            der: der.as_ref().to_vec(),
            subject: c.subject().as_raw().to_vec(),
            issuer: c.issuer().as_raw().to_vec(),
            subject_text: c.subject().to_string(),
            is_ca: c.is_ca(),
        });
    }
    Ok(out)
}

/// Whether `issuer`'s key signed `cert`.
fn signed_by(cert: &Cert, issuer: &Cert) -> bool {
    if cert.issuer != issuer.subject || !issuer.is_ca {
        return false;
    }
    let (Ok((_, c)), Ok((_, i))) = (
        X509Certificate::from_der(&cert.der),
        X509Certificate::from_der(&issuer.der),
    ) else {
        return false;
    };
    c.verify_signature(Some(i.public_key())).is_ok()
}

/// Checks that every certificate of the offered bundle `offered_pem` is a CA certificate that
/// chains (by signature, through other offered CAs) to a certificate of `trusted_pem`, the
/// bundle the client already trusts. Certificates of `trusted_pem` themselves pass; validity
/// dates are not judged here (TLS and OpenSSL do that when the bundle is used).
pub fn check_trust_bundle(trusted_pem: &[u8], offered_pem: &[u8]) -> Result<(), TrustBundleError> {
    let trusted = parse_all(trusted_pem).map_err(|_| TrustBundleError::NoAnchors)?;
    if trusted.is_empty() {
        return Err(TrustBundleError::NoAnchors);
    }
    let offered = parse_all(offered_pem)?;
    // Every PEM boundary must be one of the certificates just read: the bundle is written
    // as it came, and OpenSSL reads labels (and malformed blocks) rustls's reader skips.
    let mut begins = 0;
    for line in String::from_utf8_lossy(offered_pem).lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN") {
            if line != "-----BEGIN CERTIFICATE-----" {
                let label = rest.trim_start().trim_end_matches('-').trim();
                return Err(TrustBundleError::OtherPem(label.to_owned()));
            }
            begins += 1;
        }
    }
    if begins != offered.len() {
        return Err(TrustBundleError::Unparseable(format!(
            "{begins} PEM blocks, of which {} read as certificates",
            offered.len()
        )));
    }
    if offered.is_empty() {
        return Err(TrustBundleError::Empty);
    }
    for cert in &offered {
        if !cert.is_ca {
            return Err(TrustBundleError::NotCa {
                subject: cert.subject_text.clone(),
            });
        }
    }
    // Offered certificates proven to chain to a trusted one, grown until nothing changes.
    let mut good: Vec<bool> = offered
        .iter()
        .map(|c| trusted.iter().any(|t| t.der == c.der))
        .collect();
    for _ in 0..MAX_DEPTH {
        let mut grew = false;
        for i in 0..offered.len() {
            if good[i] {
                continue;
            }
            let cert = &offered[i];
            let by_trusted = trusted.iter().any(|t| signed_by(cert, t));
            let by_good = offered
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && good[j] && signed_by(cert, o));
            if by_trusted || by_good {
                good[i] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    match offered.iter().zip(&good).find(|(_, ok)| !**ok) {
        None => Ok(()),
        Some((cert, _)) => Err(TrustBundleError::NewRoot {
            subject: cert.subject_text.clone(),
            fingerprint: hex::encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                &cert.der,
            )),
        }),
    }
}

/// Why [`check_against_file`] refused. Each reads as one sentence: the cause is part of the
/// text, not a separate source.
#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    /// The client's own trust bundle file could not be read.
    #[error("reading trust bundle {}: {error}", path.display())]
    Read {
        /// The trust bundle file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The offered bundle does not pass [`check_trust_bundle`].
    #[error("refused the CA's new trust bundle against {}: {error}", path.display())]
    Refused {
        /// The trust bundle file.
        path: PathBuf,
        /// Why.
        error: TrustBundleError,
    },
}

/// [`check_trust_bundle`] against the trust bundle file `trusted` (the one the client was
/// started with), naming that file in the error.
pub fn check_against_file(trusted: &Path, offered_pem: &[u8]) -> Result<(), TrustFileError> {
    let trusted_pem = std::fs::read(trusted).map_err(|error| TrustFileError::Read {
        path: trusted.to_owned(),
        error,
    })?;
    check_trust_bundle(&trusted_pem, offered_pem).map_err(|error| TrustFileError::Refused {
        path: trusted.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str, parent: Option<&Ca>) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = match parent {
            Some(parent) => p.signed_by(&key, &parent.issuer).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(name: &str, parent: &Ca) -> String {
        let p = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, &parent.issuer).unwrap().pem()
    }

    #[test]
    fn the_same_bundle_and_a_new_issuing_ca_of_a_trusted_root_pass() {
        let root = ca("root", None);
        let issuing = ca("issuing-1", Some(&root));
        let trusted = format!("{}{}", root.pem, issuing.pem);
        assert_eq!(
            check_trust_bundle(trusted.as_bytes(), trusted.as_bytes()),
            Ok(())
        );
        // Issuer rollover: a second issuing CA of the same root; the first may also be gone.
        let issuing2 = ca("issuing-2", Some(&root));
        let rolled = format!("{}{}{}", root.pem, issuing.pem, issuing2.pem);
        assert_eq!(
            check_trust_bundle(trusted.as_bytes(), rolled.as_bytes()),
            Ok(())
        );
        let later = format!("{}{}", root.pem, issuing2.pem);
        assert_eq!(
            check_trust_bundle(trusted.as_bytes(), later.as_bytes()),
            Ok(())
        );
        // A chain through an offered CA, in any order.
        let sub = ca("sub", Some(&issuing2));
        let deep = format!("{}{}{}", sub.pem, issuing2.pem, root.pem);
        assert_eq!(
            check_trust_bundle(root.pem.as_bytes(), deep.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn a_new_root_is_refused_with_the_way_to_roll_over() {
        let root = ca("root", None);
        let issuing = ca("issuing-1", Some(&root));
        let trusted = format!("{}{}", root.pem, issuing.pem);
        let rogue = ca("root", None); // Same name, another key.
        let rogue_issuing = ca("issuing-1", Some(&rogue));
        for offered in [
            format!("{}{}{}", root.pem, issuing.pem, rogue.pem),
            format!("{}{}", rogue.pem, issuing.pem),
            format!("{}{}", root.pem, rogue_issuing.pem),
        ] {
            let err = check_trust_bundle(trusted.as_bytes(), offered.as_bytes()).unwrap_err();
            assert!(matches!(err, TrustBundleError::NewRoot { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("root rollover is an explicit operator action"),
                "{text}"
            );
            assert!(text.contains("--trust-bundle"), "{text}");
        }
    }

    #[test]
    fn leaves_empty_and_junk_bundles_are_refused() {
        let root = ca("root", None);
        let gateway = leaf("localhost", &root);
        let err = check_trust_bundle(root.pem.as_bytes(), gateway.as_bytes()).unwrap_err();
        assert!(matches!(err, TrustBundleError::NotCa { .. }), "{err}");
        assert_eq!(
            check_trust_bundle(root.pem.as_bytes(), b""),
            Err(TrustBundleError::Empty)
        );
        assert_eq!(
            check_trust_bundle(b"", root.pem.as_bytes()),
            Err(TrustBundleError::NoAnchors)
        );
        // Labels rustls's PEM reader skips but OpenSSL trusts (or loads) from a CA file.
        for label in ["TRUSTED CERTIFICATE", "X509 CERTIFICATE", "X509 CRL"] {
            let smuggled = ca("rogue", None)
                .pem
                .replace("CERTIFICATE-----", &format!("{label}-----"));
            let offered = format!("{}{smuggled}", root.pem);
            let err = check_trust_bundle(root.pem.as_bytes(), offered.as_bytes()).unwrap_err();
            assert_eq!(err, TrustBundleError::OtherPem(label.to_owned()), "{err}");
        }
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = check_trust_bundle(root.pem.as_bytes(), junk.as_bytes()).unwrap_err();
        assert!(matches!(err, TrustBundleError::Unparseable(_)), "{err}");
    }
}
