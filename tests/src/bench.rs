//! What every benchmark binary prints about where it ran and what a process used, from /proc.

/// CPU seconds (user + system) and peak RSS (MiB) of process `pid`, from /proc.
pub fn process_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ((ticks(11) + ticks(12)) / 100.0, status_mib(pid, "VmHWM"))
}

/// The machine: CPU model and how many CPUs this process may use.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} CPUs")
}

/// A memory figure of process `pid` from /proc/PID/status (`VmHWM`: peak RSS, `VmRSS`: RSS
/// now), MiB; 0 when unreadable.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Issues certificates to `total` new devices `{prefix}-{i:07}` (profile `sensor`, zone `zone`)
/// over `clients` concurrent clients on `channel`, printing progress every 100,000: how the
/// benchmarks fill a store through the CA itself.
pub async fn issue_devices(
    channel: &tonic::transport::Channel,
    prefix: &str,
    zone: &str,
    total: usize,
    clients: usize,
) {
    use hallmark_proto::v1 as pb;
    use pb::certificate_authority_client::CertificateAuthorityClient;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let start = std::time::Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = CertificateAuthorityClient::new(channel.clone());
        let (done, prefix, zone) = (done.clone(), prefix.to_owned(), zone.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in (c..total).step_by(clients) {
                let id = format!("{prefix}-{i:07}");
                let csr = crate::p256_csr(&id).1;
                let request = pb::IssueRequest {
                    device_id: id,
                    profile: "sensor".into(),
                    zone: zone.clone(),
                    csr,
                    ..Default::default()
                };
                client.issue(request).await.expect("issue");
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(100_000) {
                    println!(
                        "  filled {n} devices in {:.0} s",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("issuing task");
    }
    println!(
        "filled {total} devices in {:.0} s ({:.0}/s)",
        start.elapsed().as_secs_f64(),
        total as f64 / start.elapsed().as_secs_f64()
    );
}
