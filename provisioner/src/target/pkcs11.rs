//! `pkcs11:MODULE?token=LABEL&pin-file=FILE`: a secure element or TPM behind PKCS#11. The key
//! pair is generated inside the device's token (private key sensitive, not extractable,
//! persistent), the CSR is signed by the token, and the certificate is stored on the token
//! beside the key (same `CKA_ID` and `CKA_LABEL`), followed by the CA certificates of the chain
//! and trust bundle (labels `hallmark-ca-N`).
//!
//! The token is found by its label: `token=` is a template in which `{device}` stands for the
//! device id (default `{device}`), or the device's `pkcs11_token` column. The user PIN is the
//! device's `pkcs11_pin` column or the content of `pin-file`. Each provisioning makes a new key
//! and removes the device's previous key and certificate of ours, so the token never holds two;
//! a run interrupted after the CA answered is finished with the key it left, through the
//! journaled certificate.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Target, TargetError};
use crate::credential::{Credential, check_at_target, check_key};
use crate::manifest::DeviceEntry;

/// The manifest column naming a device's token.
pub const TOKEN_COLUMN: &str = "pkcs11_token";
/// The manifest column with a device's user PIN.
pub const PIN_COLUMN: &str = "pkcs11_pin";
/// DER of the P-256 curve OID (`CKA_EC_PARAMS`).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// Labels of the CA certificates stored beside the device's certificate.
const CA_LABEL_PREFIX: &str = "hallmark-ca-";

/// Tokens behind one PKCS#11 module.
pub struct Pkcs11Target {
    module: PathBuf,
    context: Pkcs11,
    token_template: String,
    lot_pin: Option<String>,
}

fn failed(what: &str) -> impl Fn(cryptoki::error::Error) -> TargetError + '_ {
    move |e| TargetError::Failed(format!("PKCS#11 {what}: {e}"))
}

impl Pkcs11Target {
    /// Loads and initialises `module`.
    pub fn new(
        module: &Path,
        token_template: Option<String>,
        lot_pin: Option<String>,
    ) -> Result<Self, String> {
        let context = Pkcs11::new(module)
            .map_err(|e| format!("cannot load PKCS#11 module {}: {e}", module.display()))?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| format!("cannot initialise {}: {e}", module.display()))?;
        Ok(Self {
            module: module.to_owned(),
            context,
            token_template: token_template.unwrap_or_else(|| "{device}".into()),
            lot_pin,
        })
    }

    /// A logged-in read-write session on `device`'s token.
    fn session(&self, device: &DeviceEntry) -> Result<Session, TargetError> {
        let label = match device.extra.get(TOKEN_COLUMN).filter(|t| !t.is_empty()) {
            Some(l) => l.clone(),
            None => self.token_template.replace("{device}", &device.device_id),
        };
        let pin = device
            .extra
            .get(PIN_COLUMN)
            .filter(|p| !p.is_empty())
            .or(self.lot_pin.as_ref())
            .ok_or_else(|| {
                TargetError::Input(format!(
                    "no PIN for token `{label}`: give the manifest a `{PIN_COLUMN}` column or the \
                     target a PIN file (pkcs11:MODULE?pin-file=FILE)"
                ))
            })?;
        let slots = self
            .context
            .get_slots_with_token()
            .map_err(failed("listing slots"))?;
        let mut slot = None;
        for s in slots {
            let info = self
                .context
                .get_token_info(s)
                .map_err(failed("token info"))?;
            if info.label().trim_end() == label {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or_else(|| {
            TargetError::Failed(format!(
                "no token labelled `{label}` behind {} (is the device connected?)",
                self.module.display()
            ))
        })?;
        let session = self
            .context
            .open_rw_session(slot)
            .map_err(failed("opening a session"))?;
        match session.login(UserType::User, Some(&AuthPin::from(pin.clone()))) {
            // Another worker's session on the same token is logged in: so is this one.
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => Ok(session),
            Err(e) => Err(failed(&format!("login to token `{label}`"))(e)),
        }
    }
}

/// `CKA_ID` of a device's objects: the first 16 bytes of SHA-256 of its id.
fn object_id(device: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, device.as_bytes()).as_ref()[..16].to_vec()
}

/// The device's key pair in the token, if there is one: `(private, public)`.
fn find_key(
    session: &Session,
    device: &str,
) -> Result<Option<(ObjectHandle, ObjectHandle)>, TargetError> {
    let find = |class| {
        session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::KeyType(KeyType::EC),
                Attribute::Id(object_id(device)),
            ])
            .map_err(failed("finding the key"))
    };
    let private = find(ObjectClass::PRIVATE_KEY)?;
    let public = find(ObjectClass::PUBLIC_KEY)?;
    Ok(match (private.first(), public.first()) {
        (Some(p), Some(q)) => Some((*p, *q)),
        _ => None,
    })
}

/// The token key as rcgen sees it: public point from the token, signatures made by the token.
struct TokenKey<'a> {
    session: &'a Session,
    private: ObjectHandle,
    point: Vec<u8>,
}

impl<'a> TokenKey<'a> {
    fn open(
        session: &'a Session,
        private: ObjectHandle,
        public: ObjectHandle,
    ) -> Result<Self, TargetError> {
        let attrs = session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(failed("reading the public key"))?;
        let Some(Attribute::EcPoint(wrapped)) = attrs.into_iter().next() else {
            return Err(TargetError::Failed("the token key has no EC point".into()));
        };
        Ok(Self {
            session,
            private,
            point: unwrap_octet_string(&wrapped)?,
        })
    }
}

impl PublicKeyData for TokenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for TokenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // SoftHSM 2.6 has no CKM_ECDSA_SHA256 (DESIGN pitfalls): hash here, sign the digest
        // with CKM_ECDSA, and turn the raw r||s into the DER X.509 expects.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        let raw = self
            .session
            .sign(&Mechanism::Ecdsa, self.private, digest.as_ref())
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        ecdsa_raw_to_der(&raw).ok_or(rcgen::Error::RemoteKeyError)
    }
}

/// `CKA_EC_POINT` is the P-256 point (65 bytes, uncompressed) wrapped in a DER OCTET STRING
/// (DESIGN pitfalls); some modules return the bare point. Exact lengths only: a bare point
/// could otherwise pass for a wrapped one.
fn unwrap_octet_string(der: &[u8]) -> Result<Vec<u8>, TargetError> {
    match der {
        [0x04, 0x41, point @ ..] if point.len() == 65 && point[0] == 0x04 => Ok(point.to_vec()),
        [0x04, ..] if der.len() == 65 => Ok(der.to_vec()),
        _ => Err(TargetError::Failed(
            "the token's EC point is not an uncompressed P-256 point".into(),
        )),
    }
}

/// `r || s` (two equal halves) as a DER `ECDSA-Sig-Value` (SEQUENCE of two INTEGERs).
/// Hand-written (a dozen lines) rather than pulling a second crypto stack for it.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return None;
    }
    let integer = |half: &[u8]| {
        let trimmed = match half.iter().position(|b| *b != 0) {
            Some(i) => &half[i..],
            None => &half[half.len() - 1..],
        };
        let mut out = vec![0x02];
        let pad = trimmed[0] & 0x80 != 0;
        out.push((trimmed.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut der = vec![0x30];
    if body.len() >= 0x80 {
        der.push(0x81);
    }
    der.push(body.len() as u8);
    der.extend(body);
    Some(der)
}

impl Target for Pkcs11Target {
    fn describe(&self) -> String {
        format!("pkcs11:{}", self.module.display())
    }

    fn key_and_csr(&self, device: &DeviceEntry) -> Result<Vec<u8>, TargetError> {
        let session = self.session(device)?;
        let id = object_id(&device.device_id);
        let label = device.device_id.as_bytes().to_vec();
        // A new key every time: re-provisioning rotates it, and an interrupted run is finished
        // with the key it left only through its journaled certificate. Only our objects (this
        // device's CKA_ID) are removed; the token's other objects (an IDevID) stay.
        let ours = session
            .find_objects(&[Attribute::Id(id.clone())])
            .map_err(failed("finding old objects"))?;
        for o in ours {
            session
                .destroy_object(o)
                .map_err(failed("removing an old key or certificate"))?;
        }
        let (private, public) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Verify(true),
                    Attribute::EcParams(P256_PARAMS.to_vec()),
                    Attribute::Label(label.clone()),
                    Attribute::Id(id.clone()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Label(label),
                    Attribute::Id(id),
                ],
            )
            // cryptoki answers (public, private).
            .map(|(public, private)| (private, public))
            .map_err(failed("generating the key pair"))?;
        let key = TokenKey::open(&session, private, public)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, device.device_id.as_str());
        let csr = params
            .serialize_request(&key)
            .map_err(|e| TargetError::Failed(format!("signing the CSR in the token: {e}")))?;
        Ok(csr.der().to_vec())
    }

    fn inject(&self, device: &DeviceEntry, credential: &Credential) -> Result<(), TargetError> {
        let session = self.session(device)?;
        let (private, public) =
            find_key(&session, &device.device_id)?.ok_or(TargetError::KeyLost)?;
        let key = TokenKey::open(&session, private, public)?;
        let leaf = credential.leaf_der()?;
        if check_key(&leaf, &key.subject_public_key_info()).is_err() {
            return Err(TargetError::KeyLost);
        }
        // Ours only: a previous certificate of this device and the CA certificates we stored.
        let mut old = session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(object_id(&device.device_id)),
            ])
            .map_err(failed("finding certificates"))?;
        let cas: Vec<Vec<u8>> = credential
            .chain()?
            .iter()
            .skip(1)
            .chain(credential.trust()?.iter())
            .map(|c| c.as_ref().to_vec())
            .collect();
        for i in 0..cas.len() + 8 {
            old.extend(
                session
                    .find_objects(&[
                        Attribute::Class(ObjectClass::CERTIFICATE),
                        Attribute::Label(format!("{CA_LABEL_PREFIX}{i}").into_bytes()),
                    ])
                    .map_err(failed("finding certificates"))?,
            );
        }
        for o in old {
            session
                .destroy_object(o)
                .map_err(failed("removing an old certificate"))?;
        }
        let store = |label: Vec<u8>, id: Vec<u8>, der: &[u8]| -> Result<(), TargetError> {
            let (_, c) = X509Certificate::from_der(der)
                .map_err(|e| TargetError::Failed(format!("a certificate: {e}")))?;
            session
                .create_object(&[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::CertificateType(CertificateType::X_509),
                    Attribute::Token(true),
                    // Public objects: readable before login, like any certificate.
                    Attribute::Private(false),
                    Attribute::Label(label),
                    Attribute::Id(id),
                    Attribute::Subject(c.subject().as_raw().to_vec()),
                    Attribute::Value(der.to_vec()),
                ])
                .map(|_| ())
                .map_err(failed("storing a certificate"))
        };
        store(
            device.device_id.as_bytes().to_vec(),
            object_id(&device.device_id),
            &leaf,
        )?;
        for (i, der) in cas.iter().enumerate() {
            store(
                format!("{CA_LABEL_PREFIX}{i}").into_bytes(),
                Vec::new(),
                der,
            )?;
        }
        Ok(())
    }

    fn read_back(
        &self,
        device: &DeviceEntry,
        credential: &Credential,
        now: i64,
    ) -> Result<(), TargetError> {
        let session = self.session(device)?;
        let (private, public) =
            find_key(&session, &device.device_id)?.ok_or(TargetError::KeyLost)?;
        let attrs = session
            .get_attributes(
                private,
                &[AttributeType::Extractable, AttributeType::Sensitive],
            )
            .map_err(failed("reading key attributes"))?;
        for a in attrs {
            match a {
                Attribute::Extractable(true) => {
                    return Err(TargetError::Failed(
                        "the token key is extractable; keys must stay in the device".into(),
                    ));
                }
                Attribute::Sensitive(false) => {
                    return Err(TargetError::Failed("the token key is not sensitive".into()));
                }
                _ => {}
            }
        }
        let key = TokenKey::open(&session, private, public)?;
        let certs = session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(object_id(&device.device_id)),
            ])
            .map_err(failed("finding the certificate"))?;
        let [cert] = certs.as_slice() else {
            return Err(TargetError::Failed(format!(
                "the token holds {} certificates for the device, not one",
                certs.len()
            )));
        };
        let value = session
            .get_attributes(*cert, &[AttributeType::Value])
            .map_err(failed("reading the certificate"))?;
        let Some(Attribute::Value(der)) = value.into_iter().next() else {
            return Err(TargetError::Failed(
                "the certificate object has no value".into(),
            ));
        };
        if der != credential.leaf_der()? {
            return Err(TargetError::Failed(
                "the token holds another certificate".into(),
            ));
        }
        check_at_target(credential, &der, &key.subject_public_key_info(), now)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signatures_become_der_integers() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a sign pad
        raw[33] = 0x01; // s has a leading zero byte to drop
        raw[63] = 0x02;
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        let s_at = 2 + 2 + 33;
        assert_eq!(&der[s_at..s_at + 2], &[0x02, 31]);
        assert_eq!(usize::from(der[1]), der.len() - 2);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_none());
    }
}
