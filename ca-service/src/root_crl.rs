//! The root CA's CRL: it lists the issuing CAs the root signed that are revoked, so that a
//! verifier checking the whole chain (`openssl verify -crl_check_all`) finds a CRL for every
//! CA of it and refuses every certificate below a revoked issuing CA.
//!
//! It is signed where the root key is: by the CA itself when the key is in its data dir, else by
//! the `hallmark-ca` commands given the key (`init` before the key leaves, `issuer revoke`,
//! `issuer rotate`, `issuer root-crl`). Every new one is stored (with the next CRL number of
//! the root, taken in the store like every issuer's) and the CA serves the newest. It carries
//! no issuing distribution point: it covers everything the root signed, so it matches the CDP of
//! every issuing CA whatever base URL that one was made with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::crl::{CrlRequest, RevokedEntry, build_crl_async, crl_window};
use crate::authority::{IssuingCa, ca};
use crate::keys::{KeyFileError, Passphrase, file as keyfile};
use crate::store::{
    IssuerKind, IssuerRecord, IssuerRevocation, IssuerRotation, RootCrlRecord, RootCrlUpdate,
    Store, StoreError,
};

/// Default validity of a root CRL: long enough for a root whose key is kept offline.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// Why a root CRL was not signed.
#[derive(Debug, thiserror::Error)]
pub enum RootCrlError {
    /// The root key is not at hand.
    #[error(
        "signing the CRL of root CA {root} needs the root key, and {} does not exist; give it \
         with --root-key FILE (the key `hallmark-ca init --root-key-out` wrote)",
        path.display()
    )]
    KeyMissing {
        /// The root's id.
        root: String,
        /// Where the key was looked for.
        path: PathBuf,
    },
    /// The key file could not be read.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The key is another one than the root's.
    #[error("{} is not the key of root CA {root} ({subject}); nothing was changed", path.display())]
    WrongKey {
        /// The key file.
        path: PathBuf,
        /// The root's id.
        root: String,
        /// The root's subject.
        subject: String,
    },
    /// The CRL could not be built.
    #[error("cannot sign the CRL of root CA {0}: {1}")]
    Sign(String, String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the root key from `path` and pairs it with `root`, after checking it is its key.
pub fn load_key(
    path: &Path,
    passphrase: Option<&Passphrase>,
    root: &IssuerRecord,
) -> Result<IssuingCa, RootCrlError> {
    if !path.exists() {
        return Err(RootCrlError::KeyMissing {
            root: root.id.clone(),
            path: path.to_owned(),
        });
    }
    let key = keyfile::read_key(path, passphrase)?;
    ca::check_key_matches(&root.cert_der, &key).map_err(|_| RootCrlError::WrongKey {
        path: path.to_owned(),
        root: root.id.clone(),
        subject: root.subject.clone(),
    })?;
    IssuingCa::new(root.id.clone(), root.cert_der.clone(), key)
        .map_err(|e| RootCrlError::Sign(root.id.clone(), e.to_string()))
}

/// Whether the CA certificate `cert_der` was signed by the root `root_der` (issuer name and
/// signature).
pub fn signed_by(cert_der: &[u8], root_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, root))) = (
        X509Certificate::from_der(cert_der),
        X509Certificate::from_der(root_der),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == root.subject().as_raw()
        && cert.verify_signature(Some(root.public_key())).is_ok()
}

/// The root (of `issuers`) that signed the issuing CA `issuing`.
pub fn root_of<'a>(
    issuing: &IssuerRecord,
    issuers: &'a [IssuerRecord],
) -> Option<&'a IssuerRecord> {
    issuers
        .iter()
        .find(|r| r.kind == IssuerKind::Root && signed_by(&issuing.cert_der, &r.cert_der))
}

/// What the CRL of `root` lists at `now`: the revoked issuing CAs of `issuers` it signed that
/// have not expired, in serial order.
pub fn entries(root_der: &[u8], issuers: &[IssuerRecord], now: i64) -> Vec<RevokedEntry> {
    let mut out: Vec<RevokedEntry> = issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Issuing && i.not_after > now)
        .filter_map(|i| Some((i, i.revoked_at?)))
        .filter(|(i, _)| signed_by(&i.cert_der, root_der))
        .filter_map(|(i, at)| {
            Some(RevokedEntry {
                serial: ca::serial_hex_of(&i.cert_der)?,
                revoked_at: at,
                reason: i.revocation_reason,
            })
        })
        .collect();
    out.sort_by(|a, b| a.serial.cmp(&b.serial));
    out
}

/// Ids of every revoked issuing CA of `issuers`, sorted (what the store checks a new root CRL
/// against: [`RootCrlUpdate::revoked_issuers`]).
pub fn revoked_ids(issuers: &[IssuerRecord]) -> Vec<String> {
    let mut ids: Vec<String> = issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Issuing && i.is_revoked())
        .map(|i| i.id.clone())
        .collect();
    ids.sort();
    ids
}

/// The change of the issuers a new root CRL is committed with (in one transaction).
#[derive(Debug, Clone)]
pub enum CommitWith {
    /// The CRL alone.
    Nothing,
    /// An issuing CA rollover: `issuer` becomes the active issuing CA, `retire` is retired.
    Rotation {
        /// The new issuing CA.
        issuer: IssuerRecord,
        /// Id of the issuing CA it replaces.
        retire: String,
        /// Unix seconds.
        at: i64,
        /// Who.
        actor: String,
    },
    /// An issuing CA revocation, which the CRL publishes.
    Revocation {
        /// Id of the issuing CA.
        id: String,
        /// RFC 5280 reason code.
        reason: Option<i64>,
        /// Profiles whose role is `admin` (the last admin guard).
        admin_profiles: Vec<String>,
        /// Particulars for the audit event.
        details: serde_json::Value,
        /// Unix seconds.
        at: i64,
        /// Who.
        actor: String,
    },
}

/// Signs a new CRL of `root` listing what `issuers` says is revoked, valid for `validity`
/// from `now`, and stores it in one transaction with `with` (e.g. the revocation it
/// publishes). `issuers` must be the issuers as they will be once `with` is committed; if the
/// revoked issuing CAs differ at commit time the store refuses with a conflict (sign again
/// with a fresh view).
pub async fn sign(
    store: &dyn Store,
    root: &Arc<IssuingCa>,
    issuers: &[IssuerRecord],
    validity: Duration,
    now: i64,
    actor: &str,
    with: CommitWith,
) -> Result<RootCrlRecord, RootCrlError> {
    let number = store.next_crl_number(&root.id, now).await?;
    let listed = entries(&root.cert_der, issuers, now);
    let der = build_crl_async(
        root,
        &CrlRequest {
            number,
            now,
            validity,
            distribution_point: None,
            entries: &listed,
        },
    )
    .await
    .map_err(|e| RootCrlError::Sign(root.id.clone(), e.to_string()))?;
    let (this_update, next_update) = crl_window(now, validity);
    let record = RootCrlRecord {
        issuer_id: root.id.clone(),
        number,
        this_update,
        next_update,
        entries: listed.len(),
        der,
        signed_at: now,
        signed_by: actor.to_owned(),
    };
    let update = RootCrlUpdate {
        crl: record.clone(),
        revoked_issuers: revoked_ids(issuers),
    };
    match with {
        CommitWith::Nothing => store.store_root_crl(update).await?,
        CommitWith::Rotation {
            issuer,
            retire,
            at,
            actor,
        } => {
            store
                .rotate_issuer(IssuerRotation {
                    issuer,
                    retire,
                    root_crl: Some(update),
                    at,
                    actor,
                })
                .await?
        }
        CommitWith::Revocation {
            id,
            reason,
            admin_profiles,
            details,
            at,
            actor,
        } => {
            store
                .revoke_issuer(IssuerRevocation {
                    id,
                    reason,
                    admin_profiles,
                    root_crl: update,
                    details,
                    at,
                    actor,
                })
                .await?
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::ca::{create_issuing, create_root};
    use crate::authority::crl::build_crl;
    use crate::revocation::check::check_crl;

    const DAY: Duration = Duration::from_secs(86_400);

    fn record(kind: IssuerKind, id: &str, der: Vec<u8>, revoked_at: Option<i64>) -> IssuerRecord {
        let (not_before, not_after) = ca::validity(&der).unwrap();
        IssuerRecord {
            id: id.into(),
            kind,
            subject: String::new(),
            cert_der: der,
            not_before,
            not_after,
            active: false,
            revoked_at,
            revocation_reason: revoked_at.map(|_| 2),
        }
    }

    #[test]
    fn only_revoked_unexpired_issuing_cas_of_this_root_are_listed() {
        let now = 1_800_000_000;
        let (root, root_key) = create_root("T", now, DAY * 100).unwrap();
        let (other_root, other_key) = create_root("T", now, DAY * 100).unwrap();
        let root_ca = IssuingCa::new("root-a".into(), root.clone(), root_key).unwrap();
        let issuing = |lifetime| {
            ca::create_issuing_under(&root_ca, "T", now, lifetime, None)
                .unwrap()
                .0
        };
        let revoked = issuing(DAY * 10);
        let short = issuing(DAY);
        let kept = issuing(DAY * 10);
        let (foreign, _) = create_issuing(&other_root, other_key, "T", now, DAY * 10).unwrap();
        let issuers = vec![
            record(IssuerKind::Root, "root-a", root.clone(), None),
            record(IssuerKind::Issuing, "issuing-1", revoked.clone(), Some(now)),
            record(IssuerKind::Issuing, "issuing-2", short, Some(now)),
            record(IssuerKind::Issuing, "issuing-3", kept, None),
            record(IssuerKind::Issuing, "issuing-4", foreign, Some(now)),
        ];
        let later = now + 2 * 86_400;
        let listed = entries(&root, &issuers, later);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(Some(listed[0].serial.clone()), ca::serial_hex_of(&revoked));
        assert_eq!(listed[0].reason, Some(2));
        assert_eq!(
            revoked_ids(&issuers),
            ["issuing-1", "issuing-2", "issuing-4"]
        );
        assert!(root_of(&issuers[1], &issuers).is_some_and(|r| r.id == "root-a"));
        assert!(root_of(&issuers[4], &issuers).is_none());

        // The CRL verifies with the root and lists the serial as the agent reads serials.
        let der = build_crl(
            &root_ca,
            &CrlRequest {
                number: 7,
                now: later,
                validity: DAY * 30,
                distribution_point: None,
                entries: &listed,
            },
        )
        .unwrap();
        let checked = check_crl(&der, std::slice::from_ref(&root), later).unwrap();
        assert_eq!(checked.number, 7);
        assert_eq!(checked.serials, [listed[0].serial.clone()]);
        assert!(checked.distribution_points.is_empty() && checked.root);
    }
}
