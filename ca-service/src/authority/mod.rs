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
use crate::keys::CaKey;
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
    pub fn new(id: String, cert_der: Vec<u8>, key: CaKey) -> Result<Self, rcgen::Error> {
        let (not_before, not_after) = ca::validity(&cert_der)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)?;
        Ok(Self {
            id,
            cert_der,
            not_before,
            not_after,
            issuer,
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

    /// Signs a leaf certificate for `req`.
    pub fn sign_leaf(&self, req: &LeafRequest<'_>) -> Result<IssuedLeaf, AuthorityError> {
        let (params, leaf) = self.leaf_params(req)?;
        Self::finish(params, req.csr, leaf)
    }

    /// Signs the CA API server's own TLS certificate for `names` (DNS names or IP addresses).
    pub fn sign_server(
        &self,
        names: &[String],
        csr: &CheckedCsr,
        profile: &Profile,
    ) -> Result<IssuedLeaf, AuthorityError> {
        let id = DeviceId::parse("hallmark-ca").map_err(|e| rcgen::Error::X509(e.to_string()))?;
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
        Self::finish(params, csr, leaf)
    }

    fn finish(
        params: CertificateParams,
        csr: &CheckedCsr,
        mut leaf: IssuedLeaf,
    ) -> Result<IssuedLeaf, AuthorityError> {
        let cert = params.signed_by(&csr.public_key, &leaf.issuer.issuer)?;
        leaf.der = cert.der().to_vec();
        Ok(leaf)
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
