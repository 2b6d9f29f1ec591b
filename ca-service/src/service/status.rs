//! Revoke, suspend and resume certificates by serial, device, lot, zone or profile, with a dry
//! run that shows what would change. The CRL publisher hears of every change from the store's
//! status feed.

use std::collections::HashSet;

use super::{Caller, Service, ServiceResult};
use crate::authority::profile::Role;
use crate::store::{CertSelector, CertificateRecord, StatusChange, StatusChangeRequest};

/// A status change asked for.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    /// Which certificates.
    pub selector: CertSelector,
    /// What to do with them.
    pub change: StatusChange,
    /// Whether a lot, zone or profile selection also takes operator credentials.
    pub include_operators: bool,
    /// Only say what would change.
    pub dry_run: bool,
}

/// What a status change did (or would do).
#[derive(Debug, Clone)]
pub struct ChangeOutcome {
    /// The certificates changed (with their new status), or that would change.
    pub certificates: Vec<CertificateRecord>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Operator credentials the selection left out.
    pub operators_left_out: u32,
    /// Certificates held with their device that the selection left out.
    pub device_holds_left_out: u32,
}

impl Service {
    /// Changes the status of every certificate `req` selects (admins only); `rpc` names the
    /// call in refusals and logs.
    pub async fn change_status(
        &self,
        caller: &Caller,
        req: ChangeRequest,
        rpc: &str,
    ) -> ServiceResult<ChangeOutcome> {
        caller.require(&[Role::Admin], rpc)?;
        let ChangeRequest {
            selector,
            change,
            include_operators,
            dry_run,
        } = req;
        let now = self.clock().now();
        let operators = self.operators(include_operators);
        let selection = self
            .store
            .certificates_selected(&selector, change, &operators, now)
            .await?;
        let (operators_left_out, device_holds_left_out) = (
            selection.operators_left_out,
            selection.device_holds_left_out,
        );
        let matching = selection.certificates;
        if dry_run {
            return Ok(ChangeOutcome {
                certificates: matching,
                dry_run: true,
                operators_left_out,
                device_holds_left_out,
            });
        }
        let changed = self
            .store
            .change_status(StatusChangeRequest {
                selector: selector.clone(),
                change,
                operators,
                at: now,
                actor: caller.actor(),
            })
            .await?;
        // The CRL publisher hears of the change from the store's status feed.
        let changed: HashSet<String> = changed.into_iter().map(|c| c.serial).collect();
        let (revoked_at, reason) = match change {
            StatusChange::Resume => (None, None),
            _ => (Some(now), change.reason()),
        };
        let certificates = matching
            .into_iter()
            .filter(|c| changed.contains(&c.serial))
            .map(|mut c| {
                c.status = change.to_status();
                c.revoked_at = revoked_at;
                c.revocation_reason = reason;
                c
            })
            .collect::<Vec<_>>();
        tracing::info!(
            selector = selector.kind(),
            value = selector.value(),
            count = certificates.len(),
            operators_left_out,
            device_holds_left_out,
            "{rpc}"
        );
        Ok(ChangeOutcome {
            certificates,
            dry_run: false,
            operators_left_out,
            device_holds_left_out,
        })
    }
}
