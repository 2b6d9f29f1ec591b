//! Device ids as host names. Profiles with serverAuth put the device id into a DNS-name SAN, so
//! a device id is a claim on a host name: ids that name the CA itself, the local host or an IP
//! address are refused outright, and a provisioner's certificates carry a DNS name only under
//! a suffix an admin gave the device's zone.

use std::collections::{BTreeMap, BTreeSet};

/// Names that resolve to the local host on common systems (`/etc/hosts` of Debian, macOS).
const LOOPBACK_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "broadcasthost",
];

/// Why a device id cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservedName {
    /// The id is one of the CA's own server names.
    #[error(
        "device id `{0}` is a name of the CA's own server (hallmark-ca or its server_names); \
         choose another id"
    )]
    ServerName(String),
    /// The id names the local host.
    #[error(
        "device id `{0}` names the local host (localhost, *.localhost and their aliases are \
         reserved); choose another id"
    )]
    Loopback(String),
    /// The id reads as an IPv4 address to inet_aton-style parsers.
    #[error(
        "device id `{0}` reads as an IP address (it is made only of numbers and dots); \
         choose an id with a letter in it"
    )]
    IpLiteral(String),
}

/// Why a zone's DNS suffix was refused in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "zones.{zone}.dns_suffixes: `{suffix}` is not a DNS suffix; write a lower-case domain such \
     as `plant4.example` (labels of a-z, 0-9 and -, no leading dot, not localhost, not numeric)"
)]
pub struct BadSuffix {
    /// The zone.
    pub zone: String,
    /// The suffix as given.
    pub suffix: String,
}

/// The host-name rules in force: the CA's server names and the zones' DNS suffixes.
#[derive(Debug, Clone, Default)]
pub struct HostNamePolicy {
    server_names: BTreeSet<String>,
    zone_suffixes: BTreeMap<String, Vec<String>>,
}

/// Lower case without one trailing dot (`Host.` and `host` are one DNS name).
fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether every dot-separated part is a number (decimal, or `0x` hex as inet_aton reads it):
/// such a name is an IPv4 address to many parsers (`127.1`, `0x7f000001`, `127.0.0.1`).
fn reads_as_ip(name: &str) -> bool {
    name.split('.').all(|part| {
        part.chars().all(|c| c.is_ascii_digit())
            || part
                .strip_prefix("0x")
                .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
    })
}

fn is_loopback(name: &str) -> bool {
    LOOPBACK_NAMES.contains(&name) || name.ends_with(".localhost")
}

impl HostNamePolicy {
    /// The rules for a CA known as `server_names` (its registry id, DNS names and IPs) whose
    /// zones have the given DNS suffixes. Suffixes are checked here too.
    pub fn new<'a>(
        server_names: impl IntoIterator<Item = &'a str>,
        zone_suffixes: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, BadSuffix> {
        for (zone, suffixes) in zone_suffixes {
            for s in suffixes {
                check_suffix(s).map_err(|()| BadSuffix {
                    zone: zone.clone(),
                    suffix: s.clone(),
                })?;
            }
        }
        Ok(Self {
            server_names: server_names.into_iter().map(normalise).collect(),
            zone_suffixes: zone_suffixes.clone(),
        })
    }

    /// Refuses device ids that are the CA's names, the local host or an IP address. Applies to
    /// every registration and issuance, whatever the profile: an id without a DNS SAN today
    /// may get one from a profile change tomorrow, and MQTT clients check host names too.
    pub fn check_device_id(&self, id: &str) -> Result<(), ReservedName> {
        let name = normalise(id);
        if is_loopback(&name) {
            return Err(ReservedName::Loopback(id.to_owned()));
        }
        if reads_as_ip(&name) {
            return Err(ReservedName::IpLiteral(id.to_owned()));
        }
        if self.server_names.contains(&name) {
            return Err(ReservedName::ServerName(id.to_owned()));
        }
        Ok(())
    }

    /// Whether a certificate that a provisioner (or an IDevID) requests may carry `id` as a
    /// DNS name in `zone`: only when the id lies strictly under one of the zone's suffixes.
    pub fn dns_name_allowed(&self, zone: &str, id: &str) -> bool {
        let name = normalise(id);
        self.zone_suffixes.get(zone).is_some_and(|suffixes| {
            suffixes.iter().any(|s| {
                name.strip_suffix(s.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            })
        })
    }
}

fn check_suffix(s: &str) -> Result<(), ()> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.len() > 200 || !s.split('.').all(label_ok) || is_loopback(s) || reads_as_ip(s) {
        return Err(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HostNamePolicy {
        let zones = BTreeMap::from([("field".to_owned(), vec!["plant4.example".to_owned()])]);
        HostNamePolicy::new(
            [
                "hallmark-ca",
                "localhost",
                "127.0.0.1",
                "::1",
                "CA.Plant4.example",
            ],
            &zones,
        )
        .unwrap()
    }

    #[test]
    fn reserved_ids_are_refused() {
        let p = policy();
        for (id, want) in [
            ("hallmark-ca", "CA's own server"),
            ("ca.plant4.example", "CA's own server"),
            ("ca.plant4.example.", "CA's own server"),
            ("localhost", "local host"),
            ("localhost.", "local host"),
            ("a.localhost", "local host"),
            ("ip6-loopback", "local host"),
            ("127.0.0.1", "IP address"),
            ("127.1", "IP address"),
            ("2130706433", "IP address"),
            ("0x7f000001", "IP address"),
            ("0x7f.0.0.1", "IP address"),
            ("10.0.0.1.", "IP address"),
            ("1..2", "IP address"),
        ] {
            let err = p.check_device_id(id).expect_err(id).to_string();
            assert!(err.contains(want), "{id}: {err}");
        }
        for id in [
            "sensor-0001",
            "gw1.plant4.example",
            "localhost-gw",
            "mylocalhost",
            "10.0.0.1a",
            "0xg1",
            "hallmark-ca2",
        ] {
            assert_eq!(p.check_device_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn dns_names_only_under_the_zone_suffixes() {
        let p = policy();
        assert!(p.dns_name_allowed("field", "gw1.plant4.example"));
        assert!(p.dns_name_allowed("field", "a.b.plant4.example"));
        assert!(!p.dns_name_allowed("field", "plant4.example"), "the apex");
        assert!(!p.dns_name_allowed("field", "gw1.xplant4.example"));
        assert!(!p.dns_name_allowed("field", "gw1.plant4.example.evil"));
        assert!(!p.dns_name_allowed("other", "gw1.plant4.example"));
        assert!(!HostNamePolicy::default().dns_name_allowed("field", "gw1.plant4.example"));
    }

    #[test]
    fn bad_suffixes_are_named() {
        for bad in [
            ".plant4.example",
            "Plant4.example",
            "localhost",
            "10.1",
            "a..b",
            "",
        ] {
            let zones = BTreeMap::from([("field".to_owned(), vec![bad.to_owned()])]);
            let err = HostNamePolicy::new([], &zones).unwrap_err().to_string();
            assert!(err.contains("zones.field.dns_suffixes"), "{bad}: {err}");
        }
    }
}
