//! Audit events, hash-chained: each row's hash covers the previous row's hash and the event, so
//! deleting or editing a row breaks the chain from there on. Written by the store in the same
//! transaction as the state change they describe.

use aws_lc_rs::digest;

/// Hash "before" the first event.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// One audited state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Who did it: `<name>/<serial>` of the caller's certificate, or `system`.
    pub actor: String,
    /// What was done, e.g. `certificate.issue`.
    pub action: String,
    /// What it was done to, e.g. a serial or device id.
    pub target: String,
    /// JSON object with the particulars.
    pub details: String,
}

impl AuditEvent {
    /// Builds an event with JSON details.
    pub fn new(
        at: i64,
        actor: impl Into<String>,
        action: &str,
        target: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            at,
            actor: actor.into(),
            action: action.to_owned(),
            target: target.into(),
            details: details.to_string(),
        }
    }

    /// `SHA-256(prev || len-prefixed fields)`: length prefixes make the encoding unambiguous.
    pub fn chain_hash(&self, prev: &[u8]) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(prev);
        ctx.update(&self.at.to_be_bytes());
        for field in [&self.actor, &self.action, &self.target, &self.details] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field_and_the_previous_hash() {
        let e = AuditEvent::new(1, "a", "x.y", "t", serde_json::json!({"k": 1}));
        let h = e.chain_hash(&GENESIS_HASH);
        assert_ne!(h, e.chain_hash(&[1u8; 32]));
        let mut e2 = e.clone();
        e2.target = "u".into();
        assert_ne!(h, e2.chain_hash(&GENESIS_HASH));
        // Moving bytes between fields must change the hash.
        let a = AuditEvent::new(1, "ab", "c", "t", serde_json::json!({}));
        let b = AuditEvent::new(1, "a", "bc", "t", serde_json::json!({}));
        assert_ne!(a.chain_hash(&GENESIS_HASH), b.chain_hash(&GENESIS_HASH));
    }
}
