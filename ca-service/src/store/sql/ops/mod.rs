//! One write at a time: the SQL of every [`WriteOp`], run inside a savepoint by the writer,
//! one module per group of operations.

mod audit;
mod devices;
mod issuance;
mod issuers;
mod manufacturers;
mod status;
mod tokens;

use super::Conn;
use super::lifecycle::{readmit_device, set_device_status};
use super::writer::{WriteOp, WriteOutput};
use crate::store::StoreError;

pub(crate) use audit::{audit, audit_many, last_audit_hash};
pub(crate) use devices::{SkipConflicts, insert_devices};
pub(crate) use issuance::{check_claim, device_registered_event, issued_event, scope_json};
pub(crate) use issuers::next_status_version;

/// Applies one write inside the caller's savepoint.
pub(super) async fn apply(
    conn: &mut Conn,
    op: &WriteOp,
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    match op {
        WriteOp::All(ops) => all(conn, ops, chain).await,
        WriteOp::Issue {
            device,
            cert,
            actor,
        } => issuance::issue(conn, device, cert, actor, chain).await,
        WriteOp::IssueReplacing {
            device,
            cert,
            actor,
        } => issuance::issue_replacing(conn, device, cert, actor, chain).await,
        WriteOp::Enroll {
            token_hash,
            device,
            cert,
            actor,
        } => issuance::enroll(conn, token_hash, device, cert, actor, chain).await,
        WriteOp::IssueLimited {
            supersedes,
            min_interval,
            key_compromise,
            device,
            cert,
            actor,
        } => {
            let op = issuance::IssueLimited {
                supersedes: supersedes.as_deref(),
                min_interval: *min_interval,
                key_compromise: *key_compromise,
                device,
                cert,
                actor,
            };
            issuance::issue_limited(conn, op, chain).await
        }
        WriteOp::MarkAuthenticated { serial, at } => {
            status::mark_authenticated(conn, serial, *at).await
        }
        WriteOp::ChangeStatus {
            selector,
            change,
            operators,
            at,
            actor,
        } => status::change_status(conn, selector, *change, operators, *at, actor, chain).await,
        WriteOp::SetCertificateStatus {
            serial,
            status,
            reason,
            at,
            actor,
        } => {
            status::set_certificate_status(conn, serial, *status, *reason, *at, actor, chain).await
        }
        WriteOp::ExpectNoIssuers => issuers::expect_no_issuers(conn).await,
        WriteOp::AddIssuer { issuer, at, actor } => {
            issuers::add_issuer(conn, issuer, *at, actor, chain).await
        }
        WriteOp::RetireIssuer { id, at, actor } => {
            issuers::retire_issuer(conn, id, *at, actor, chain).await
        }
        WriteOp::RevokeIssuer {
            id,
            reason,
            admin_profiles,
            at,
            actor,
            details,
        } => {
            issuers::revoke_issuer(
                conn,
                id,
                *reason,
                admin_profiles,
                *at,
                actor,
                details,
                chain,
            )
            .await
        }
        WriteOp::StoreRootCrl {
            crl,
            revoked_issuers,
        } => issuers::store_root_crl(conn, crl, revoked_issuers, chain).await,
        WriteOp::RecordEnrollFailure { failure } => {
            tokens::record_enroll_failure(conn, failure, chain).await
        }
        WriteOp::StoreIssuingCrl { crl, replica } => {
            issuers::store_issuing_crl(conn, crl, *replica).await
        }
        WriteOp::NextCrlNumber { issuer_id, at } => {
            issuers::next_crl_number(conn, issuer_id, *at).await
        }
        WriteOp::RegisterDevices { devices, at, actor } => {
            devices::register_devices(conn, devices, *at, actor, chain).await
        }
        WriteOp::SetDeviceStatus {
            id,
            status,
            admin_profiles,
            at,
            actor,
        } => set_device_status(conn, id, *status, admin_profiles, *at, actor, chain).await,
        WriteOp::ReadmitDevice { id, at, actor } => {
            readmit_device(conn, id, *at, actor, chain).await
        }
        WriteOp::CreateToken { token } => tokens::create_token(conn, token, chain).await,
        WriteOp::RevokeTokens {
            device_id,
            at,
            actor,
        } => tokens::revoke_tokens(conn, device_id, *at, actor, chain).await,
        WriteOp::AddManufacturerCa { record, actor } => {
            manufacturers::add_manufacturer_ca(conn, record, actor, chain).await
        }
        WriteOp::Audit(event) => {
            audit(conn, event, chain).await?;
            Ok(WriteOutput::Done)
        }
    }
}

/// Several writes, all or nothing (the caller's savepoint); no nesting.
async fn all(
    conn: &mut Conn,
    ops: &[WriteOp],
    chain: &mut [u8; 32],
) -> Result<WriteOutput, StoreError> {
    let mut outs = Vec::with_capacity(ops.len());
    for op in ops {
        if matches!(op, WriteOp::All(_)) {
            return Err(StoreError::Invalid("nested WriteOp::All".into()));
        }
        outs.push(Box::pin(apply(conn, op, chain)).await?);
    }
    Ok(WriteOutput::All(outs))
}

/// A unique-constraint violation as [`StoreError::Duplicate`] with `msg`; any other error as is.
pub(crate) fn unique_or(e: sqlx::Error, msg: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate(msg()),
        _ => StoreError::Database(e),
    }
}
