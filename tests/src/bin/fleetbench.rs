//! `hallmark-fleetbench`: what a large fleet costs. Runs a CA as its own process, measures on
//! the empty store, fills it with `--devices` devices through the CA itself (one certificate
//! each, issued over 64 mutual-TLS clients, keys made on the fly), and measures again: list-page
//! latency (certificates and devices, 100 per page, the first page and the pages after it),
//! issuance latency of new devices one at a time, the CA's start time and idle RSS, and the
//! database size per device. Prints figures and the machine; asserts nothing but that every
//! call succeeded.
//!
//! ```sh
//! target/release/hallmark-fleetbench --devices 1000000
//! target/release/hallmark-fleetbench --devices 1000000 --database-url postgres://USER@HOST/EMPTY_DB
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::devices_client::DevicesClient;
use hallmark_tests::bench::{issue_devices, machine, process_usage, status_mib};
use hallmark_tests::{CaProcess, hallmark_ca, ok, p256_csr, s};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Fleet size figures")]
struct Args {
    /// Devices (and certificates) to fill the store with.
    #[arg(long, default_value_t = 1_000_000)]
    devices: usize,
    /// A PostgreSQL database to run the CA on (an empty one: the CA is initialised in it),
    /// instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Samples per latency figure.
    #[arg(long, default_value_t = 300)]
    samples: usize,
}

/// The CA's data dir and how it is started.
struct Ca {
    data: std::path::PathBuf,
    extra: Vec<String>,
}

impl Ca {
    /// Starts it; how long until it printed its set-up lines (listening).
    fn start(&self) -> (CaProcess, Duration) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let t = Instant::now();
        let process = CaProcess::start(&self.data, &extra);
        (process, t.elapsed())
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    format!("p50 {:.2} ms, p99 {:.2} ms", at(0.5), at(0.99))
}

/// Issuance latency of `n` new devices, one at a time (keys made before each call, not timed).
async fn issue_latency(ch: &Channel, prefix: &str, n: usize) -> String {
    let mut client = CertificateAuthorityClient::new(ch.clone());
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{prefix}-{i:05}");
        let csr = p256_csr(&id).1;
        let t = Instant::now();
        client.issue(issue_request(&id, csr)).await.expect("issue");
        times.push(t.elapsed());
    }
    percentiles(times)
}

fn issue_request(id: &str, csr: Vec<u8>) -> pb::IssueRequest {
    pb::IssueRequest {
        device_id: id.into(),
        profile: "sensor".into(),
        zone: "field".into(),
        csr,
        ..Default::default()
    }
}

/// Latency of the first page and of the `n` pages after it (100 per page), certificates and
/// devices.
async fn list_latency(ch: &Channel, n: usize) -> (String, String) {
    let mut certs = CertificateAuthorityClient::new(ch.clone());
    let mut devices = DevicesClient::new(ch.clone());
    let (mut ct, mut dt) = (Vec::new(), Vec::new());
    let (mut ctoken, mut dtoken) = (String::new(), String::new());
    for _ in 0..=n {
        let t = Instant::now();
        let page = certs
            .list_certificates(pb::ListCertificatesRequest {
                page_size: 100,
                page_token: ctoken.clone(),
                ..Default::default()
            })
            .await
            .expect("list certificates")
            .into_inner();
        ct.push(t.elapsed());
        ctoken = page.next_page_token;
        let t = Instant::now();
        let page = devices
            .list(pb::ListDevicesRequest {
                page_size: 100,
                page_token: dtoken.clone(),
                ..Default::default()
            })
            .await
            .expect("list devices")
            .into_inner();
        dt.push(t.elapsed());
        dtoken = page.next_page_token;
        if ctoken.is_empty() || dtoken.is_empty() {
            break;
        }
    }
    (percentiles(ct), percentiles(dt))
}

/// SQLite database size (file and WAL), bytes.
fn sqlite_size(data: &Path) -> u64 {
    ["hallmark.db", "hallmark.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Stops `ca` as systemd would (SIGTERM), and waits until it exited.
fn stop(mut ca: CaProcess) {
    let pid = ca.pid();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}/stat")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| !st.rsplit(')').next().unwrap_or("").trim().starts_with('Z'))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    ca.kill_now();
}

/// Idle RSS of `pid` after a quiet second, MiB.
fn idle_rss(pid: u32) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    status_mib(pid, "VmRSS")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let mut extra = vec![
        "--config".to_owned(),
        s(&work.path().join("ca.toml")).to_owned(),
    ];
    // Room for the fill's 64 connections from one address.
    std::fs::write(
        work.path().join("ca.toml"),
        "[limits]\ngrpc_max_connections_per_peer = 128\ngrpc_max_connections = 1024\n",
    )
    .expect("write the CA config");
    if let Some(url) = &args.database_url {
        extra.extend(["--database-url".to_owned(), url.clone()]);
        let mut init = vec!["init", "--data-dir", s(&data)];
        init.extend(extra.iter().map(String::as_str));
        ok(&hallmark_ca(&init));
    }
    let ca = Ca { data, extra };
    println!("machine: {}", machine());
    println!(
        "database: {}",
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );

    // Empty store (the CA's own certificates only). The first start initialises the data dir;
    // the figures are from a second start.
    let (first, _) = ca.start();
    stop(first);
    let (process, started) = ca.start();
    let idle = idle_rss(process.pid());
    let ch = process.admin_channel().await;
    let (cert_pages, device_pages) = list_latency(&ch, args.samples).await;
    let issue = issue_latency(&ch, "empty", args.samples).await;
    println!("empty store:");
    println!(
        "  start {:.2} s, idle RSS {idle:.0} MiB",
        started.as_secs_f64()
    );
    println!("  list certificates page: {cert_pages}; list devices page: {device_pages}");
    println!("  issue (new device, one at a time): {issue}");

    issue_devices(&ch, "fleet", "field", args.devices, 64).await;
    let (_, fill_rss) = process_usage(process.pid());
    stop(process);

    let (process, started) = ca.start();
    let idle = idle_rss(process.pid());
    let ch = process.admin_channel().await;
    let (cert_pages, device_pages) = list_latency(&ch, args.samples).await;
    let issue = issue_latency(&ch, "full", args.samples).await;
    println!("{} devices:", args.devices);
    println!(
        "  start {:.2} s, idle RSS {idle:.0} MiB (peak RSS during the fill {fill_rss:.0} MiB)",
        started.as_secs_f64()
    );
    println!("  list certificates page: {cert_pages}; list devices page: {device_pages}");
    println!("  issue (new device, one at a time): {issue}");
    if args.database_url.is_none() {
        let size = sqlite_size(&ca.data);
        println!(
            "  database: {:.0} MiB, {:.0} bytes per device (device, certificate, audit events)",
            size as f64 / 1_048_576.0,
            size as f64 / args.devices as f64
        );
    }
    stop(process);
}
