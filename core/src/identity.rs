//! Names that end up in certificates and in the registry: device ids, zones, lots, credential
//! names. One grammar for all of them, `[a-z0-9][a-z0-9._-]{0,63}`, so a name is always safe as
//! a path component, an MQTT username and a DN attribute.

use std::fmt;

/// Longest accepted name, in bytes (all accepted characters are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} is empty; use 1 to 64 characters from a-z 0-9 . _ -")]
    Empty {
        /// What the name is for (`device id`, `zone`, ...).
        kind: &'static str,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("{kind} `{shown}` is {len} characters long; at most 64 are allowed")]
    TooLong {
        /// What the name is for.
        kind: &'static str,
        /// The first characters of the name.
        shown: String,
        /// Its length.
        len: usize,
    },
    /// The name contains a character outside the grammar or starts with a punctuation mark.
    #[error(
        "{kind} `{shown}` has {what} at position {position}; use lower-case a-z, 0-9 and . _ - (first character a letter or digit)"
    )]
    BadCharacter {
        /// What the name is for.
        kind: &'static str,
        /// The name, escaped for display.
        shown: String,
        /// Description of the offending character.
        what: String,
        /// 1-based position of the offending character.
        position: usize,
    },
}

/// Checks `value` against the name grammar; `kind` names it in the error (`device id`, `zone`).
pub fn validate_name(kind: &'static str, value: &str) -> Result<(), NameError> {
    let shown: String = value.escape_default().take(80).collect();
    if value.is_empty() {
        return Err(NameError::Empty { kind });
    }
    let len = value.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong { kind, shown, len });
    }
    for (i, c) in value.chars().enumerate() {
        let ok =
            c.is_ascii_lowercase() || c.is_ascii_digit() || (i > 0 && matches!(c, '.' | '_' | '-'));
        if !ok {
            let what = if c.is_ascii_uppercase() {
                format!("upper-case `{c}`")
            } else {
                format!("`{}`", c.escape_default())
            };
            return Err(NameError::BadCharacter {
                kind,
                shown,
                what,
                position: i + 1,
            });
        }
    }
    Ok(())
}

/// A validated device id (also used for credential names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// Validates and wraps a device id.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        validate_name("device id", value)?;
        Ok(Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in ["a", "sensor-0001", "gw.hall-3_b", &"x".repeat(64)] {
            assert!(DeviceId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_falls_outside() {
        let cases = [
            ("", "is empty"),
            ("../x", "`.` at position 1"),
            ("Sensor", "upper-case `S` at position 1"),
            ("a/b", "`/` at position 2"),
            ("-a", "position 1"),
        ];
        for (bad, want) in cases {
            let err = DeviceId::parse(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
        let long = "x".repeat(65);
        let err = DeviceId::parse(&long).unwrap_err().to_string();
        assert!(err.contains("65 characters"), "{err}");
    }
}
