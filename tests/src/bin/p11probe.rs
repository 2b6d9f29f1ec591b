//! `hallmark-p11probe`: what a test needs to know of a device's PKCS#11 token, read with the
//! token's own library in a process of its own (so that each test can point `SOFTHSM2_CONF`
//! at its own token directory): the attributes of the device's private key, its certificate,
//! and a signature the token makes over a challenge. Prints JSON.
//!
//! ```sh
//! hallmark-p11probe MODULE TOKEN-LABEL PIN DEVICE-ID CHALLENGE-HEX
//! ```

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [module, token, pin, device, challenge] = args.as_slice() else {
        anyhow::bail!("usage: hallmark-p11probe MODULE TOKEN-LABEL PIN DEVICE-ID CHALLENGE-HEX");
    };
    let p11 = Pkcs11::new(module)?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = p11
        .get_slots_with_token()?
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .is_ok_and(|i| i.label().trim_end() == token)
        })
        .ok_or_else(|| anyhow::anyhow!("no token {token}"))?;
    let session = p11.open_ro_session(slot)?;
    session.login(UserType::User, Some(&AuthPin::from(pin.clone())))?;
    let find = |class| {
        session.find_objects(&[
            Attribute::Class(class),
            Attribute::Label(device.as_bytes().to_vec()),
        ])
    };
    let keys = find(ObjectClass::PRIVATE_KEY)?;
    let certs = find(ObjectClass::CERTIFICATE)?;
    let key = *keys
        .first()
        .ok_or_else(|| anyhow::anyhow!("no private key"))?;
    let mut out = serde_json::Map::new();
    out.insert("private_keys".into(), keys.len().into());
    out.insert("certificates".into(), certs.len().into());
    for a in session.get_attributes(
        key,
        &[
            AttributeType::Extractable,
            AttributeType::Sensitive,
            AttributeType::NeverExtractable,
            AttributeType::Token,
        ],
    )? {
        match a {
            Attribute::Extractable(v) => out.insert("extractable".into(), v.into()),
            Attribute::Sensitive(v) => out.insert("sensitive".into(), v.into()),
            Attribute::NeverExtractable(v) => out.insert("never_extractable".into(), v.into()),
            Attribute::Token(v) => out.insert("token".into(), v.into()),
            _ => None,
        };
    }
    if let Some(cert) = certs.first()
        && let Some(Attribute::Value(der)) = session
            .get_attributes(*cert, &[AttributeType::Value])?
            .into_iter()
            .next()
    {
        out.insert("certificate".into(), hex::encode(der).into());
    }
    // SoftHSM has no CKM_ECDSA_SHA256: hash here, sign the digest in the token.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &hex::decode(challenge)?);
    let signature = session.sign(&Mechanism::Ecdsa, key, digest.as_ref())?;
    out.insert("signature_raw".into(), hex::encode(signature).into());
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
