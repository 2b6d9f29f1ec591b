//! The station: provisions every device of a lot through a target, several at a time, each
//! step journaled, and reports what happened to every unit.
//!
//! Per device: register it with its lot (or check the registry entry it has), obtain a key at
//! the target and a CSR, have the CA issue (replacing any other certificate of the device, so
//! that it ends with exactly one active), journal the certificate, inject it, read it back and
//! check it, journal the device as done.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use hallmark_core::client::{Connection, status_error};
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::devices_client::DevicesClient;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::credential::Credential;
use crate::journal::{DeviceState, Journal};
use crate::manifest::{DeviceEntry, Manifest};
use crate::report::{DeviceReport, LotReport, Outcome};
use crate::target::{Target, TargetError};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Everything a run needs.
pub struct Station {
    /// The lot.
    pub manifest: Manifest,
    /// Where identities go.
    pub target: Arc<dyn Target>,
    /// The lot's journal.
    pub journal: Arc<Journal>,
    /// Devices provisioned at once.
    pub workers: usize,
}

/// One device's context, cheap to clone into a worker.
#[derive(Clone)]
struct Worker {
    ca: CertificateAuthorityClient<Channel>,
    devices: DevicesClient<Channel>,
    target: Arc<dyn Target>,
    journal: Arc<Journal>,
    lot: String,
    /// The trust bundle the station verifies the CA with: every trust bundle it injects must
    /// chain to it (a new root is an operator's decision, not the CA's answer).
    trusted_pem: Arc<Vec<u8>>,
}

impl Station {
    /// Provisions the lot over `conn` (a provisioner or admin credential). `progress` is told
    /// of every finished device.
    pub async fn run(
        self,
        conn: &Connection,
        progress: impl Fn(&DeviceReport),
    ) -> anyhow::Result<LotReport> {
        let trusted_path = conn.trust_bundle_path()?;
        let trusted_pem = std::fs::read(trusted_path)
            .map_err(|e| anyhow::anyhow!("reading trust bundle {}: {e}", trusted_path.display()))?;
        let channel = conn.channel().await?;
        let lot = self.manifest.lot_id.clone();
        let worker = Worker {
            trusted_pem: Arc::new(trusted_pem),
            ca: CertificateAuthorityClient::new(channel.clone()),
            devices: DevicesClient::new(channel),
            target: self.target.clone(),
            journal: self.journal.clone(),
            lot: lot.clone(),
        };
        let started = Instant::now();
        let started_at = now();
        let mut entries = Vec::with_capacity(self.manifest.devices.len());
        let mut runs = futures::stream::iter(self.manifest.devices.into_iter().map(|d| {
            let w = worker.clone();
            async move { w.provision(d).await }
        }))
        .buffer_unordered(self.workers.max(1));
        while let Some(report) = runs.next().await {
            progress(&report);
            entries.push(report);
        }
        entries.sort_by_key(|e| e.line);
        Ok(LotReport::new(
            lot,
            self.target.describe(),
            started_at,
            started.elapsed(),
            entries,
        ))
    }
}

/// A failure of one device, worded for the lot report.
type Failure = String;

impl Worker {
    async fn provision(self, device: DeviceEntry) -> DeviceReport {
        let span = tracing::info_span!("provision", device = %device.device_id);
        self.provision_in_span(device).instrument(span).await
    }

    async fn provision_in_span(self, device: DeviceEntry) -> DeviceReport {
        let start = Instant::now();
        let report = |outcome, serial: Option<String>, error: Option<String>| DeviceReport {
            device_id: device.device_id.clone(),
            line: device.line,
            outcome,
            serial,
            error,
            millis: start.elapsed().as_millis() as u64,
        };
        match self.journal.state(&device.device_id).cloned() {
            Some(DeviceState::Done { serial, .. }) => {
                return report(Outcome::Skipped, Some(serial), None);
            }
            Some(DeviceState::Issued {
                serial,
                chain_pem,
                trust_pem,
            }) => {
                // Interrupted after the CA answered: finish with that certificate if the target
                // still has (or can take) it; otherwise start afresh below.
                let credential = Credential {
                    serial,
                    chain_pem,
                    trust_pem,
                };
                if self.check_trust(&credential.trust_pem).is_ok()
                    && let Ok(serial) = self.complete(&device, &credential, start, true).await
                {
                    return report(Outcome::Ok, Some(serial), None);
                }
            }
            _ => {}
        }
        match self.fresh(&device, start).await {
            Ok(serial) => report(Outcome::Ok, Some(serial), None),
            Err(error) => {
                tracing::warn!(%error, "device failed");
                if let Err(e) = self
                    .journal(
                        &device.device_id,
                        DeviceState::Failed {
                            error: error.clone(),
                        },
                    )
                    .await
                {
                    tracing::error!(error = %e, "journal write failed");
                }
                report(Outcome::Failed, None, Some(error))
            }
        }
    }

    async fn fresh(&self, device: &DeviceEntry, start: Instant) -> Result<String, Failure> {
        self.register(device).await?;
        let csr = self
            .blocking(device, |t, d| t.key_and_csr(d))
            .await
            .map_err(|e| format!("key at the target: {e}"))?;
        let issued = self
            .ca
            .clone()
            .issue(pb::IssueRequest {
                device_id: device.device_id.clone(),
                profile: device.profile.clone(),
                zone: device.zone.clone(),
                csr,
                replace_active: true,
                ..Default::default()
            })
            .await
            .map_err(|s| format!("issue: {}", status_error(s)))?
            .into_inner();
        let serial = issued
            .certificate
            .map(|c| c.serial)
            .ok_or("issue: the CA answered without a certificate")?;
        let credential = Credential {
            serial,
            chain_pem: issued.chain_pem,
            trust_pem: issued.trust_bundle_pem,
        };
        self.check_trust(&credential.trust_pem)?;
        self.journal(
            &device.device_id,
            DeviceState::Issued {
                serial: credential.serial.clone(),
                chain_pem: credential.chain_pem.clone(),
                trust_pem: credential.trust_pem.clone(),
            },
        )
        .await?;
        self.complete(device, &credential, start, false).await
    }

    /// Injects (unless `recovering` and the target already holds it), reads back, journals
    /// done. Only a run finishing an interrupted device looks first: a fresh certificate cannot
    /// be at the target yet.
    async fn complete(
        &self,
        device: &DeviceEntry,
        credential: &Credential,
        start: Instant,
        recovering: bool,
    ) -> Result<String, Failure> {
        let read_back = |c: Credential| async move {
            self.blocking(device, move |t, d| t.read_back(d, &c, now()))
                .await
        };
        let already = recovering && read_back(credential.clone()).await.is_ok();
        if !already {
            let c = credential.clone();
            self.blocking(device, move |t, d| t.inject(d, &c))
                .await
                .map_err(|e| format!("inject: {e}"))?;
            read_back(credential.clone())
                .await
                .map_err(|e| format!("read back: {e}"))?;
        }
        self.journal(
            &device.device_id,
            DeviceState::Done {
                serial: credential.serial.clone(),
                millis: start.elapsed().as_millis() as u64,
            },
        )
        .await?;
        Ok(credential.serial.clone())
    }

    /// Refuses a trust bundle that does not chain to the station's own (see [`Worker`]).
    fn check_trust(&self, trust_pem: &str) -> Result<(), Failure> {
        hallmark_core::trust::check_trust_bundle(&self.trusted_pem, trust_pem.as_bytes())
            .map_err(|e| format!("issue: {e}"))
    }

    /// Registers the device with its lot, or checks the entry it already has.
    async fn register(&self, device: &DeviceEntry) -> Result<(), Failure> {
        let mut devices = self.devices.clone();
        let registered = devices
            .register(pb::RegisterDeviceRequest {
                id: device.device_id.clone(),
                zone: device.zone.clone(),
                profile: device.profile.clone(),
                lot: self.lot.clone(),
                model: device.model.clone(),
                serial_number: device.serial_number.clone(),
                manufacturer: String::new(),
            })
            .await;
        match registered {
            Ok(_) => Ok(()),
            Err(refused) if refused.code() == tonic::Code::AlreadyExists => {
                let d = match devices
                    .get(pb::GetDeviceRequest {
                        id: device.device_id.clone(),
                    })
                    .await
                {
                    Ok(d) => d.into_inner(),
                    // Not this id but another unique field (the serial number) is taken.
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        return Err(format!("registry: {}", status_error(refused)));
                    }
                    Err(s) => return Err(format!("registry: {}", status_error(s))),
                };
                // Another unit must not take over a registered device's identity: the
                // issuance would revoke the certificate of the unit in the field.
                if !device.serial_number.is_empty()
                    && !d.serial_number.is_empty()
                    && d.serial_number != device.serial_number
                {
                    return Err(format!(
                        "registry: device {} is registered with serial number {}, the manifest \
                         says {}; a different unit cannot take its identity",
                        device.device_id, d.serial_number, device.serial_number
                    ));
                }
                if d.zone != device.zone || d.profile != device.profile {
                    return Err(format!(
                        "registry: device {} is registered in zone {} with profile {}, the \
                         manifest says zone {} and profile {}",
                        device.device_id, d.zone, d.profile, device.zone, device.profile
                    ));
                }
                Ok(())
            }
            Err(s) => Err(format!("registry: {}", status_error(s))),
        }
    }

    /// Appends to the journal on a blocking thread (it syncs to disk).
    async fn journal(&self, device: &str, state: DeviceState) -> Result<(), Failure> {
        let journal = self.journal.clone();
        let device = device.to_owned();
        tokio::task::spawn_blocking(move || journal.record(&device, now(), state))
            .await
            .map_err(|e| format!("journal: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// Runs a target step on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        device: &DeviceEntry,
        step: impl FnOnce(&dyn Target, &DeviceEntry) -> Result<T, TargetError> + Send + 'static,
    ) -> Result<T, TargetError> {
        let target = self.target.clone();
        let device = device.clone();
        tokio::task::spawn_blocking(move || step(target.as_ref(), &device))
            .await
            .map_err(|e| TargetError::Failed(format!("target step panicked: {e}")))?
    }
}
