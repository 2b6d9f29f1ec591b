//! The station–sensor protocol over a serial line (see `docs/serial-protocol.md`).
//!
//! A frame is `type (1 byte) | length (2 bytes, big-endian) | payload | CRC-32 (4 bytes,
//! big-endian, ISO-HDLC, over type, length and payload)`. The station sends a request and the
//! device answers with exactly one frame: the response type (request type | 0x80) or
//! [`ERROR`] with a UTF-8 message.

use std::io::{Read, Write};

/// Longest payload (certificates and chains fit easily).
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// Request: who are you? Response payload: JSON [`Identity`].
pub const IDENTIFY: u8 = 0x01;
/// Request: generate a key pair (payload: the device id to put in the CSR, UTF-8); it replaces
/// any key not yet confirmed. Response payload: the CSR, DER.
pub const GENERATE_KEY: u8 = 0x02;
/// Request: store this credential (JSON [`StoredCredential`]) beside the new key; refused if
/// the certificate is not for that key. Response: empty.
pub const STORE: u8 = 0x03;
/// Request: make the new key and credential the device's identity (atomically, in its
/// storage). Response: empty.
pub const CONFIRM: u8 = 0x04;
/// Request: the device's confirmed credential. Response payload: JSON [`StoredCredential`].
pub const READ: u8 = 0x05;
/// Request: sign this challenge (1 to 64 bytes) with the confirmed key. Response payload:
/// ECDSA P-256 signature over SHA-256(challenge), DER.
pub const PROVE: u8 = 0x06;
/// Response: the request failed; payload: UTF-8 message.
pub const ERROR: u8 = 0x7f;
/// Added to a request type to make its response type.
pub const RESPONSE: u8 = 0x80;

/// What a device says of itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Manufacturer serial number.
    pub serial_number: String,
    /// Model.
    pub model: String,
    /// The device id it holds a confirmed credential for, if any.
    pub device_id: Option<String>,
}

/// A credential as stored on the device (PEM texts).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredCredential {
    /// Leaf certificate.
    pub certificate_pem: String,
    /// Leaf + issuing CA.
    pub chain_pem: String,
    /// Trust bundle.
    pub trust_pem: String,
}

/// A protocol failure.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The line failed.
    #[error("serial line: {0}")]
    Io(#[from] std::io::Error),
    /// The frame is damaged.
    #[error("bad frame: {0}")]
    Frame(String),
    /// The device refused the request.
    #[error("the device refused: {0}")]
    Refused(String),
}

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> Result<(), ProtocolError> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_PAYLOAD)
        .ok_or_else(|| ProtocolError::Frame(format!("payload of {} bytes", payload.len())))?;
    let mut frame = Vec::with_capacity(payload.len() + 7);
    frame.push(kind);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    frame.extend_from_slice(&CRC.checksum(&frame).to_be_bytes());
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame: `(type, payload)`.
pub fn read_frame(r: &mut impl Read) -> Result<(u8, Vec<u8>), ProtocolError> {
    let mut head = [0u8; 3];
    r.read_exact(&mut head)?;
    let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::Frame(format!(
            "length {len} over {MAX_PAYLOAD}"
        )));
    }
    let mut rest = vec![0u8; len + 4];
    r.read_exact(&mut rest)?;
    let (payload, crc) = rest.split_at(len);
    let mut digest = CRC.digest();
    digest.update(&head);
    digest.update(payload);
    if digest.finalize().to_be_bytes() != crc {
        return Err(ProtocolError::Frame("CRC mismatch".into()));
    }
    Ok((head[0], payload.to_vec()))
}

/// Sends a request and returns the response payload, or the device's refusal.
pub fn request(
    link: &mut (impl Read + Write),
    kind: u8,
    payload: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    write_frame(link, kind, payload)?;
    let (answer, body) = read_frame(link)?;
    match answer {
        a if a == kind | RESPONSE => Ok(body),
        ERROR => Err(ProtocolError::Refused(
            String::from_utf8_lossy(&body).into_owned(),
        )),
        other => Err(ProtocolError::Frame(format!(
            "answer type {other:#04x} to request {kind:#04x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_damage_is_caught() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STORE, b"hello").unwrap();
        assert_eq!(buf.len(), 3 + 5 + 4);
        let (k, p) = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!((k, p.as_slice()), (STORE, b"hello".as_slice()));
        buf[4] ^= 1;
        assert!(matches!(
            read_frame(&mut buf.as_slice()),
            Err(ProtocolError::Frame(_))
        ));
        assert!(read_frame(&mut &buf[..5]).is_err());
    }
}
