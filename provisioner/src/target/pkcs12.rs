//! `pkcs12:PATH[?password-file=FILE]`: one password-protected PKCS#12 file per device,
//! `PATH/<device id>.p12` (mode 0600), holding the key, the leaf and the issuing CA. The
//! password is the device's `pkcs12_password` column, or else the lot's password file. The
//! encryption is PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) with an HMAC-SHA256 MAC, which
//! OpenSSL 3 reads without its legacy provider.

use std::path::PathBuf;

use hallmark_core::fsutil::write_atomic;
use p12_keystore::{
    Certificate, KeyStore, KeyStoreEntry, Pkcs12ImportPolicy, PrivateKey, PrivateKeyChain,
};
use rcgen::{KeyPair, PublicKeyData};

use super::software::PendingKeys;
use super::{Target, TargetError};
use crate::credential::{Credential, check_at_target};
use crate::manifest::DeviceEntry;

/// The manifest column with a device's own password.
pub const PASSWORD_COLUMN: &str = "pkcs12_password";

/// PKCS#12 files under a directory.
pub struct Pkcs12Target {
    root: PathBuf,
    lot_password: Option<String>,
    keys: PendingKeys,
}

impl Pkcs12Target {
    /// Files go to `root/<device id>.p12`, protected by the device's password column or
    /// `lot_password`.
    pub fn new(root: PathBuf, lot_password: Option<String>) -> Self {
        Self {
            root,
            lot_password,
            keys: PendingKeys::default(),
        }
    }

    fn password<'a>(&'a self, device: &'a DeviceEntry) -> Result<&'a str, TargetError> {
        let own = device
            .extra
            .get(PASSWORD_COLUMN)
            .map(String::as_str)
            .filter(|p| !p.is_empty());
        let password = own.or(self.lot_password.as_deref()).ok_or_else(|| {
            TargetError::Input(format!(
                "no PKCS#12 password: give the manifest a `{PASSWORD_COLUMN}` column or the \
                 target a password file (pkcs12:PATH?password-file=FILE)"
            ))
        })?;
        if password.len() < 8 {
            return Err(TargetError::Input(
                "the PKCS#12 password must have at least 8 characters".into(),
            ));
        }
        Ok(password)
    }

    fn file(&self, device: &DeviceEntry) -> PathBuf {
        self.root.join(format!("{}.p12", device.device_id))
    }
}

fn failed(what: &str) -> impl Fn(p12_keystore::error::Error) -> TargetError + '_ {
    move |e| TargetError::Failed(format!("{what}: {e}"))
}

impl Target for Pkcs12Target {
    fn describe(&self) -> String {
        format!("pkcs12:{}", self.root.display())
    }

    fn key_and_csr(&self, device: &DeviceEntry) -> Result<Vec<u8>, TargetError> {
        // Refuse before the CA is asked: a device without a password gets nothing issued.
        self.password(device)?;
        self.keys.new_csr(&device.device_id)
    }

    fn inject(&self, device: &DeviceEntry, credential: &Credential) -> Result<(), TargetError> {
        let password = self.password(device)?;
        let key = self
            .keys
            .take_for(&device.device_id, &credential.leaf_der()?)?;
        let certs = credential
            .chain()?
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed("reading the chain"))?;
        let private = PrivateKey::from_der(&key.serialize_der()).map_err(failed("the key"))?;
        let local_key_id = hex::decode(&credential.serial).unwrap_or_default();
        let mut store = KeyStore::new();
        store.add_entry(
            &device.device_id,
            KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, private, certs)),
        );
        let der = store
            .writer(password)
            .write()
            .map_err(failed("writing PKCS#12"))?;
        std::fs::create_dir_all(&self.root)
            .map_err(|e| TargetError::Failed(format!("{}: {e}", self.root.display())))?;
        let file = self.file(device);
        write_atomic(&file, &der, 0o600)
            .map_err(|e| TargetError::Failed(format!("{}: {e}", file.display())))
    }

    fn read_back(
        &self,
        device: &DeviceEntry,
        credential: &Credential,
        now: i64,
    ) -> Result<(), TargetError> {
        let file = self.file(device);
        let der = std::fs::read(&file)
            .map_err(|e| TargetError::Failed(format!("{}: {e}", file.display())))?;
        let store = KeyStore::from_pkcs12(&der, self.password(device)?, Pkcs12ImportPolicy::Strict)
            .map_err(failed("opening the PKCS#12 file"))?;
        let (_, chain) = store.private_key_chain().ok_or_else(|| {
            TargetError::Failed("the PKCS#12 file holds no key with its certificate".into())
        })?;
        let leaf = chain
            .certs()
            .first()
            .ok_or_else(|| TargetError::Failed("the PKCS#12 file holds no certificate".into()))?;
        if leaf.as_der() != credential.leaf_der()?.as_slice() {
            return Err(TargetError::Failed(
                "the PKCS#12 file holds another certificate".into(),
            ));
        }
        let key = KeyPair::try_from(chain.key().as_der())
            .map_err(|e| TargetError::Failed(format!("the key in the file: {e}")))?;
        check_at_target(
            credential,
            leaf.as_der(),
            &key.subject_public_key_info(),
            now,
        )?;
        Ok(())
    }
}
