//! Distinguished names as text: RFC 4514 strings, the form `openssl x509 -nameopt RFC2253`
//! prints and LDAP tools read.
//!
//! Hand-written because x509-parser's `Display` for names is its own format (first RDN first,
//! `, ` separators, no escaping), and the API promises RFC 4514.

use x509_parser::der_parser::asn1_rs::ToDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// The RFC 4514 string of a certificate's subject (`OU=field,O=ACME,CN=sensor-1`), or `None`
/// when the DER does not parse.
pub fn rfc4514_subject(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    Some(rfc4514(cert.subject()))
}

/// The RFC 4514 string of `name`: RDNs last to first, `,` between RDNs and `+` inside one,
/// short names for the attribute types RFC 4514 lists, dotted OIDs with a `#`-hex value for
/// the others and for values that are not strings.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let short = short_name(&oid);
                    match (short, atv.as_str()) {
                        (Some(short), Ok(value)) => format!("{short}={}", escape(value)),
                        _ => format!(
                            "{oid}=#{}",
                            hex::encode(atv.attr_value().to_der_vec().unwrap_or_default())
                        ),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The short names of RFC 4514 section 3.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Escapes an attribute value (RFC 4514 section 2.4).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_what_rfc4514_says() {
        assert_eq!(escape("ACME, Plant+4"), r"ACME\, Plant\+4");
        assert_eq!(escape("#1 plant "), r"\#1 plant\ ");
        assert_eq!(escape(r#"a"b\c;d<e>f"#), r#"a\"b\\c\;d\<e\>f"#);
        assert_eq!(escape("sensor-0001"), "sensor-0001");
    }
}
