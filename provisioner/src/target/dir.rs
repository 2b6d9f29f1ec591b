//! `dir:PATH`: a gateway's file system image. One credential bundle per device at
//! `PATH/<device id>/` in the layout of every Hallmark bundle (`key.pem` 0600, `cert.pem`,
//! `chain.pem`, `ca.pem`), each written as one atomic directory replacement, with the owner,
//! group and key mode asked for (`?owner=..&group=..&key-mode=..`) or those of the bundle it
//! replaces.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use hallmark_core::bundle::{BundleAccess, CredentialBundle, KEY_FILE};
use rcgen::{KeyPair, PublicKeyData};

use super::software::PendingKeys;
use super::{Target, TargetError};
use crate::credential::{Credential, check_at_target};
use crate::manifest::DeviceEntry;

/// Bundles under a directory.
pub struct DirTarget {
    root: PathBuf,
    keys: PendingKeys,
    access: BundleAccess,
}

impl DirTarget {
    /// Bundles go to `root/<device id>/`.
    pub fn new(root: PathBuf) -> Self {
        Self::with_access(root, BundleAccess::default())
    }

    /// Bundles go to `root/<device id>/` with the owner, group and key mode of `access`.
    pub fn with_access(root: PathBuf, access: BundleAccess) -> Self {
        Self {
            root,
            keys: PendingKeys::default(),
            access,
        }
    }
}

impl Target for DirTarget {
    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn key_and_csr(&self, device: &DeviceEntry) -> Result<Vec<u8>, TargetError> {
        self.keys.new_csr(&device.device_id)
    }

    fn inject(&self, device: &DeviceEntry, credential: &Credential) -> Result<(), TargetError> {
        let key = self
            .keys
            .take_for(&device.device_id, &credential.leaf_der()?)?;
        CredentialBundle {
            key_pem: key.serialize_pem(),
            cert_pem: credential.leaf_pem()?,
            chain_pem: credential.chain_pem.clone(),
            ca_pem: credential.trust_pem.clone(),
        }
        .write_with(&self.root.join(&device.device_id), self.access)
        .map_err(|e| TargetError::Failed(format!("writing the bundle: {e}")))
    }

    fn read_back(
        &self,
        device: &DeviceEntry,
        credential: &Credential,
        now: i64,
    ) -> Result<(), TargetError> {
        let dir = self.root.join(&device.device_id);
        let found = CredentialBundle::read(&dir)
            .map_err(|e| TargetError::Failed(format!("reading back: {e}")))?;
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .map_err(|e| TargetError::Failed(format!("reading back: {e}")))?
            .permissions()
            .mode()
            & 0o777;
        // The mode asked for, else 0600 or what an admin gave the bundle it replaced; never
        // readable by others.
        let expected_mode = self.access.key_mode.unwrap_or(mode);
        if mode != expected_mode || mode & 0o007 != 0 {
            return Err(TargetError::Failed(format!(
                "{} has mode {mode:o}, not {expected_mode:o} and private to owner and group",
                dir.join(KEY_FILE).display()
            )));
        }
        let expected = credential.leaf_der()?;
        let leaf = pem::parse(&found.cert_pem)
            .map_err(|e| TargetError::Failed(format!("cert.pem: {e}")))?;
        if leaf.contents() != expected.as_slice() || found.chain_pem != credential.chain_pem {
            return Err(TargetError::Failed(
                "the bundle holds another certificate".into(),
            ));
        }
        let key = KeyPair::from_pem(&found.key_pem)
            .map_err(|e| TargetError::Failed(format!("key.pem: {e}")))?;
        let found_credential = Credential {
            trust_pem: found.ca_pem,
            ..credential.clone()
        };
        check_at_target(
            &found_credential,
            leaf.contents(),
            &key.subject_public_key_info(),
            now,
        )?;
        Ok(())
    }
}
