//! The CA's configuration file (TOML). Every field has a default, so no file is needed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::authority::hostnames::HostNamePolicy;
use crate::authority::profile::{ProfileConfigError, ProfileOverride, ProfileSet};

pub use crate::net::limits::Limits;

/// Default gRPC listener.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:9443";
/// Default HTTP listener.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9080";

/// Contents of `--config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `O=` of every certificate subject.
    pub organisation: String,
    /// Zone of devices registered without one.
    pub default_zone: String,
    /// URI SAN naming a device; `{device}` is replaced by the device id. The default is an
    /// RFC 9039 `urn:dev:org` URN under the documentation PEN 32473: set your own PEN.
    pub device_uri_template: String,
    /// Extra DNS names or IP addresses for the API server certificate (besides localhost).
    pub server_names: Vec<String>,
    /// Accept TLS 1.2 (ECDHE + AEAD suites only) besides TLS 1.3.
    pub allow_tls12: bool,
    /// gRPC listener address.
    pub grpc_listen: SocketAddr,
    /// HTTP listener address (CDP, trust bundle, health).
    pub http_listen: SocketAddr,
    /// Base URL of the CRL distribution points written into certificates (as
    /// `<base>/crl/<issuer>.crl`); default `http://<http_listen>` (127.0.0.1 for an unspecified
    /// address). Set it to the URL brokers and devices reach.
    pub crl_base_url: Option<String>,
    /// How long a CRL is valid (`nextUpdate - thisUpdate`); rebuilt at half of it.
    #[serde(with = "humantime_serde")]
    pub crl_validity: std::time::Duration,
    /// How long a CRL of the root is valid. Long, for a root whose key is kept offline: the
    /// CA re-signs it at half of it when the root key is in its data dir, else an operator does
    /// with `hallmark-ca issuer root-crl --root-key FILE` (the CA warns when under a quarter
    /// is left).
    #[serde(with = "humantime_serde")]
    pub root_crl_validity: std::time::Duration,
    /// Most certificates one group commit writes in one transaction (1 to 2000).
    pub max_commit_batch: usize,
    /// Profile overrides and additions, by name.
    pub profiles: BTreeMap<String, ProfileOverride>,
    /// Connection caps, timeouts and HTTP/2 settings of both listeners (`[limits]`).
    pub limits: Limits,
    /// Per-zone settings, by zone name (`[zones.field]`).
    pub zones: BTreeMap<String, ZoneConfig>,
    /// The database when it is not the SQLite file in the data dir: set from `--database-url`
    /// or `HALLMARK_DATABASE_URL`, never from the file (a URL may carry a password, and a
    /// config file is shared more widely than a secret).
    #[serde(skip)]
    pub database: Option<crate::store::Database>,
}

/// Settings of one zone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneConfig {
    /// DNS suffixes under which certificates that a provisioner requests (or an IDevID
    /// enrollment yields) may carry the device id as a DNS name, e.g. `["plant4.example"]`.
    /// None by default: such certificates then carry no DNS name.
    pub dns_suffixes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            organisation: "Hallmark".to_owned(),
            default_zone: "default".to_owned(),
            device_uri_template: "urn:dev:org:32473-{device}".to_owned(),
            server_names: Vec::new(),
            allow_tls12: false,
            grpc_listen: DEFAULT_GRPC_LISTEN.parse().expect("valid default address"),
            http_listen: DEFAULT_HTTP_LISTEN.parse().expect("valid default address"),
            max_commit_batch: 256,
            crl_base_url: None,
            crl_validity: std::time::Duration::from_secs(24 * 3600),
            root_crl_validity: crate::root_crl::DEFAULT_VALIDITY,
            profiles: BTreeMap::new(),
            zones: BTreeMap::new(),
            limits: Limits::default(),
            database: None,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML error (names the key and line).
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
    /// A profile section is wrong.
    #[error("config: {0}")]
    Profile(#[from] ProfileConfigError),
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<text>".to_owned(),
            source: Box::new(source),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that the schema alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::identity::validate_name("default_zone", &self.default_zone)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if !self.device_uri_template.contains("{device}") {
            return Err(ConfigError::Invalid(format!(
                "device_uri_template `{}` must contain `{{device}}`",
                self.device_uri_template
            )));
        }
        if self.organisation.trim().is_empty() {
            return Err(ConfigError::Invalid("organisation is empty".to_owned()));
        }
        if let Some(url) = &self.crl_base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "crl_base_url `{url}` must start with http:// (CRLs are signed; plain HTTP is right)"
            )));
        }
        if self.crl_validity < std::time::Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "crl_validity must be at least 1m".to_owned(),
            ));
        }
        if self.root_crl_validity < std::time::Duration::from_secs(60)
            || self.root_crl_validity > std::time::Duration::from_secs(366 * 86_400)
        {
            return Err(ConfigError::Invalid(
                "root_crl_validity must be between 1m and 366d".to_owned(),
            ));
        }
        // A batch's multi-row statements carry 16 parameters per certificate: 2,000 stay
        // within SQLite's 32,766 parameters per statement.
        if !(1..=2000).contains(&self.max_commit_batch) {
            return Err(ConfigError::Invalid(format!(
                "max_commit_batch must be between 1 and 2000, not {}",
                self.max_commit_batch
            )));
        }
        self.limits
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.profile_set()?;
        for zone in self.zones.keys() {
            crate::identity::validate_name("zone", zone)
                .map_err(|e| ConfigError::Invalid(format!("[zones.{zone}]: {e}")))?;
        }
        self.host_names(&[])?;
        Ok(())
    }

    /// The host-name rules in force for a CA known as `server_names` (besides its registry
    /// id `hallmark-ca`).
    pub fn host_names(&self, server_names: &[String]) -> Result<HostNamePolicy, ConfigError> {
        let suffixes = self
            .zones
            .iter()
            .map(|(z, c)| (z.clone(), c.dns_suffixes.clone()))
            .collect();
        let names = server_names
            .iter()
            .map(String::as_str)
            .chain([crate::authority::server_identity::SERVER_DEVICE]);
        HostNamePolicy::new(names, &suffixes).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The CRL base URL in force: configured, or derived from the HTTP listener.
    pub fn crl_base(&self, http_addr: std::net::SocketAddr) -> String {
        match &self.crl_base_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let ip = if http_addr.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else if http_addr.is_ipv6() {
                    format!("[{}]", http_addr.ip())
                } else {
                    http_addr.ip().to_string()
                };
                format!("http://{ip}:{}", http_addr.port())
            }
        }
    }

    /// The profiles in force.
    pub fn profile_set(&self) -> Result<ProfileSet, ProfileConfigError> {
        ProfileSet::new(&self.profiles)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_typos_are_named() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.grpc_listen.port(), 9443);
        let err = Config::parse("organization = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("organization"), "{err}");
        let err = Config::parse("device_uri_template = \"urn:x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("{device}"), "{err}");
    }

    #[test]
    fn the_commit_batch_stays_within_a_statement_s_parameters() {
        assert_eq!(
            Config::parse("max_commit_batch = 2000\n")
                .unwrap()
                .max_commit_batch,
            2000
        );
        for bad in ["0", "2001"] {
            let err = Config::parse(&format!("max_commit_batch = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("between 1 and 2000"), "{err}");
        }
    }

    #[test]
    fn zone_dns_suffixes_are_read_and_checked() {
        let cfg = Config::parse("[zones.field]\ndns_suffixes = [\"plant4.example\"]\n").unwrap();
        let names = cfg.host_names(&[]).unwrap();
        assert!(names.dns_name_allowed("field", "gw1.plant4.example"));
        assert!(!names.dns_name_allowed("it", "gw1.plant4.example"));
        let err = Config::parse("[zones.field]\ndns_suffixes = [\".plant4.example\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("zones.field.dns_suffixes"), "{err}");
        let err = Config::parse("[zones.field]\ndns_suffix = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns_suffix"), "{err}");
    }

    #[test]
    fn limits_are_optional_and_checked() {
        let cfg = Config::parse("[limits]\ngrpc_idle_timeout = \"2s\"\n").unwrap();
        assert_eq!(cfg.limits.grpc_idle_timeout, Duration::from_secs(2));
        assert_eq!(cfg.limits.grpc_max_connections, 1024);
        let err = Config::parse("[limits]\nhttp_max_connections_per_peer = 2000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http_max_connections_per_peer"), "{err}");
        let err = Config::parse("[limits]\nhandshake_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("handshake_timeout"), "{err}");
        let err = Config::parse("[limits]\nmax_conections = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_conections"), "{err}");
    }
}
