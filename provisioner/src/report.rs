//! The lot report: what happened to every unit, as JSON for the line's systems and as a short
//! summary for the operator.

use std::time::Duration;

use serde::Serialize;

/// What happened to one device in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Provisioned and verified in this run.
    Ok,
    /// Failed; the error says why. A later run tries again.
    Failed,
    /// Finished by an earlier run (journal).
    Skipped,
}

/// One device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// Device id.
    pub device_id: String,
    /// Line in the manifest.
    pub line: usize,
    /// What happened.
    pub outcome: Outcome,
    /// Serial of its certificate (ok, skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time spent on it in this run, milliseconds.
    pub millis: u64,
}

/// The whole lot.
#[derive(Debug, Clone, Serialize)]
pub struct LotReport {
    /// Lot id.
    pub lot: String,
    /// Target.
    pub target: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Devices in the manifest.
    pub total: usize,
    /// Provisioned in this run.
    pub ok: usize,
    /// Failed in this run.
    pub failed: usize,
    /// Finished by an earlier run.
    pub skipped: usize,
    /// Devices provisioned in this run per minute of wall time.
    pub devices_per_minute: f64,
    /// Every device, in manifest order.
    pub devices: Vec<DeviceReport>,
}

impl LotReport {
    /// Sums up `devices`.
    pub fn new(
        lot: String,
        target: String,
        started_at: i64,
        took: Duration,
        devices: Vec<DeviceReport>,
    ) -> Self {
        let count = |o| devices.iter().filter(|d| d.outcome == o).count();
        let ok = count(Outcome::Ok);
        let seconds = took.as_secs_f64();
        Self {
            lot,
            target,
            started_at,
            seconds,
            total: devices.len(),
            ok,
            failed: count(Outcome::Failed),
            skipped: count(Outcome::Skipped),
            devices_per_minute: if seconds > 0.0 {
                ok as f64 * 60.0 / seconds
            } else {
                0.0
            },
            devices,
        }
    }

    /// The summary for people: totals, speed, and one line per failed device.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "lot {}: {} devices: {} ok, {} failed, {} skipped in {:.1} s ({:.0} devices/min)\n",
            self.lot,
            self.total,
            self.ok,
            self.failed,
            self.skipped,
            self.seconds,
            self.devices_per_minute
        );
        for d in self.devices.iter().filter(|d| d.outcome == Outcome::Failed) {
            s.push_str(&format!(
                "failed: {} (line {}): {}\n",
                d.device_id,
                d.line,
                d.error.as_deref().unwrap_or("unknown error")
            ));
        }
        s
    }
}
