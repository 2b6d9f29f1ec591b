//! Policy and signing: turns a checked CSR, a registry entry and a profile into a certificate.
//! No I/O here: no network, no SQL, no files; time comes from the injected clock.

pub mod ca;
pub mod crl;
pub mod csr;
pub mod hostnames;
pub mod idevid;
pub mod name;
pub mod profile;
pub mod token;

// Moved to hallmark-core (clients need them too); re-exported at their old paths.
pub use hallmark_core::server_identity;
pub use hallmark_core::validity::{BACKDATE_SECONDS, backdate, made_at};

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType,
    SerialNumber,
};

use crate::clock::{SharedClock, to_offset};
use crate::identity::DeviceId;
use crate::keys::{CaKey, SignError, run_signing};
use csr::CheckedCsr;
use profile::{Eku, Profile};

/// Why the authority refused to sign.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The requested lifetime exceeds the profile's maximum.
    #[error("requested lifetime {requested}s exceeds profile {profile}'s maximum of {max}s")]
    LifetimeTooLong {
        /// The profile.
        profile: String,
        /// Requested seconds.
        requested: u64,
        /// Maximum seconds.
        max: u64,
    },
    /// The issuing CA has expired or is not yet valid.
    #[error(
        "issuing CA {issuer} is not valid now (valid {not_before}..{not_after}); roll over the issuing CA"
    )]
    IssuerNotValid {
        /// Issuer id.
        issuer: String,
        /// Its notBefore, Unix seconds.
        not_before: i64,
        /// Its notAfter, Unix seconds.
        not_after: i64,
    },
    /// rcgen failed to build or sign the certificate.
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

impl From<SignError> for AuthorityError {
    fn from(e: SignError) -> Self {
        match e {
            SignError::Rcgen(e) => AuthorityError::Sign(e),
            // rcgen's error for a key it does not hold has no room for a reason: say it here.
            other => {
                tracing::error!(error = %other, "the CA key did not sign");
                AuthorityError::Sign(rcgen::Error::RemoteKeyError)
            }
        }
    }
}

/// The active issuing CA: its certificate and key.
pub struct IssuingCa {
    /// Stable id, used in store rows and CRL paths.
    pub id: String,
    /// Its certificate, DER.
    pub cert_der: Vec<u8>,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds; caps every leaf.
    pub not_after: i64,
    issuer: Issuer<'static, CaKey>,
    /// The same issuer with a key that signs nothing: rcgen writes the CRL template with it
    /// (see [`crl`]).
    template_issuer: Issuer<'static, crl::TemplateKey>,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl IssuingCa {
    /// Pairs a CA certificate with its key.
    pub fn new(id: String, cert_der: Vec<u8>, key: impl Into<CaKey>) -> Result<Self, rcgen::Error> {
        let (not_before, not_after) = ca::validity(&cert_der)?;
        let key: CaKey = key.into();
        let template_issuer =
            Issuer::from_ca_cert_der(&cert_der.as_slice().into(), crl::TemplateKey(key.clone()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)?;
        Ok(Self {
            id,
            cert_der,
            not_before,
            not_after,
            issuer,
            template_issuer,
        })
    }

    /// The signing key.
    pub fn key(&self) -> &CaKey {
        self.issuer.key()
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        ca::der_to_pem(&self.cert_der)
    }
}

/// What a leaf is issued for.
#[derive(Debug)]
pub struct LeafRequest<'a> {
    /// Subject CN.
    pub device_id: &'a DeviceId,
    /// Subject OU.
    pub zone: &'a str,
    /// The profile, already authorised for the caller.
    pub profile: &'a Profile,
    /// The checked CSR.
    pub csr: &'a CheckedCsr,
    /// Requested lifetime; `None` for the profile's default.
    pub lifetime: Option<Duration>,
    /// Whether the device id may go into a DNS-name SAN (only where the profile has
    /// `dns_san`): see [`hostnames::HostNamePolicy::dns_name_allowed`].
    pub dns_san_allowed: bool,
}

/// A freshly signed certificate, not yet recorded.
#[derive(Debug, Clone)]
pub struct IssuedLeaf {
    /// Serial, lower-case hex.
    pub serial: String,
    /// DER.
    pub der: Vec<u8>,
    /// Subject as text.
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Whether the issuer's own expiry shortened the lifetime.
    pub capped_by_issuer: bool,
    /// The issuing CA that signed it.
    pub issuer: Arc<IssuingCa>,
}

/// Static naming policy.
#[derive(Debug, Clone)]
pub struct NamingPolicy {
    /// `O=` of subjects.
    pub organisation: String,
    /// URI SAN template with `{device}`.
    pub device_uri_template: String,
    /// Base URL of the HTTP distribution points; certificates carry
    /// `<base>/crl/<issuer>.crl` as CDP when set.
    pub crl_base_url: Option<String>,
}

/// The signing authority. Clones share the active issuing CA, which an issuer rollover
/// replaces for all of them at once.
#[derive(Debug, Clone)]
pub struct Authority {
    issuing: Arc<RwLock<Arc<IssuingCa>>>,
    naming: NamingPolicy,
    clock: SharedClock,
}

/// 16 random bytes, positive and without a leading zero, so the DER integer is always 16 bytes
/// (126 random bits; RFC 5280 and CA/B ask for at least 64).
pub fn random_serial() -> Result<[u8; 16], rcgen::Error> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| rcgen::Error::RingUnspecified)?;
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(b)
}

impl Authority {
    /// An authority signing with `issuing`.
    pub fn new(issuing: Arc<IssuingCa>, naming: NamingPolicy, clock: SharedClock) -> Self {
        Self {
            issuing: Arc::new(RwLock::new(issuing)),
            naming,
            clock,
        }
    }

    /// The active issuing CA.
    pub fn issuing(&self) -> Arc<IssuingCa> {
        self.issuing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `issuing` the CA that signs from now on (issuer rollover).
    pub fn set_issuing(&self, issuing: Arc<IssuingCa>) {
        *self.issuing.write().unwrap_or_else(|e| e.into_inner()) = issuing;
    }

    /// The clock in use.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Signs a leaf certificate for `req`, on the calling thread however slow the key is;
    /// async code calls [`Authority::sign_leaf_async`].
    pub fn sign_leaf(&self, req: &LeafRequest<'_>) -> Result<IssuedLeaf, AuthorityError> {
        let (params, leaf) = self.leaf_params(req)?;
        Self::finish(params, &req.csr.public_key, leaf)
    }

    /// Signs a leaf certificate for `req` from async code: inline with a fast key, on the
    /// blocking pool with a slow one (see [`crate::keys::run_signing`]).
    pub async fn sign_leaf_async(
        &self,
        req: &LeafRequest<'_>,
    ) -> Result<IssuedLeaf, AuthorityError> {
        let (params, leaf) = self.leaf_params(req)?;
        Self::finish_async(params, req.csr, leaf).await
    }

    /// Signs the CA API server's own TLS certificate for `names` (DNS names or IP addresses),
    /// on the calling thread; async code calls [`Authority::sign_server_async`].
    pub fn sign_server(
        &self,
        names: &[String],
        csr: &CheckedCsr,
        profile: &Profile,
    ) -> Result<IssuedLeaf, AuthorityError> {
        let (params, leaf) = self.server_params(names, csr, profile)?;
        Self::finish(params, &csr.public_key, leaf)
    }

    /// [`Authority::sign_server`] from async code: a slow key signs on the blocking pool.
    pub async fn sign_server_async(
        &self,
        names: &[String],
        csr: &CheckedCsr,
        profile: &Profile,
    ) -> Result<IssuedLeaf, AuthorityError> {
        let (params, leaf) = self.server_params(names, csr, profile)?;
        Self::finish_async(params, csr, leaf).await
    }

    /// The policy of the CA's server certificate: a leaf of `profile` for `hallmark-ca` with
    /// `names` as SANs and the CA-server marker.
    fn server_params(
        &self,
        names: &[String],
        csr: &CheckedCsr,
        profile: &Profile,
    ) -> Result<(CertificateParams, IssuedLeaf), AuthorityError> {
        let id = DeviceId::parse(server_identity::SERVER_DEVICE)
            .map_err(|e| rcgen::Error::X509(e.to_string()))?;
        let req = LeafRequest {
            device_id: &id,
            zone: "ca",
            profile,
            csr,
            lifetime: None,
            dns_san_allowed: false,
        };
        let (mut params, leaf) = self.leaf_params(&req)?;
        // serverAuth plus the CA-server marker, which only this certificate ever carries.
        params.extended_key_usages.clear();
        params
            .custom_extensions
            .push(server_identity::ca_server_eku_extension());
        for n in names {
            let san = match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into()?),
            };
            params.subject_alt_names.push(san);
        }
        Ok((params, leaf))
    }

    fn finish(
        params: CertificateParams,
        public_key: &rcgen::SubjectPublicKeyInfo,
        mut leaf: IssuedLeaf,
    ) -> Result<IssuedLeaf, AuthorityError> {
        let cert = params.signed_by(public_key, &leaf.issuer.issuer)?;
        leaf.der = cert.der().to_vec();
        Ok(leaf)
    }

    /// [`Authority::finish`] where the issuer's key wants it (see [`run_signing`]).
    async fn finish_async(
        params: CertificateParams,
        csr: &CheckedCsr,
        leaf: IssuedLeaf,
    ) -> Result<IssuedLeaf, AuthorityError> {
        if !leaf.issuer.key().is_slow() {
            // The hot path: no copy of the key, no thread hop.
            return Self::finish(params, &csr.public_key, leaf);
        }
        let key = leaf.issuer.key().clone();
        let public_key = csr.public_key.clone();
        run_signing(&key, move || Self::finish(params, &public_key, leaf)).await?
    }

    /// Applies the policy: lifetime within the profile and the issuer, backdated notBefore,
    /// random serial, subject and SANs from the registry and profile only.
    fn leaf_params(
        &self,
        req: &LeafRequest<'_>,
    ) -> Result<(CertificateParams, IssuedLeaf), AuthorityError> {
        let profile = req.profile;
        let lifetime = req.lifetime.unwrap_or(profile.default_lifetime);
        if lifetime > profile.max_lifetime {
            return Err(AuthorityError::LifetimeTooLong {
                profile: profile.name.clone(),
                requested: lifetime.as_secs(),
                max: profile.max_lifetime.as_secs(),
            });
        }
        let now = self.clock.now();
        let ca = self.issuing();
        if now < ca.not_before || now >= ca.not_after {
            return Err(AuthorityError::IssuerNotValid {
                issuer: ca.id.clone(),
                not_before: ca.not_before,
                not_after: ca.not_after,
            });
        }
        let wanted_end = now.saturating_add(lifetime.as_secs() as i64);
        let not_after = wanted_end.min(ca.not_after);
        // Backdated for slow device clocks, but by at most a tenth of a short lifetime.
        let not_before = (now - backdate(lifetime)).max(ca.not_before);
        let serial = random_serial()?;

        let mut params = CertificateParams::default();
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(DnType::CommonName, req.device_id.as_str());
        dn.push(DnType::OrganizationName, self.naming.organisation.as_str());
        dn.push(DnType::OrganizationalUnitName, req.zone);
        params.distinguished_name = dn;
        if profile.device_uri_san {
            let uri = self
                .naming
                .device_uri_template
                .replace("{device}", req.device_id.as_str());
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
        if profile.dns_san && req.dns_san_allowed {
            params
                .subject_alt_names
                .push(SanType::DnsName(req.device_id.as_str().try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = profile
            .ekus
            .iter()
            .map(|e| match e {
                Eku::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
                Eku::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            })
            .collect();
        params.use_authority_key_identifier_extension = true;
        if let Some(base) = &self.naming.crl_base_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![crl::distribution_point(base, &ca.id)],
            }];
        }
        let leaf = IssuedLeaf {
            serial: hex::encode(serial),
            der: Vec::new(),
            // RFC 4514: last RDN first (device ids and zones never need escaping).
            subject: format!(
                "OU={},O={},CN={}",
                req.zone,
                name::escape(&self.naming.organisation),
                req.device_id
            ),
            not_before,
            not_after,
            capped_by_issuer: not_after < wanted_end,
            issuer: ca,
        };
        Ok((params, leaf))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::crl::{CrlRequest, build_crl_async};
    use super::profile::builtin_profiles;
    use super::*;
    use crate::clock::{Clock, SystemClock};
    use crate::keys::FileKey;
    use crate::keys::testing::TestSigner;

    /// An authority whose (self-signed) CA signs with `signer`.
    fn authority_signing_with(signer: impl FnOnce(FileKey) -> Arc<TestSigner>) -> Authority {
        let now = SystemClock.now();
        let (der, key) = ca::create_root("T", now, Duration::from_secs(30 * 86_400)).unwrap();
        let key = CaKey::from_shared(signer(key));
        let ca = IssuingCa::new("issuing-test".into(), der, key).unwrap();
        let naming = NamingPolicy {
            organisation: "T".into(),
            device_uri_template: "urn:dev:{device}".into(),
            crl_base_url: None,
        };
        Authority::new(Arc::new(ca), naming, Arc::new(SystemClock))
    }

    /// Signs a sensor certificate for `dev-1` through the async path.
    async fn sign_sensor(authority: &Authority) -> Result<IssuedLeaf, AuthorityError> {
        let profiles = builtin_profiles();
        let profile = profiles.iter().find(|p| p.name == "sensor").unwrap();
        let (_, csr) = crate::bundle::new_key_and_csr("dev-1").unwrap();
        let csr = csr::check_csr(&csr, profile).unwrap();
        let id = DeviceId::parse("dev-1").unwrap();
        authority
            .sign_leaf_async(&LeafRequest {
                device_id: &id,
                zone: "z",
                profile,
                csr: &csr,
                lifetime: None,
                dns_san_allowed: false,
            })
            .await
    }

    fn verifies_with_issuer(der: &[u8], ca: &IssuingCa) -> bool {
        let (_, issuer) = X509Certificate::from_der(&ca.cert_der).unwrap();
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        cert.verify_signature(Some(issuer.public_key())).is_ok()
    }

    // The slow signer waits for a gate that only another task on this runtime's one thread
    // opens: signed inline, it would hold the thread, the gate would never open and the
    // signature would fail (after 5 s) instead of succeeding.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_signer_leaves_the_runtime_thread_free() {
        let (open, gate) = mpsc::channel();
        let mut signer = None;
        let authority = authority_signing_with(|key| {
            let s = Arc::new(TestSigner::new(key, true, Some(gate)));
            signer = Some(s.clone());
            s
        });
        let signer = signer.unwrap();
        let opener = tokio::spawn(async move { open.send(()).unwrap() });
        let leaf = sign_sensor(&authority).await.unwrap();
        opener.await.unwrap();
        assert!(verifies_with_issuer(&leaf.der, &authority.issuing()));
        let threads = signer.signed_on.lock().unwrap().clone();
        assert_eq!(threads.len(), 1);
        assert_ne!(threads[0], std::thread::current().id());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_signer_signs_crls_off_the_runtime_thread() {
        let (open, gate) = mpsc::channel();
        let mut signer = None;
        let authority = authority_signing_with(|key| {
            let s = Arc::new(TestSigner::new(key, true, Some(gate)));
            signer = Some(s.clone());
            s
        });
        let ca = authority.issuing();
        // One signature: the CRL itself. rcgen's template is never signed (a signed one would
        // be a valid CRL with the real number that lists nothing).
        let opener = tokio::spawn(async move { open.send(()).unwrap() });
        let now = SystemClock.now();
        let req = CrlRequest {
            number: 1,
            now,
            validity: Duration::from_secs(3600),
            distribution_point: None,
            entries: &[crl::RevokedEntry {
                serial: "4e01".into(),
                revoked_at: now,
                reason: Some(1),
            }],
        };
        let der = build_crl_async(&ca, &req).await.unwrap();
        opener.await.unwrap();
        let checked =
            crate::revocation::check::check_crl(&der, std::slice::from_ref(&ca.cert_der), req.now)
                .unwrap();
        assert_eq!(
            (checked.number, checked.serials),
            (1, vec!["4e01".to_owned()])
        );
        let threads = signer.unwrap().signed_on.lock().unwrap().clone();
        assert_eq!(threads.len(), 1, "the key signed the CRL and nothing else");
        assert_ne!(threads[0], std::thread::current().id());
    }

    // A fast key (every file key) signs on the calling thread: no blocking-pool hop on the
    // issuance hot path.
    #[tokio::test(flavor = "current_thread")]
    async fn a_fast_signer_signs_inline() {
        let mut signer = None;
        let authority = authority_signing_with(|key| {
            let s = Arc::new(TestSigner::new(key, false, None));
            signer = Some(s.clone());
            s
        });
        let signer = signer.unwrap();
        let leaf = sign_sensor(&authority).await.unwrap();
        assert!(verifies_with_issuer(&leaf.der, &authority.issuing()));
        assert_eq!(
            *signer.signed_on.lock().unwrap(),
            [std::thread::current().id()]
        );
    }
}
