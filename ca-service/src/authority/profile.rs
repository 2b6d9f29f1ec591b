//! Certificate profiles: named templates that fix key usages, EKUs, lifetimes, accepted key types
//! and who may request them. Built-in defaults, overridable from the config file.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a certificate holder may do on the API; derived from the profile recorded for its serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Full control.
    Admin,
    /// Factory station: issues within its scope of profiles and zones.
    Provisioner,
    /// A device: may only renew itself.
    Device,
    /// Broker host agent: reads CRLs and trust bundles.
    BrokerAgent,
    /// The CA's own API server certificate; has no rights on the API.
    Server,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Provisioner => "provisioner",
            Role::Device => "device",
            Role::BrokerAgent => "broker-agent",
            Role::Server => "server",
        })
    }
}

/// Extended key usages a profile can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eku {
    /// TLS client authentication.
    ClientAuth,
    /// TLS server authentication.
    ServerAuth,
}

/// Public key types a CSR may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// ECDSA on NIST P-256.
    #[serde(rename = "P-256")]
    P256,
    /// ECDSA on NIST P-384.
    #[serde(rename = "P-384")]
    P384,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::P256 => "P-256",
            KeyType::P384 => "P-384",
        })
    }
}

/// A certificate profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profile name (`sensor`, `gateway`, ...).
    pub name: String,
    /// Role a holder of this profile's certificates gets on the API.
    pub role: Role,
    /// Extended key usages written into certificates.
    pub ekus: Vec<Eku>,
    /// Lifetime when the request names none.
    pub default_lifetime: Duration,
    /// Longest lifetime a request may ask for.
    pub max_lifetime: Duration,
    /// Key types accepted in CSRs.
    pub key_types: Vec<KeyType>,
    /// Roles allowed to request this profile through `Issue`.
    pub requesters: Vec<Role>,
    /// Whether certificates carry the device URI SAN.
    pub device_uri_san: bool,
    /// Whether certificates carry the device id as a DNS-name SAN: the host name TLS clients
    /// check on a server (an MQTT broker, a gateway's local endpoint). Device ids are valid
    /// host names (`broker-1.plant.example`).
    pub dns_san: bool,
    /// Whether a CSR may reuse the key of the credential it replaces (IDevID at enrollment,
    /// current certificate at renewal). Off by default: a new key every time.
    pub allow_key_reuse: bool,
    /// Least time between two certificates of one device by renewal, so that a stolen key
    /// cannot mint certificates in a loop.
    pub min_renewal_interval: Duration,
    /// Whether holders may renew themselves. Off for time-limited access (`remote-access`):
    /// renewing would make it permanent.
    pub renewable: bool,
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

impl Profile {
    fn builtin(
        name: &str,
        role: Role,
        ekus: &[Eku],
        default_lifetime: u64,
        max_lifetime: u64,
        requesters: &[Role],
    ) -> Self {
        Self {
            name: name.to_owned(),
            role,
            ekus: ekus.to_vec(),
            default_lifetime: Duration::from_secs(default_lifetime),
            max_lifetime: Duration::from_secs(max_lifetime),
            key_types: vec![KeyType::P256],
            requesters: requesters.to_vec(),
            device_uri_san: role == Role::Device,
            dns_san: role == Role::Device && ekus.contains(&Eku::ServerAuth),
            allow_key_reuse: false,
            // A tenth of the default lifetime: far below the 2/3-of-lifetime renewal point.
            min_renewal_interval: Duration::from_secs(default_lifetime / 10),
            renewable: true,
        }
    }

    /// Whether a caller with `role` may request this profile.
    pub fn may_be_requested_by(&self, role: Role) -> bool {
        self.requesters.contains(&role)
    }
}

/// Name of the internal profile of the CA's own API server certificate.
pub const SERVER_PROFILE: &str = "ca-server";

/// The built-in profiles of the DESIGN.
pub fn builtin_profiles() -> Vec<Profile> {
    use Eku::*;
    use Role::*;
    let issuers = [Admin, Provisioner];
    vec![
        Profile::builtin(
            "sensor",
            Device,
            &[ClientAuth],
            30 * DAY,
            90 * DAY,
            &issuers,
        ),
        Profile::builtin(
            "gateway",
            Device,
            &[ClientAuth, ServerAuth],
            30 * DAY,
            90 * DAY,
            &issuers,
        ),
        Profile::builtin(
            "broker",
            Device,
            &[ServerAuth],
            90 * DAY,
            397 * DAY,
            &issuers,
        ),
        Profile::builtin(
            "admin",
            Admin,
            &[ClientAuth],
            365 * DAY,
            397 * DAY,
            &[Admin],
        ),
        Profile::builtin(
            "provisioner",
            Provisioner,
            &[ClientAuth],
            90 * DAY,
            397 * DAY,
            &[Admin],
        ),
        Profile::builtin(
            "broker-agent",
            BrokerAgent,
            &[ClientAuth],
            90 * DAY,
            397 * DAY,
            &[Admin],
        ),
        Profile {
            renewable: false,
            ..Profile::builtin(
                "remote-access",
                Device,
                &[ClientAuth],
                4 * HOUR,
                8 * HOUR,
                &[Admin],
            )
        },
        Profile::builtin(
            SERVER_PROFILE,
            Server,
            &[ServerAuth],
            90 * DAY,
            397 * DAY,
            &[],
        ),
    ]
}

/// A profile as written in the config file: every field optional when it overrides a built-in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ProfileOverride {
    /// See [`Profile::role`]; required for a new profile.
    pub role: Option<Role>,
    /// See [`Profile::ekus`]; required for a new profile.
    pub ekus: Option<Vec<Eku>>,
    /// See [`Profile::default_lifetime`], e.g. `"30d"`.
    #[serde(default, with = "humantime_serde")]
    pub default_lifetime: Option<Duration>,
    /// See [`Profile::max_lifetime`], e.g. `"90d"`.
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// See [`Profile::key_types`].
    pub key_types: Option<Vec<KeyType>>,
    /// See [`Profile::requesters`].
    pub requesters: Option<Vec<Role>>,
    /// See [`Profile::device_uri_san`].
    pub device_uri_san: Option<bool>,
    /// See [`Profile::dns_san`].
    pub dns_san: Option<bool>,
    /// See [`Profile::allow_key_reuse`].
    pub allow_key_reuse: Option<bool>,
    /// See [`Profile::min_renewal_interval`], e.g. `"1h"`.
    #[serde(default, with = "humantime_serde")]
    pub min_renewal_interval: Option<Duration>,
    /// See [`Profile::renewable`].
    pub renewable: Option<bool>,
}

/// Why a profile configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfileConfigError {
    /// A new profile lacks a field that has no default.
    #[error("profile `{profile}` is not built in, so it needs `{field}` in the config")]
    MissingField {
        /// The profile.
        profile: String,
        /// The missing field.
        field: &'static str,
    },
    /// The lifetimes contradict each other.
    #[error(
        "profile `{profile}`: default_lifetime ({default:?}) is longer than max_lifetime ({max:?})"
    )]
    Lifetimes {
        /// The profile.
        profile: String,
        /// Default lifetime.
        default: Duration,
        /// Maximum lifetime.
        max: Duration,
    },
    /// A profile name breaks the name grammar.
    #[error("profile name: {0}")]
    Name(#[from] crate::identity::NameError),
    /// The internal server profile cannot be changed.
    #[error("profile `{0}` is internal and cannot be configured")]
    Internal(String),
    /// A configured profile asked for the role of the CA's own server certificate.
    #[error(
        "profile `{0}`: role `server` belongs to the CA's own server certificate only; use device"
    )]
    ServerRole(String),
}

/// The profiles in force: built-ins merged with the config's overrides.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Profile>,
}

impl ProfileSet {
    /// Built-in profiles with `overrides` applied.
    pub fn new(overrides: &BTreeMap<String, ProfileOverride>) -> Result<Self, ProfileConfigError> {
        let mut profiles: BTreeMap<String, Profile> = builtin_profiles()
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        for (name, o) in overrides {
            crate::identity::validate_name("profile name", name)?;
            if name == SERVER_PROFILE {
                return Err(ProfileConfigError::Internal(name.clone()));
            }
            let missing = |field| ProfileConfigError::MissingField {
                profile: name.clone(),
                field,
            };
            let mut p = match profiles.remove(name) {
                Some(p) => p,
                None => {
                    let role = o.role.ok_or_else(|| missing("role"))?;
                    let ekus = o.ekus.clone().ok_or_else(|| missing("ekus"))?;
                    Profile {
                        name: name.clone(),
                        role,
                        dns_san: role == Role::Device && ekus.contains(&Eku::ServerAuth),
                        ekus,
                        default_lifetime: o
                            .default_lifetime
                            .ok_or_else(|| missing("default_lifetime"))?,
                        max_lifetime: o.max_lifetime.ok_or_else(|| missing("max_lifetime"))?,
                        key_types: vec![KeyType::P256],
                        requesters: vec![Role::Admin],
                        device_uri_san: role == Role::Device,
                        allow_key_reuse: false,
                        min_renewal_interval: o
                            .default_lifetime
                            .map(|d| d / 10)
                            .unwrap_or_default(),
                        renewable: true,
                    }
                }
            };
            if let Some(v) = o.role {
                p.role = v;
            }
            if let Some(v) = &o.ekus {
                p.ekus = v.clone();
            }
            if let Some(v) = o.default_lifetime {
                p.default_lifetime = v;
            }
            if let Some(v) = o.max_lifetime {
                p.max_lifetime = v;
            }
            if let Some(v) = &o.key_types {
                p.key_types = v.clone();
            }
            if let Some(v) = &o.requesters {
                p.requesters = v.clone();
            }
            if let Some(v) = o.device_uri_san {
                p.device_uri_san = v;
            }
            if let Some(v) = o.dns_san {
                p.dns_san = v;
            }
            if let Some(v) = o.allow_key_reuse {
                p.allow_key_reuse = v;
            }
            if let Some(v) = o.renewable {
                p.renewable = v;
            }
            if let Some(v) = o.min_renewal_interval {
                p.min_renewal_interval = v;
            } else if let Some(d) = o.default_lifetime {
                p.min_renewal_interval = p.min_renewal_interval.min(d / 10);
            }
            // Only the internal `ca-server` profile has the server role: its certificate is
            // the CA's own identity, which no configured profile may imitate.
            if p.role == Role::Server {
                return Err(ProfileConfigError::ServerRole(name.clone()));
            }
            if p.default_lifetime > p.max_lifetime {
                return Err(ProfileConfigError::Lifetimes {
                    profile: name.clone(),
                    default: p.default_lifetime,
                    max: p.max_lifetime,
                });
            }
            profiles.insert(name.clone(), p);
        }
        Ok(Self { profiles })
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Names of the profiles `keep` accepts, in name order.
    pub fn names_where(&self, keep: impl Fn(&Profile) -> bool) -> Vec<String> {
        self.profiles
            .values()
            .filter(|p| keep(p))
            .map(|p| p.name.clone())
            .collect()
    }

    /// Names of the profiles that can be requested over the API, for error messages.
    pub fn requestable_names(&self) -> Vec<&str> {
        self.profiles
            .values()
            .filter(|p| !p.requesters.is_empty())
            .map(|p| p.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_new_profiles_need_their_fields() {
        let cfg: BTreeMap<String, ProfileOverride> = toml::from_str(
            r#"
            [sensor]
            default_lifetime = "7d"
            [valve]
            role = "device"
            ekus = ["client-auth"]
            default_lifetime = "1d"
            max_lifetime = "2d"
            "#,
        )
        .unwrap();
        let set = ProfileSet::new(&cfg).unwrap();
        assert_eq!(
            set.get("sensor").unwrap().default_lifetime,
            Duration::from_secs(7 * DAY)
        );
        assert_eq!(set.get("valve").unwrap().ekus, vec![Eku::ClientAuth]);

        let bad: BTreeMap<String, ProfileOverride> =
            toml::from_str("[valve]\nrole = \"device\"\n").unwrap();
        let err = ProfileSet::new(&bad).unwrap_err().to_string();
        assert!(err.contains("needs `ekus`"), "{err}");

        for text in [
            "[gateway]\nrole = \"server\"\n",
            "[fake-ca]\nrole = \"server\"\nekus = [\"server-auth\"]\ndefault_lifetime = \"1d\"\nmax_lifetime = \"2d\"\n",
        ] {
            let bad: BTreeMap<String, ProfileOverride> = toml::from_str(text).unwrap();
            let err = ProfileSet::new(&bad).unwrap_err().to_string();
            assert!(err.contains("role `server`"), "{err}");
        }
    }
}
