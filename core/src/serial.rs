//! Certificate serial numbers as text.

/// Hex of a DER INTEGER's content without leading zero bytes: how serials are stored.
pub fn serial_hex(raw: &[u8]) -> String {
    let trimmed = match raw.iter().position(|b| *b != 0) {
        Some(i) => &raw[i..],
        None => &raw[raw.len().saturating_sub(1)..],
    };
    hex::encode(trimmed)
}

#[cfg(test)]
mod tests {
    use super::serial_hex;

    #[test]
    fn serial_hex_drops_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x41, 0x02]), "4102");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
