//! A simulated sensor that speaks the serial protocol: what the tests provision, and what a
//! firmware team can check its implementation against. Its key is generated inside it and
//! never leaves it; only the CSR and signatures do. Its confirmed identity is kept in a state
//! directory in the layout of a Hallmark bundle, replaced atomically on CONFIRM.

use std::io::{Read, Write};
use std::path::PathBuf;

use hallmark_core::bundle::CredentialBundle;
use rcgen::{KeyPair, PublicKeyData};

use super::protocol::{
    self, CONFIRM, ERROR, GENERATE_KEY, IDENTIFY, Identity, PROVE, ProtocolError, READ, RESPONSE,
    STORE, StoredCredential,
};
use crate::credential::check_key;
use crate::target::serial::NO_PENDING_KEY;

/// The simulated device.
pub struct SimulatedDevice {
    state: PathBuf,
    serial_number: String,
    model: String,
    /// A key generated but not yet confirmed, with the credential stored for it.
    pending: Option<(KeyPair, Option<StoredCredential>)>,
}

impl SimulatedDevice {
    /// A device keeping its identity in `state`.
    pub fn new(state: PathBuf, serial_number: String, model: String) -> Self {
        Self {
            state,
            serial_number,
            model,
            pending: None,
        }
    }

    fn confirmed(&self) -> Option<CredentialBundle> {
        CredentialBundle::read(&self.state).ok()
    }

    /// Answers one request: `(response type, payload)`.
    pub fn handle(&mut self, kind: u8, payload: &[u8]) -> (u8, Vec<u8>) {
        match self.answer(kind, payload) {
            Ok(body) => (kind | RESPONSE, body),
            Err(message) => (ERROR, message.into_bytes()),
        }
    }

    fn answer(&mut self, kind: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
        match kind {
            IDENTIFY => {
                let device_id = self
                    .confirmed()
                    .and_then(|b| hallmark_core::bundle::certificate_cn(b.cert_pem.as_bytes()));
                serde_json::to_vec(&Identity {
                    serial_number: self.serial_number.clone(),
                    model: self.model.clone(),
                    device_id,
                })
                .map_err(|e| e.to_string())
            }
            GENERATE_KEY => {
                let cn = std::str::from_utf8(payload).map_err(|_| "the device id is not UTF-8")?;
                let (key, csr) =
                    hallmark_core::bundle::new_key_pair_and_csr(cn).map_err(|e| e.to_string())?;
                self.pending = Some((key, None));
                Ok(csr)
            }
            STORE => {
                let stored: StoredCredential = serde_json::from_slice(payload)
                    .map_err(|e| format!("the credential is not valid JSON: {e}"))?;
                let (key, slot) = self.pending.as_mut().ok_or(NO_PENDING_KEY)?;
                let leaf = pem::parse(&stored.certificate_pem)
                    .map_err(|e| format!("the certificate is not PEM: {e}"))?;
                check_key(leaf.contents(), &key.subject_public_key_info())
                    .map_err(|_| "the certificate is not for the new key".to_owned())?;
                *slot = Some(stored);
                Ok(Vec::new())
            }
            CONFIRM => {
                let Some((key, Some(stored))) = self.pending.take() else {
                    return Err(
                        "nothing to confirm: generate a key and store its certificate first".into(),
                    );
                };
                CredentialBundle {
                    key_pem: key.serialize_pem(),
                    cert_pem: stored.certificate_pem,
                    chain_pem: stored.chain_pem,
                    ca_pem: stored.trust_pem,
                }
                .write(&self.state)
                .map_err(|e| format!("storage failed: {e}"))?;
                Ok(Vec::new())
            }
            READ => {
                let b = self
                    .confirmed()
                    .ok_or("the device has no confirmed identity")?;
                serde_json::to_vec(&StoredCredential {
                    certificate_pem: b.cert_pem,
                    chain_pem: b.chain_pem,
                    trust_pem: b.ca_pem,
                })
                .map_err(|e| e.to_string())
            }
            PROVE => {
                if payload.is_empty() || payload.len() > 64 {
                    return Err("the challenge must have 1 to 64 bytes".into());
                }
                let b = self
                    .confirmed()
                    .ok_or("the device has no confirmed identity")?;
                let key = KeyPair::from_pem(&b.key_pem).map_err(|e| e.to_string())?;
                rcgen::SigningKey::sign(&key, payload).map_err(|e| e.to_string())
            }
            other => Err(format!("unknown request type {other:#04x}")),
        }
    }

    /// Serves one open line until it closes.
    pub fn serve(&mut self, line: &mut (impl Read + Write)) -> Result<(), ProtocolError> {
        loop {
            let (kind, payload) = match protocol::read_frame(line) {
                Ok(f) => f,
                Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(());
                }
                Err(ProtocolError::Frame(m)) => {
                    // Garbled on the line: say so; the station retries or gives up.
                    protocol::write_frame(line, ERROR, m.as_bytes())?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (answer, body) = self.handle(kind, &payload);
            protocol::write_frame(line, answer, &body)?;
        }
    }
}
