//! Credential bundles: the directory a device, operator or station keeps its identity in.
//! Always `key.pem` (0600), `cert.pem` (leaf), `chain.pem` (leaf + issuing CA) and `ca.pem`
//! (trust bundle), written as one atomic directory swap with the owner, group and key mode
//! asked for, or those of the bundle it replaces ([`BundleAccess`]).

use std::path::{Path, PathBuf};

use crate::fsutil;

/// Private key file name.
pub const KEY_FILE: &str = "key.pem";
/// Leaf certificate file name.
pub const CERT_FILE: &str = "cert.pem";
/// Leaf + issuing CA file name.
pub const CHAIN_FILE: &str = "chain.pem";
/// Trust bundle file name.
pub const CA_FILE: &str = "ca.pem";

/// The four PEM texts of a credential.
#[derive(Clone)]
pub struct CredentialBundle {
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Leaf followed by the issuing CA, PEM.
    pub chain_pem: String,
    /// Trust bundle, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for CredentialBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialBundle").finish_non_exhaustive()
    }
}

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct BundleError {
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Why an owner, group or key mode asked for a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No such user on this host.
    #[error("no user `{0}` on this host: give an existing user name or a numeric uid")]
    UnknownUser(String),
    /// No such group on this host.
    #[error("no group `{0}` on this host: give an existing group name or a numeric gid")]
    UnknownGroup(String),
    /// The user or group database could not be read.
    #[error("looking up `{name}`: {source}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// What the lookup said.
        source: nix::Error,
    },
    /// Not an octal mode.
    #[error("key mode `{0}` is not an octal mode such as 0600 or 0640")]
    NotOctal(String),
    /// A mode that lets others than the owner and group near the key, or hides it from its owner.
    #[error(
        "key mode `{given}` {why}; a key may be at most 0640 (owner read-write, group read), \
         e.g. 0600 or 0640"
    )]
    UnsafeKeyMode {
        /// The mode as given.
        given: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Owner, group and key mode asked for a bundle write (`--owner`, `--group`, `--key-mode`).
/// What is not asked for is inherited from the bundle being replaced; a new bundle gets the
/// caller's ids, directory 0700, `key.pem` 0600 and the other files 0644.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BundleAccess {
    /// Owner uid of the directory and every file.
    pub owner: Option<u32>,
    /// Group gid of the directory and every file.
    pub group: Option<u32>,
    /// Mode of `key.pem`; the directory follows it (0750 when the group may read the key,
    /// else 0700), so the group can reach the key it is allowed to read.
    pub key_mode: Option<u32>,
}

impl BundleAccess {
    /// Resolves `--owner`, `--group` and `--key-mode` as given (names or numeric ids, an octal
    /// mode), refusing unknown names and a mode that would expose the key.
    pub fn resolve(
        owner: Option<&str>,
        group: Option<&str>,
        key_mode: Option<&str>,
    ) -> Result<Self, AccessError> {
        Ok(Self {
            owner: owner.map(parse_user).transpose()?,
            group: group.map(parse_group).transpose()?,
            key_mode: key_mode.map(parse_key_mode).transpose()?,
        })
    }

    /// As the file system layer takes it.
    pub fn to_fs(self) -> fsutil::Access {
        let mut file_modes = Vec::new();
        if let Some(m) = self.key_mode {
            file_modes.push((KEY_FILE, m));
        }
        fsutil::Access {
            uid: self.owner,
            gid: self.group,
            dir_mode: self
                .key_mode
                .map(|m| if m & 0o040 != 0 { 0o750 } else { 0o700 }),
            file_modes,
        }
    }
}

/// A user name or numeric uid, as the host's user database (NSS) knows it.
pub fn parse_user(given: &str) -> Result<u32, AccessError> {
    if let Ok(uid) = given.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(given) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(AccessError::UnknownUser(given.to_owned())),
        Err(source) => Err(AccessError::Lookup {
            name: given.to_owned(),
            source,
        }),
    }
}

/// A group name or numeric gid, as the host's group database (NSS) knows it.
pub fn parse_group(given: &str) -> Result<u32, AccessError> {
    if let Ok(gid) = given.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(given) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(AccessError::UnknownGroup(given.to_owned())),
        Err(source) => Err(AccessError::Lookup {
            name: given.to_owned(),
            source,
        }),
    }
}

/// An octal key mode: the owner must be able to read it, nobody but owner and group may get
/// near it, the group may only read it, and no special bits.
pub fn parse_key_mode(given: &str) -> Result<u32, AccessError> {
    let digits = given.strip_prefix("0o").unwrap_or(given);
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|_| !digits.is_empty() && digits.len() <= 4)
        .ok_or_else(|| AccessError::NotOctal(given.to_owned()))?;
    let unsafe_mode = |why| AccessError::UnsafeKeyMode {
        given: given.to_owned(),
        why,
    };
    if mode & 0o007 != 0 {
        return Err(unsafe_mode("gives others (world) access to the key"));
    }
    if mode & 0o7000 != 0 {
        return Err(unsafe_mode("sets set-id or sticky bits"));
    }
    if mode & 0o030 != 0 {
        return Err(unsafe_mode("lets the group write or execute the key"));
    }
    if mode & 0o400 == 0 {
        return Err(unsafe_mode("does not let the owner read the key"));
    }
    Ok(mode)
}

impl CredentialBundle {
    /// Writes the bundle into `dir` as one atomic directory replacement: whoever reads `dir`
    /// (or a crash at any moment) sees the complete old bundle or the complete new one, never a
    /// key that does not belong to its certificate. Owner, group and modes are inherited from
    /// the bundle it replaces (see [`CredentialBundle::write_with`]).
    pub fn write(&self, dir: &Path) -> Result<(), BundleError> {
        self.write_with(dir, BundleAccess::default())
    }

    /// [`CredentialBundle::write`] with the owner, group and key mode of `access`, applied to
    /// the directory and every file before the swap.
    pub fn write_with(&self, dir: &Path, access: BundleAccess) -> Result<(), BundleError> {
        fsutil::replace_dir_with_access(
            dir,
            &[
                (CA_FILE, self.ca_pem.as_bytes(), 0o644),
                (CHAIN_FILE, self.chain_pem.as_bytes(), 0o644),
                (CERT_FILE, self.cert_pem.as_bytes(), 0o644),
                (KEY_FILE, self.key_pem.as_bytes(), 0o600),
            ],
            &access.to_fs(),
        )
        .map_err(|source| BundleError {
            path: dir.to_owned(),
            source,
        })
    }

    /// Reads a bundle from `dir`.
    pub fn read(dir: &Path) -> Result<Self, BundleError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| BundleError { path, source })
        };
        Ok(Self {
            key_pem: read(KEY_FILE)?,
            cert_pem: read(CERT_FILE)?,
            chain_pem: read(CHAIN_FILE)?,
            ca_pem: read(CA_FILE)?,
        })
    }
}

/// A fresh P-256 key and a CSR for it (the CSR's subject is informative only: the CA takes
/// names from its registry). Returns `(key PEM, CSR DER)`.
pub fn new_key_and_csr(common_name: &str) -> Result<(String, Vec<u8>), rcgen::Error> {
    let (key, csr) = new_key_pair_and_csr(common_name)?;
    Ok((key.serialize_pem(), csr))
}

/// As [`new_key_and_csr`], for a caller that keeps the key in memory.
pub fn new_key_pair_and_csr(common_name: &str) -> Result<(rcgen::KeyPair, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let csr = params.serialize_request(&key)?.der().to_vec();
    Ok((key, csr))
}

/// The common name (a device id, or a credential name) of the certificate in `cert_pem`.
pub fn certificate_cn(cert_pem: &[u8]) -> Option<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(cert_pem).ok()?;
    let c = p.parse_x509().ok()?;
    let cn = c.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_four_files_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cred");
        let b = CredentialBundle {
            key_pem: "k".into(),
            cert_pem: "c".into(),
            chain_pem: "ch".into(),
            ca_pem: "ca".into(),
        };
        b.write(&out).unwrap();
        let mode = |n: &str| std::fs::metadata(out.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CERT_FILE), 0o644);
        assert_eq!(CredentialBundle::read(&out).unwrap().chain_pem, "ch");
    }

    #[test]
    fn key_modes_that_expose_the_key_are_refused() {
        assert_eq!(parse_key_mode("0640").unwrap(), 0o640);
        assert_eq!(parse_key_mode("600").unwrap(), 0o600);
        assert_eq!(parse_key_mode("0400").unwrap(), 0o400);
        for bad in [
            "0644", "0604", "0660", "0200", "4640", "0o7", "", "rw-r", "99", "01640",
        ] {
            assert!(parse_key_mode(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_user("0").unwrap(), 0);
        assert_eq!(parse_user("root").unwrap(), 0);
        assert!(matches!(
            parse_group("no-such-group-hallmark"),
            Err(AccessError::UnknownGroup(_))
        ));
    }
}
