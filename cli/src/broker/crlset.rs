//! The CRL set a broker may be given: per issuer, the newest CRL that passed [`check_crl`].
//! Mosquitto turns revocation checking off when its CRL file is empty or broken at a reload,
//! and refuses every device of an issuer it has no current CRL for; so a set is written only
//! when it is complete: a valid, current CRL for every issuing CA of the CA file written with it.
//!
//! A root's CRL (it lists revoked issuing CAs) is carried along whenever one verifies with a
//! root of the CA file, so that verifiers checking the whole chain (`openssl verify
//! -crl_check_all`) find it in the file, but it is never required: Mosquitto checks only the
//! device's certificate, a revoked issuing CA reaches the broker by leaving the CA file, an
//! imported corporate root has no CRL from Hallmark, and a late CRL of a root kept offline must
//! not hold back device revocations. See docs/decisions.md.

use std::collections::BTreeMap;
use std::path::Path;

use hallmark_core::crl::check::{CheckedCrl, check_crl};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Per issuer (subject, DER): the CRL's facts and its DER.
pub type CrlMap = BTreeMap<Vec<u8>, (CheckedCrl, Vec<u8>)>;

/// The certificates (DER) of a PEM bundle.
pub fn certs_of(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .flatten()
        .map(|c| c.as_ref().to_vec())
        .collect()
}

/// The issuing CAs of a bundle at `now`, as (subject DER, subject text): the certificates that
/// are valid and not self-issued. Roots sign issuing CAs, never devices: their CRLs are not
/// required (see the module docs).
fn issuing_cas(bundle_pem: &str, now: i64) -> Vec<(Vec<u8>, String)> {
    certs_of(bundle_pem)
        .iter()
        .filter_map(|der| {
            let (_, cert) = X509Certificate::from_der(der).ok()?;
            let valid = cert.validity().not_after.timestamp() > now;
            (valid && cert.subject().as_raw() != cert.issuer().as_raw())
                .then(|| (cert.subject().as_raw().to_vec(), cert.subject().to_string()))
        })
        .collect()
}

/// The CRLs of the PEM file `crl_file` that verify with a CA of `bundle_pem`, stale ones
/// included: what the broker has, so that nothing older is ever written over it.
pub fn load(crl_file: &Path, bundle_pem: &str) -> CrlMap {
    let issuers = certs_of(bundle_pem);
    let mut crls = CrlMap::new();
    if let Ok(text) = std::fs::read(crl_file) {
        for der in CertificateRevocationListDer::pem_slice_iter(&text).flatten() {
            // Even a stale CRL counts for its number: the agent never goes back below it.
            if let Ok(c) = check_crl(der.as_ref(), &issuers, i64::MIN) {
                crls.insert(c.issuer.clone(), (c, der.as_ref().to_vec()));
            }
        }
    }
    crls
}

/// The CRLs as one PEM file, the issuing CAs' first (tools that read one CRL of a file, such
/// as `openssl crl -in`, read the first), the roots' last.
pub fn to_pem(crls: &CrlMap) -> String {
    let (roots, issuing): (Vec<_>, Vec<_>) = crls.values().partition(|(c, _)| c.root);
    issuing
        .into_iter()
        .chain(roots)
        .map(|(_, der)| {
            pem::encode_config(
                &pem::Pem::new("X509 CRL", der.clone()),
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            )
        })
        .collect()
}

/// What [`merge`] made of the received CRLs.
pub struct Merged {
    /// The set after the merge.
    pub crls: CrlMap,
    /// Whether it differs from the held set.
    pub changed: bool,
    /// Serials newly listed on a CRL that replaced a held one (not superseded entries).
    pub new_serials: Vec<String>,
    /// One line per CRL taken, to print once the set is written.
    pub taken: Vec<String>,
    /// One line per CRL refused.
    pub refused: Vec<String>,
}

/// Merges `received` (DER) into `held` for the trust bundle `bundle_pem` at `now`: a CRL is
/// taken when it passes [`check_crl`] and its number is higher than the held one's. With
/// `recheck` (the bundle is not the one `held` was checked with) held CRLs that no CA of the
/// bundle signed are dropped.
pub fn merge(
    held: &CrlMap,
    received: &[Vec<u8>],
    bundle_pem: &str,
    recheck: bool,
    now: i64,
) -> Merged {
    let issuers = certs_of(bundle_pem);
    let mut m = Merged {
        crls: held.clone(),
        changed: false,
        new_serials: Vec::new(),
        taken: Vec::new(),
        refused: Vec::new(),
    };
    if recheck {
        m.crls.retain(|_, (c, der)| {
            let ok = check_crl(der, &issuers, i64::MIN).is_ok();
            if !ok {
                m.taken.push(format!(
                    "dropping the CRL of `{}`: no CA of the new trust bundle signed it",
                    c.issuer_name
                ));
            }
            ok
        });
        m.changed = m.crls.len() != held.len();
    }
    for der in received {
        let c = match check_crl(der, &issuers, now) {
            Ok(c) => c,
            Err(e) => {
                m.refused.push(format!("refused a CRL: {e}"));
                continue;
            }
        };
        match m.crls.get(&c.issuer) {
            Some((old, _)) if c.number < old.number => m.refused.push(format!(
                "refused the CRL of `{}`: number {} is lower than the applied {}",
                c.issuer_name, c.number, old.number
            )),
            Some((old, _)) if c.number == old.number => {}
            Some((old, _)) => {
                m.taken.push(format!(
                    "applying CRL of `{}`: number {}, {} entries, built {} ago",
                    c.issuer_name,
                    c.number,
                    c.serials.len(),
                    hallmark_core::clock::human_duration(now - c.built_at())
                ));
                // Entries new on this CRL, but not those replaced by a newer certificate
                // (re-provisioning): their devices are connected with the new one. A root's
                // entries are issuing CAs, which have no sessions.
                if !c.root {
                    m.new_serials.extend(
                        c.serials
                            .iter()
                            .filter(|s| old.serials.binary_search(s).is_err())
                            .filter(|s| c.superseded.binary_search(s).is_err())
                            .cloned(),
                    );
                }
                m.crls.insert(c.issuer.clone(), (c, der.clone()));
                m.changed = true;
            }
            None => {
                // The first CRL of an issuer is the baseline: cutting every session its
                // entries ever had would only make devices reconnect.
                m.taken.push(format!(
                    "applying the first CRL of `{}`: number {}, {} entries (sessions are cut \
                     for entries added from now on)",
                    c.issuer_name,
                    c.number,
                    c.serials.len()
                ));
                m.crls.insert(c.issuer.clone(), (c, der.clone()));
                m.changed = true;
            }
        }
    }
    m
}

/// Why a CRL set may not be written.
#[derive(Debug)]
pub struct Incomplete(String);

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Incomplete {}

/// Checks that `crls` holds a valid, current CRL for every issuing CA of `bundle_pem` at `now`
/// (and that the bundle has one): the condition for writing the set with that bundle. Roots'
/// CRLs are not required.
pub fn complete(crls: &CrlMap, bundle_pem: &str, now: i64) -> Result<(), Incomplete> {
    let issuing = issuing_cas(bundle_pem, now);
    if issuing.is_empty() {
        return Err(Incomplete(
            "the trust bundle holds no valid issuing CA, so no CRL can be checked".into(),
        ));
    }
    let missing: Vec<String> = issuing
        .iter()
        .filter_map(|(subject, name)| match crls.get(subject) {
            None => Some(format!("`{name}` (none accepted)")),
            Some((c, _)) if c.next_update <= now => Some(format!(
                "`{name}` (the newest, number {}, expired at {})",
                c.number,
                hallmark_core::clock::rfc3339(c.next_update)
            )),
            Some(_) => None,
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Incomplete(format!(
        "no valid, current CRL for the issuing CA{} {}",
        if missing.len() > 1 { "s" } else { "" },
        missing.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hallmark_ca::authority::IssuingCa;
    use hallmark_ca::authority::ca::{create_issuing_under, create_root, der_to_pem};
    use hallmark_ca::authority::crl::{CrlRequest, build_crl};
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    struct Pki {
        root_pem: String,
        issuing_pem: String,
        root: IssuingCa,
        issuing: IssuingCa,
        now: i64,
    }

    fn pki() -> Pki {
        let now = 1_800_000_000;
        let (root, root_key) = create_root("T", now, DAY * 10).unwrap();
        let root = IssuingCa::new("root-x".into(), root, root_key).unwrap();
        let (der, key) = create_issuing_under(&root, "T", now, DAY * 5, None).unwrap();
        Pki {
            root_pem: der_to_pem(&root.cert_der),
            issuing_pem: der_to_pem(&der),
            root,
            issuing: IssuingCa::new("issuing-x".into(), der, key).unwrap(),
            now,
        }
    }

    fn crl_by(ca: &IssuingCa, number: u64, at: i64) -> Vec<u8> {
        let req = CrlRequest {
            number,
            now: at,
            validity: Duration::from_secs(3600),
            distribution_point: None,
            entries: &[],
        };
        build_crl(ca, &req).unwrap()
    }

    fn crl(p: &Pki, number: u64, at: i64) -> Vec<u8> {
        crl_by(&p.issuing, number, at)
    }

    #[test]
    fn a_root_crl_is_carried_along_but_never_required() {
        let p = pki();
        let bundle = format!("{}{}", p.root_pem, p.issuing_pem);
        let root_crl = crl_by(&p.root, 2, p.now);
        let m = merge(
            &CrlMap::new(),
            &[crl(&p, 3, p.now), root_crl],
            &bundle,
            false,
            p.now,
        );
        assert!(m.refused.is_empty(), "{:?}", m.refused);
        assert_eq!(m.crls.len(), 2);
        assert_eq!(to_pem(&m.crls).matches("BEGIN X509 CRL").count(), 2);
        assert_eq!(
            m.crls.values().filter(|(c, _)| c.root).count(),
            1,
            "the root's CRL is in the set"
        );
        // The issuing CA's CRL comes first in the file (what `openssl crl -in` reads).
        let pem = to_pem(&m.crls);
        let first = CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert!(
            !check_crl(first.as_ref(), &certs_of(&bundle), p.now)
                .unwrap()
                .root
        );
        complete(&m.crls, &bundle, p.now).unwrap();
        // Without a root CRL (an imported corporate root), and with an expired one (a root
        // kept offline, running late), the set of a fresh issuing CRL is still complete.
        let issuing_only = merge(&CrlMap::new(), &[crl(&p, 3, p.now)], &bundle, false, p.now);
        complete(&issuing_only.crls, &bundle, p.now).unwrap();
        let later = p.now + 7200;
        let m = merge(&m.crls, &[crl(&p, 4, later)], &bundle, false, later);
        assert!(m.changed && m.crls.len() == 2);
        complete(&m.crls, &bundle, later).unwrap();
    }

    /// Attacker side: a CRL naming the root (name and key identifier) but signed by another key
    /// is refused and never reaches the file.
    #[test]
    fn a_root_crl_signed_by_another_key_is_refused() {
        let p = pki();
        let bundle = format!("{}{}", p.root_pem, p.issuing_pem);
        let genuine = merge(
            &CrlMap::new(),
            &[crl(&p, 3, p.now), crl_by(&p.root, 2, p.now)],
            &bundle,
            false,
            p.now,
        );
        // The root's name and key identifier, another key.
        let key = hallmark_ca::keys::CaKey::generate_p256().unwrap();
        let lookalike = IssuingCa::new("root-x".into(), p.root.cert_der.clone(), key).unwrap();
        let forged = crl_by(&lookalike, 99, p.now);
        let m = merge(&genuine.crls, &[forged], &bundle, false, p.now);
        assert!(!m.changed, "{:?}", m.taken);
        assert!(
            m.refused.len() == 1 && m.refused[0].contains("bad signature"),
            "{:?}",
            m.refused
        );
        let root_number = m.crls.values().find(|(c, _)| c.root).map(|(c, _)| c.number);
        assert_eq!(root_number, Some(2), "the genuine root CRL stays");
    }

    #[test]
    fn a_bundle_without_an_issuing_ca_is_never_complete() {
        let p = pki();
        let e = complete(&CrlMap::new(), &p.root_pem, p.now).unwrap_err();
        assert!(e.to_string().contains("holds no valid issuing CA"), "{e}");
    }

    #[test]
    fn an_issuing_ca_without_a_crl_is_named() {
        let p = pki();
        let bundle = format!("{}{}", p.root_pem, p.issuing_pem);
        let m = merge(&CrlMap::new(), &[b"junk".to_vec()], &bundle, false, p.now);
        assert!(!m.changed && m.refused[0].contains("not a parseable CRL"));
        let e = complete(&m.crls, &bundle, p.now).unwrap_err().to_string();
        assert!(
            e.contains("no valid, current CRL") && e.contains("Issuing CA") && e.contains("none"),
            "{e}"
        );
        let m = merge(&CrlMap::new(), &[crl(&p, 3, p.now)], &bundle, false, p.now);
        assert!(m.changed);
        complete(&m.crls, &bundle, p.now).unwrap();
        // Held, but past its nextUpdate: not current.
        let later = p.now + 7200;
        let e = complete(&m.crls, &bundle, later).unwrap_err().to_string();
        assert!(e.contains("number 3, expired at"), "{e}");
    }

    #[test]
    fn an_older_crl_never_replaces_a_newer_one() {
        let p = pki();
        let bundle = format!("{}{}", p.root_pem, p.issuing_pem);
        let held = merge(&CrlMap::new(), &[crl(&p, 5, p.now)], &bundle, false, p.now).crls;
        let m = merge(&held, &[crl(&p, 4, p.now)], &bundle, false, p.now);
        assert!(!m.changed && m.refused[0].contains("lower than the applied 5"));
        let m = merge(&held, &[crl(&p, 6, p.now)], &bundle, false, p.now);
        assert!(m.changed && m.crls.values().next().unwrap().0.number == 6);
    }

    #[test]
    fn a_new_bundle_drops_crls_none_of_its_cas_signed() {
        let p = pki();
        let bundle = format!("{}{}", p.root_pem, p.issuing_pem);
        let held = merge(&CrlMap::new(), &[crl(&p, 5, p.now)], &bundle, false, p.now).crls;
        let other = pki();
        let other_bundle = format!("{}{}", other.root_pem, other.issuing_pem);
        let m = merge(&held, &[], &other_bundle, true, p.now);
        assert!(m.changed && m.crls.is_empty());
        assert!(complete(&m.crls, &other_bundle, p.now).is_err());
    }
}
