//! The sessions the agent still has to cut: serials newly listed on an applied CRL, kept in a
//! file beside the broker's CRL file so that a restart of the agent (or a `--once` run that
//! could not reach the broker) does not forget them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hallmark_core::fsutil::write_atomic;
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;

use super::dynsec;
use hallmark_core::client::{Connection, status_error};

/// Attempts per serial before the agent gives up on it (and says so).
const MAX_ATTEMPTS: u32 = 5;
/// How long one round of cutting may take, CA lookups included.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to cut.
pub struct CutConfig {
    /// `host:port` of the broker's TLS listener.
    pub address: String,
    /// The name the broker's certificate must carry.
    pub server_name: Option<String>,
}

/// Serials to cut, with the attempts made so far.
pub struct PendingCuts {
    file: PathBuf,
    serials: BTreeMap<String, u32>,
}

impl PendingCuts {
    /// Loads what a previous run left in `file`.
    pub fn load(file: PathBuf) -> Self {
        let serials = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, u32>>(&b).ok())
            .unwrap_or_default();
        Self { file, serials }
    }

    /// Adds `serials` and saves.
    pub fn add(&mut self, serials: impl IntoIterator<Item = String>) -> Result<()> {
        let before = self.serials.len();
        for s in serials {
            self.serials.entry(s).or_insert(0);
        }
        if self.serials.len() != before {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        if self.serials.is_empty() {
            match std::fs::remove_file(&self.file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", self.file.display()));
                }
                _ => return Ok(()),
            }
        }
        let json = serde_json::to_vec(&self.serials)?;
        write_atomic(&self.file, &json, 0o600)
            .with_context(|| format!("writing {}", self.file.display()))
    }

    /// One round: asks the CA which devices the pending serials belong to and cuts their
    /// sessions. Serials whose device was cut (or that the CA does not know) are done; the
    /// others stay for the next round, at most [`MAX_ATTEMPTS`] times.
    pub async fn cut(&mut self, conn: &Connection, config: &CutConfig, ca_pem: &str) {
        if self.serials.is_empty() {
            return;
        }
        let round = tokio::time::timeout(ROUND_TIMEOUT, self.round(conn, config, ca_pem)).await;
        let failed: BTreeSet<String> = match round {
            Ok(Ok(failed)) => failed,
            Ok(Err(e)) => {
                eprintln!(
                    "could not cut open sessions yet ({} serials pending): {e:#}",
                    self.serials.len()
                );
                self.serials.keys().cloned().collect()
            }
            Err(_) => {
                eprintln!(
                    "cutting open sessions took over {}s; {} serials stay pending",
                    ROUND_TIMEOUT.as_secs(),
                    self.serials.len()
                );
                self.serials.keys().cloned().collect()
            }
        };
        self.serials.retain(|serial, attempts| {
            if !failed.contains(serial) {
                return false;
            }
            *attempts += 1;
            if *attempts >= MAX_ATTEMPTS {
                eprintln!(
                    "giving up cutting the sessions of certificate {serial} after {attempts} \
                     attempts; the broker still refuses its new connections"
                );
                return false;
            }
            true
        });
        if let Err(e) = self.save() {
            eprintln!("could not save the pending cuts: {e:#}");
        }
    }

    /// Returns the serials that are still to be done.
    async fn round(
        &self,
        conn: &Connection,
        config: &CutConfig,
        ca_pem: &str,
    ) -> Result<BTreeSet<String>> {
        let (Some(cert), Some(key)) = (&conn.cert, &conn.key) else {
            bail!("--dynsec needs the agent's credential (--cert and --key)");
        };
        let target = dynsec::DynsecTarget::new(
            &config.address,
            config.server_name.as_deref(),
            cert,
            key,
            ca_pem,
        )?;
        let serials: Vec<String> = self.serials.keys().cloned().collect();
        let mut by_device = devices_of(conn, &serials).await?;
        // Never cut the agent's own connection (its old credential may be on the CRL).
        // The CN of the agent's certificate is its MQTT username.
        let own = std::fs::read(cert)
            .ok()
            .and_then(|pem| hallmark_core::bundle::certificate_cn(&pem));
        if let Some(own) = &own
            && by_device.remove(own).is_some()
        {
            eprintln!("not cutting the agent's own username `{own}`");
        }
        let devices: Vec<String> = by_device.keys().cloned().collect();
        let report = dynsec::cut_sessions(&target, &devices).await?;
        if !report.cut.is_empty() {
            eprintln!(
                "cut the broker sessions of {} device(s): {}",
                report.cut.len(),
                report.cut.join(", ")
            );
        }
        let mut pending = BTreeSet::new();
        for (device, why) in &report.failed {
            eprintln!("could not cut the sessions of `{device}`: {why}");
            pending.extend(by_device.get(device).into_iter().flatten().cloned());
        }
        Ok(pending)
    }
}

/// The serials of each device (MQTT username) among `serials`, asked of the CA 1000 at a time.
async fn devices_of(
    conn: &Connection,
    serials: &[String],
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut ca = CertificateAuthorityClient::new(conn.channel().await?);
    let mut devices: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chunk in serials.chunks(1000) {
        let mut page_token = String::new();
        loop {
            let page = ca
                .list_certificates(pb::ListCertificatesRequest {
                    serials: chunk.to_vec(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            for c in page.certificates {
                devices.entry(c.device_id).or_default().push(c.serial);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    Ok(devices)
}
