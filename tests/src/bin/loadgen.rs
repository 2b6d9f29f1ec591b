//! `hallmark-loadgen`: issuance throughput of a CA started in-process on loopback (SQLite with
//! group commit, full durability), from concurrent mTLS clients, next to the signing floor
//! (one CSR verify + one certificate sign, single-threaded, no I/O). Prints figures; it asserts
//! nothing.
//!
//! ```sh
//! cargo run --release -p hallmark-tests --bin hallmark-loadgen -- --count 20000 --clients 32
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hallmark_ca::authority::csr::check_csr;
use hallmark_ca::authority::profile::builtin_profiles;
use hallmark_ca::authority::{Authority, IssuingCa, LeafRequest, NamingPolicy};
use hallmark_ca::clock::{Clock, SystemClock};
use hallmark_ca::identity::DeviceId;
use hallmark_proto::v1 as pb;
use hallmark_tests::{TestCa, p256_csr};

#[derive(Parser)]
#[command(about = "Issuance throughput figures")]
struct Args {
    /// Certificates to issue.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Concurrent clients (one HTTP/2 connection each).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// A PostgreSQL database to run the CA on (an empty one: the CA is initialised in it),
    /// instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
}

/// CPU seconds (user + system) of this process, from /proc (clock ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat are utime and stime; after ")" they are at 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn floor(count: usize, csrs: &[Vec<u8>]) -> f64 {
    use hallmark_ca::authority::ca::{create_issuing, create_root};
    let clock = Arc::new(SystemClock);
    let now = clock.now();
    let month = Duration::from_secs(86400 * 30);
    let (root, root_key) = create_root("Bench", now, month).unwrap();
    let (iss, iss_key) = create_issuing(&root, root_key, "Bench", now, month).unwrap();
    let issuing = Arc::new(IssuingCa::new("issuing-bench".into(), iss, iss_key).unwrap());
    let authority = Authority::new(
        issuing,
        NamingPolicy {
            organisation: "Bench".into(),
            device_uri_template: "urn:dev:org:32473-{device}".into(),
            crl_base_url: Some("http://127.0.0.1:9080".into()),
        },
        clock,
    );
    let profile = builtin_profiles()
        .into_iter()
        .find(|p| p.name == "sensor")
        .unwrap();
    let id = DeviceId::parse("sensor-0001").unwrap();
    let start = Instant::now();
    for i in 0..count {
        let csr = check_csr(&csrs[i % csrs.len()], &profile).unwrap();
        authority
            .sign_leaf(&LeafRequest {
                device_id: &id,
                zone: "field",
                profile: &profile,
                csr: &csr,
                lifetime: None,
                dns_san_allowed: true,
            })
            .unwrap();
    }
    count as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let csrs: Vec<Vec<u8>> = (0..args.count)
        .map(|i| p256_csr(&format!("s-{i}")).1)
        .collect();
    let floor_rate = floor(args.count.min(5000), &csrs);
    println!("floor (verify CSR + sign, 1 thread, no I/O): {floor_rate:.0} certificates/s");

    // All clients come from 127.0.0.1: make room for them above the per-peer cap.
    let mut config = hallmark_ca::config::Config::default();
    config.limits.grpc_max_connections_per_peer = config
        .limits
        .grpc_max_connections_per_peer
        .max(args.clients + 8);
    config.limits.grpc_max_connections = config.limits.grpc_max_connections.max(args.clients + 8);
    config.database = args
        .database_url
        .clone()
        .map(hallmark_ca::store::Database::Postgres);
    let ca = TestCa::start_with(config).await;
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(ca.admin().await);
    }
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let per_client = args.count.div_ceil(args.clients);
    let mut tasks = Vec::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let mine: Vec<(usize, Vec<u8>)> = (c * per_client..((c + 1) * per_client).min(args.count))
            .map(|i| (i, csrs[i].clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(mine.len());
            for (i, csr) in mine {
                let t = Instant::now();
                client
                    .issue(pb::IssueRequest {
                        device_id: format!("sensor-{i:06}"),
                        profile: "sensor".into(),
                        zone: "field".into(),
                        csr,
                        ..Default::default()
                    })
                    .await
                    .expect("issue");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    latencies.sort();
    let n = latencies.len();
    println!(
        "issued {n} certificates with {} clients in {elapsed:.2} s: {:.0}/s, {:.0}/CPU-second (CA and clients in one process)",
        args.clients,
        n as f64 / elapsed,
        n as f64 / cpu.max(0.001)
    );
    println!(
        "latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    if args.database_url.is_some() {
        println!("database: PostgreSQL, {} rows", n + 2);
        ca.server.shutdown().await;
        return;
    }
    let db = ca.data_dir().join("hallmark.db");
    let size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "database: {:.1} MiB for {} rows",
        size as f64 / 1048576.0,
        n + 2
    );
    ca.server.shutdown().await;
}
