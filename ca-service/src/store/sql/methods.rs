//! The [`Store`] methods of both backends: reads query the pool (`reads`); each write becomes one
//! writer op (several in a [`WriteOp::All`] for the composites), and its output the typed result.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

use super::writer::{WriteOp, WriteOutput};
use super::{SHARED, SqlStore, lifecycle, lock_crl_build, reads};
use crate::audit::AuditEvent;
use crate::store::interface::{
    CertificateStatusUpdate, CrlBuildLock, DeviceStatusUpdate, InitialHierarchy, IssuanceRecord,
    IssuanceRule, IssuerRevocation, IssuerRotation, Recorded, Registration, RootCrlUpdate,
    StatusChangeRequest, Store,
};
use crate::store::{
    CallerCertificate, CertFilter, CertSelector, CertificateRecord, CountedTable, DeviceFilter,
    DeviceRecord, EnrollFailure, IssuerRecord, IssuingCrlRecord, ManufacturerCaRecord, NewDevice,
    Operators, Page, RevocationStatus, RootCrlRecord, Selection, StatusBatch, StatusChange,
    StoreError, TokenRecord,
};

#[async_trait]
impl Store for SqlStore {
    fn status_changes(&self) -> broadcast::Receiver<Arc<StatusBatch>> {
        self.feed.subscribe()
    }

    fn is_shared(&self) -> bool {
        SHARED
    }

    fn remote_changes(&self) -> watch::Receiver<u64> {
        self.remote.clone()
    }

    fn caller_generation(&self) -> u64 {
        // Both counters only grow, so their sum moves whenever either does.
        self.generation
            .load(std::sync::atomic::Ordering::Acquire)
            .wrapping_add(*self.remote.borrow())
    }

    async fn status_version(&self) -> Result<i64, StoreError> {
        reads::status_version(&self.pool).await
    }

    async fn issuing_crl(&self, issuer_id: &str) -> Result<Option<IssuingCrlRecord>, StoreError> {
        reads::issuing_crl(&self.pool, issuer_id).await
    }

    async fn store_issuing_crl(&self, crl: IssuingCrlRecord) -> Result<(), StoreError> {
        let replica = self.replica;
        self.submit(WriteOp::StoreIssuingCrl { crl, replica })
            .await
            .map(drop)
    }

    async fn enroll_throttled(
        &self,
        peer: &str,
        now: i64,
        window: i64,
        max_failures: i64,
    ) -> Result<Option<i64>, StoreError> {
        reads::enroll_throttled(&self.pool, peer, now, window, max_failures).await
    }

    async fn record_enroll_failure(&self, failure: EnrollFailure) -> Result<bool, StoreError> {
        match self
            .submit(WriteOp::RecordEnrollFailure { failure })
            .await?
        {
            WriteOutput::Flag(started) => Ok(started),
            other => Err(unexpected(other)),
        }
    }

    async fn lock_crl_build(&self, issuer_id: &str) -> Result<CrlBuildLock, StoreError> {
        lock_crl_build(&self.pool, issuer_id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        reads::ping(&self.pool).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        reads::issuers(&self.pool).await
    }

    async fn root_crl(&self, issuer_id: &str) -> Result<Option<RootCrlRecord>, StoreError> {
        reads::root_crl(&self.pool, issuer_id).await
    }

    async fn root_crl_numbers(&self) -> Result<Vec<(String, u64)>, StoreError> {
        reads::root_crl_numbers(&self.pool).await
    }

    async fn valid_certificates_of(&self, issuer_id: &str, now: i64) -> Result<i64, StoreError> {
        reads::valid_certificates_of(&self.pool, issuer_id, now).await
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        reads::device(&self.pool, id).await
    }

    async fn device_by_serial_number(
        &self,
        serial_number: &str,
        manufacturer: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        reads::device_by_serial_number(&self.pool, serial_number, manufacturer).await
    }

    async fn list_devices(
        &self,
        filter: &DeviceFilter,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<DeviceRecord>, Option<String>), StoreError> {
        reads::list_devices(&self.pool, filter, after, limit).await
    }

    async fn token(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
        reads::token(&self.pool, hash).await
    }

    async fn manufacturer_cas(&self) -> Result<Vec<ManufacturerCaRecord>, StoreError> {
        reads::manufacturer_cas(&self.pool).await
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        reads::certificate(&self.pool, serial).await
    }

    async fn certificate_of_caller(
        &self,
        serial: &str,
    ) -> Result<Option<CallerCertificate>, StoreError> {
        reads::certificate_of_caller(&self.pool, serial).await
    }

    async fn revocation_entries(
        &self,
        issuer_id: &str,
        now: i64,
    ) -> Result<Vec<RevocationStatus>, StoreError> {
        reads::revocation_entries(&self.pool, issuer_id, now).await
    }

    async fn list_certificates(
        &self,
        filter: &CertFilter,
        after: i64,
        limit: u32,
    ) -> Result<Page<CertificateRecord>, StoreError> {
        reads::list_certificates(&self.pool, filter, after, limit).await
    }

    async fn certificates_selected(
        &self,
        selector: &CertSelector,
        change: StatusChange,
        operators: &Operators,
        now: i64,
    ) -> Result<Selection<CertificateRecord>, StoreError> {
        lifecycle::certificates_selected(&self.pool, selector, change, operators, now).await
    }

    async fn audit_events(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, AuditEvent, Vec<u8>, Vec<u8>)>, StoreError> {
        reads::audit_events(&self.pool, after, limit).await
    }

    async fn count(&self, table: CountedTable) -> Result<i64, StoreError> {
        reads::count(&self.pool, table).await
    }

    async fn record_issuance(&self, issuance: IssuanceRecord) -> Result<Recorded, StoreError> {
        let IssuanceRecord {
            device,
            cert,
            actor,
            rule,
            audit,
        } = issuance;
        let cert = Box::new(cert);
        let issue = match rule {
            // Alone, the one op group commit batches on its fast path.
            IssuanceRule::Plain => WriteOp::Issue {
                device,
                cert,
                actor,
            },
            IssuanceRule::ReplaceActive => WriteOp::IssueReplacing {
                device,
                cert,
                actor,
            },
            IssuanceRule::ConsumeToken { token_hash } => WriteOp::Enroll {
                token_hash,
                device,
                cert,
                actor,
            },
            IssuanceRule::Limited {
                supersedes,
                min_interval,
                key_compromise,
            } => WriteOp::IssueLimited {
                supersedes,
                min_interval,
                key_compromise,
                device,
                cert,
                actor,
            },
        };
        let op = if audit.is_empty() {
            issue
        } else {
            WriteOp::All(
                std::iter::once(issue)
                    .chain(audit.into_iter().map(WriteOp::Audit))
                    .collect(),
            )
        };
        let mut recorded = Recorded::default();
        collect_recorded(self.submit(op).await?, &mut recorded);
        Ok(recorded)
    }

    async fn record_initial_hierarchy(&self, initial: InitialHierarchy) -> Result<(), StoreError> {
        let InitialHierarchy {
            root,
            issuing,
            certificates,
            at,
            actor,
        } = initial;
        let mut ops = Vec::with_capacity(3 + certificates.len());
        ops.push(WriteOp::ExpectNoIssuers);
        for issuer in [root, issuing] {
            ops.push(WriteOp::AddIssuer {
                issuer,
                at,
                actor: actor.clone(),
            });
        }
        ops.extend(certificates.into_iter().map(|c| WriteOp::Issue {
            device: c.device,
            cert: Box::new(c.cert),
            actor: actor.clone(),
        }));
        self.submit(WriteOp::All(ops)).await.map(drop)
    }

    async fn mark_authenticated(&self, serial: &str, at: i64) -> Result<(), StoreError> {
        let serial = serial.to_owned();
        self.submit(WriteOp::MarkAuthenticated { serial, at })
            .await
            .map(drop)
    }

    async fn change_status(
        &self,
        change: StatusChangeRequest,
    ) -> Result<Vec<RevocationStatus>, StoreError> {
        let StatusChangeRequest {
            selector,
            change,
            operators,
            at,
            actor,
        } = change;
        let op = WriteOp::ChangeStatus {
            selector,
            change,
            operators,
            at,
            actor,
        };
        status_changed(self.submit(op).await?)
    }

    async fn set_certificate_status(
        &self,
        update: CertificateStatusUpdate,
    ) -> Result<RevocationStatus, StoreError> {
        let CertificateStatusUpdate {
            serial,
            status,
            reason,
            at,
            actor,
        } = update;
        let op = WriteOp::SetCertificateStatus {
            serial,
            status,
            reason,
            at,
            actor,
        };
        let mut changed = status_changed(self.submit(op).await?)?;
        match changed.pop() {
            Some(one) if changed.is_empty() => Ok(one),
            _ => Err(StoreError::Invalid(
                "a certificate status change changed other than one certificate".into(),
            )),
        }
    }

    async fn next_crl_number(&self, issuer_id: &str, at: i64) -> Result<u64, StoreError> {
        let issuer_id = issuer_id.to_owned();
        match self
            .submit(WriteOp::NextCrlNumber { issuer_id, at })
            .await?
        {
            WriteOutput::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn rotate_issuer(&self, rotation: IssuerRotation) -> Result<(), StoreError> {
        let IssuerRotation {
            issuer,
            retire,
            root_crl,
            at,
            actor,
        } = rotation;
        let mut ops = vec![
            WriteOp::AddIssuer {
                issuer,
                at,
                actor: actor.clone(),
            },
            WriteOp::RetireIssuer {
                id: retire,
                at,
                actor,
            },
        ];
        ops.extend(root_crl.map(store_root_crl_op));
        self.submit(WriteOp::All(ops)).await.map(drop)
    }

    async fn revoke_issuer(&self, revocation: IssuerRevocation) -> Result<(), StoreError> {
        let IssuerRevocation {
            id,
            reason,
            admin_profiles,
            root_crl,
            details,
            at,
            actor,
        } = revocation;
        let revoke = WriteOp::RevokeIssuer {
            id,
            reason,
            admin_profiles,
            at,
            actor,
            details,
        };
        let ops = vec![revoke, store_root_crl_op(root_crl)];
        self.submit(WriteOp::All(ops)).await.map(drop)
    }

    async fn store_root_crl(&self, update: RootCrlUpdate) -> Result<(), StoreError> {
        self.submit(store_root_crl_op(update)).await.map(drop)
    }

    async fn register_devices(
        &self,
        devices: Vec<NewDevice>,
        at: i64,
        actor: &str,
    ) -> Result<Registration, StoreError> {
        let actor = actor.to_owned();
        match self
            .submit(WriteOp::RegisterDevices { devices, at, actor })
            .await?
        {
            WriteOutput::Registered {
                registered,
                rejected,
            } => Ok(Registration {
                registered,
                rejected,
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn set_device_status(
        &self,
        update: DeviceStatusUpdate,
    ) -> Result<Vec<RevocationStatus>, StoreError> {
        let DeviceStatusUpdate {
            id,
            status,
            admin_profiles,
            at,
            actor,
        } = update;
        let op = WriteOp::SetDeviceStatus {
            id,
            status,
            admin_profiles,
            at,
            actor,
        };
        status_changed(self.submit(op).await?)
    }

    async fn readmit_device(&self, id: &str, at: i64, actor: &str) -> Result<(), StoreError> {
        let (id, actor) = (id.to_owned(), actor.to_owned());
        self.submit(WriteOp::ReadmitDevice { id, at, actor })
            .await
            .map(drop)
    }

    async fn create_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.submit(WriteOp::CreateToken { token }).await.map(drop)
    }

    async fn revoke_tokens(
        &self,
        device_id: &str,
        at: i64,
        actor: &str,
    ) -> Result<u64, StoreError> {
        let (device_id, actor) = (device_id.to_owned(), actor.to_owned());
        match self
            .submit(WriteOp::RevokeTokens {
                device_id,
                at,
                actor,
            })
            .await?
        {
            WriteOutput::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn add_manufacturer_ca(
        &self,
        record: ManufacturerCaRecord,
        actor: &str,
    ) -> Result<(), StoreError> {
        let actor = actor.to_owned();
        self.submit(WriteOp::AddManufacturerCa { record, actor })
            .await
            .map(drop)
    }

    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.submit(WriteOp::Audit(event)).await.map(drop)
    }
}

fn store_root_crl_op(update: RootCrlUpdate) -> WriteOp {
    WriteOp::StoreRootCrl {
        crl: update.crl,
        revoked_issuers: update.revoked_issuers,
    }
}

/// Gathers what the ops of an issuance report (their order is the order of the changes).
fn collect_recorded(out: WriteOutput, into: &mut Recorded) {
    match out {
        WriteOutput::Issued { device_registered } => into.device_registered |= device_registered,
        WriteOutput::StatusChanged(changed) => into.changed.extend(changed),
        WriteOutput::All(outs) => outs.into_iter().for_each(|o| collect_recorded(o, into)),
        WriteOutput::Registered { .. }
        | WriteOutput::Count(_)
        | WriteOutput::Flag(_)
        | WriteOutput::Done => {}
    }
}

fn status_changed(out: WriteOutput) -> Result<Vec<RevocationStatus>, StoreError> {
    match out {
        WriteOutput::StatusChanged(changed) => Ok(changed),
        other => Err(unexpected(other)),
    }
}

/// An op answered with an output of another op: a bug of this module, never the caller's.
fn unexpected(out: WriteOutput) -> StoreError {
    StoreError::Invalid(format!("unexpected writer output {out:?}"))
}
