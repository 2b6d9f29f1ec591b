//! The few DER operations the CRL splice needs: reading one element's header and writing one.
//! Hand-written because no DER crate here (yasna, x509-parser) writes a SEQUENCE around bytes
//! that are already encoded without holding them as values first, and a CRL of a million
//! entries held as values costs half a second and hundreds of megabytes per build. Only
//! definite lengths occur: every input is rcgen's or this module's own DER.

/// Tag of a SEQUENCE.
pub const SEQUENCE: u8 = 0x30;
/// Tag of a BIT STRING.
pub const BIT_STRING: u8 = 0x03;

/// The tag, the header's length and the content's length of the element at the start of
/// `der`; `None` unless it is a single-byte tag with a definite length that fits in `der`.
pub fn header(der: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > std::mem::size_of::<usize>() {
            return None;
        }
        let bytes = der.get(2..2 + n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, len)
    };
    (tag & 0x1f != 0x1f && der.len() >= header.checked_add(len)?).then_some((tag, header, len))
}

/// Appends the header of an element with `tag` and `len` content bytes.
pub fn write_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// The length of the header [`write_header`] writes for `len` content bytes.
pub fn header_len(len: usize) -> usize {
    if len < 0x80 {
        2
    } else {
        2 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_as_written() {
        for len in [0, 1, 127, 128, 255, 256, 65_535, 65_536, 50_000_000] {
            let mut out = Vec::new();
            write_header(&mut out, SEQUENCE, len);
            assert_eq!(out.len(), header_len(len), "{len}");
            out.resize(out.len() + len, 0);
            assert_eq!(
                header(&out),
                Some((SEQUENCE, header_len(len), len)),
                "{len}"
            );
        }
        // Truncated, indefinite, or a multi-byte tag: refused.
        assert_eq!(header(&[0x30, 0x05, 0]), None);
        assert_eq!(header(&[0x30, 0x80]), None);
        assert_eq!(header(&[0x1f, 0x01, 0]), None);
        assert_eq!(header(&[0x30]), None);
    }
}
