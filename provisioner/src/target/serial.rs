//! `serial:ADDR`: a sensor on the station's fixture, reached over a serial line (a tty path, or
//! a TCP address of a serial-to-network fixture) with the protocol of [`crate::serial`]. The
//! sensor generates its key itself and only ever sends its CSR: the read-back asks it to prove
//! possession of the key with a fresh challenge.
//!
//! The address is the device's `serial_address` column, or else ADDR. One fixture holds one
//! unit at a time: before anything is generated the station checks that the unit on the line
//! has the manifest's serial number, so a wrongly placed unit is refused, not provisioned.

use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Target, TargetError};
use crate::credential::{Credential, check_chain};
use crate::manifest::DeviceEntry;
use crate::serial::link::Link;
use crate::serial::protocol::{
    self, GENERATE_KEY, IDENTIFY, Identity, PROVE, ProtocolError, READ, STORE, StoredCredential,
};

/// The manifest column with a device's line address.
pub const ADDRESS_COLUMN: &str = "serial_address";
/// What a device answers when asked to store a certificate without a new key waiting.
pub const NO_PENDING_KEY: &str = "no new key is waiting for a certificate";

/// Sensors on serial lines.
pub struct SerialTarget {
    default_address: Option<String>,
    timeout: Duration,
}

impl SerialTarget {
    /// Devices are reached at their `serial_address` column or `default_address`.
    pub fn new(default_address: Option<String>) -> Self {
        Self {
            default_address,
            timeout: Duration::from_secs(10),
        }
    }

    fn call(&self, device: &DeviceEntry, kind: u8, payload: &[u8]) -> Result<Vec<u8>, TargetError> {
        let address = device
            .extra
            .get(ADDRESS_COLUMN)
            .filter(|a| !a.is_empty())
            .or(self.default_address.as_ref())
            .ok_or_else(|| {
                TargetError::Input(format!(
                    "no serial line: give the target an address (serial:ADDR) or the manifest a \
                     `{ADDRESS_COLUMN}` column"
                ))
            })?;
        let mut link = Link::open(address, self.timeout)
            .map_err(|e| TargetError::Failed(format!("opening {address}: {e}")))?;
        protocol::request(&mut link, kind, payload).map_err(|e| match e {
            ProtocolError::Refused(m) if m.contains(NO_PENDING_KEY) => TargetError::KeyLost,
            e => TargetError::Failed(format!("{address}: {e}")),
        })
    }
}

fn json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, TargetError> {
    serde_json::from_slice(body)
        .map_err(|e| TargetError::Failed(format!("the device's {what} is not valid: {e}")))
}

impl Target for SerialTarget {
    fn describe(&self) -> String {
        format!("serial:{}", self.default_address.as_deref().unwrap_or(""))
    }

    fn key_and_csr(&self, device: &DeviceEntry) -> Result<Vec<u8>, TargetError> {
        let identity: Identity = json("identity", &self.call(device, IDENTIFY, &[])?)?;
        if !device.serial_number.is_empty() && identity.serial_number != device.serial_number {
            return Err(TargetError::Failed(format!(
                "the unit on the line has serial number {}, the manifest expects {} for {}",
                identity.serial_number, device.serial_number, device.device_id
            )));
        }
        self.call(device, GENERATE_KEY, device.device_id.as_bytes())
    }

    fn inject(&self, device: &DeviceEntry, credential: &Credential) -> Result<(), TargetError> {
        let stored = StoredCredential {
            certificate_pem: credential.leaf_pem()?,
            chain_pem: credential.chain_pem.clone(),
            trust_pem: credential.trust_pem.clone(),
        };
        let body = serde_json::to_vec(&stored)
            .map_err(|e| TargetError::Failed(format!("encoding the credential: {e}")))?;
        self.call(device, STORE, &body)?;
        self.call(device, protocol::CONFIRM, &[])?;
        Ok(())
    }

    fn read_back(
        &self,
        device: &DeviceEntry,
        credential: &Credential,
        now: i64,
    ) -> Result<(), TargetError> {
        let stored: StoredCredential = json("credential", &self.call(device, READ, &[])?)?;
        let leaf = credential.leaf_der()?;
        let found = pem::parse(&stored.certificate_pem)
            .map_err(|e| TargetError::Failed(format!("the device's certificate: {e}")))?;
        if found.contents() != leaf.as_slice() {
            return Err(TargetError::Failed(
                "the device holds another certificate".into(),
            ));
        }
        // Proof of possession: the device signs a fresh challenge with its key.
        let mut challenge = [0u8; 32];
        aws_lc_rs::rand::fill(&mut challenge)
            .map_err(|_| TargetError::Failed("no randomness for the challenge".into()))?;
        let signature = self.call(device, PROVE, &challenge)?;
        let (_, cert) = X509Certificate::from_der(&leaf)
            .map_err(|e| TargetError::Failed(format!("the certificate: {e}")))?;
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            cert.public_key().subject_public_key.data.as_ref(),
        )
        .verify(&challenge, &signature)
        .map_err(|_| {
            TargetError::Failed(
                "the device's signature does not verify with the certificate: it does not hold \
                 the key"
                    .into(),
            )
        })?;
        let found_credential = Credential {
            serial: credential.serial.clone(),
            chain_pem: stored.chain_pem,
            trust_pem: stored.trust_pem,
        };
        check_chain(
            &leaf,
            &found_credential.chain()?,
            &found_credential.trust()?,
            now,
        )?;
        Ok(())
    }
}
