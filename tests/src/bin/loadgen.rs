//! `hallmark-loadgen`: issuance throughput of a CA on loopback (SQLite with group commit, full
//! durability, or PostgreSQL), from concurrent mTLS clients, next to the signing floor (one CSR
//! verify + one certificate sign, single-threaded, no I/O). The CA runs in this process, or
//! with `--ca-process` as `hallmark-ca serve` of its own, whose CPU time and peak RSS are read
//! from /proc. Prints figures; it asserts nothing.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/hallmark-loadgen --count 20000 --clients 64 --ca-process --cfssl
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
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_tests::bench::{machine, process_usage};
use hallmark_tests::cfssl::{Cfssl, CfsslClient};
use hallmark_tests::{CaProcess, TestCa, hallmark_ca, ok, p256_csr, s};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Issuance throughput figures")]
struct Args {
    /// Certificates to issue (at most, with `--seconds`): one pre-generated CSR each.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Stop issuing after this many seconds (a fixed-time run), when the CSRs last that long.
    #[arg(long)]
    seconds: Option<f64>,
    /// Issue at this fixed rate (certificates per second, spread over the clients) instead of
    /// as fast as the CA answers; latency is then counted from each request's due time, so a
    /// CA falling behind shows in it (no coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// Concurrent clients (one HTTP/2 connection each).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// A PostgreSQL database to run the CA on (an empty one: the CA is initialised in it),
    /// instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Run the CA as a process of its own (`hallmark-ca serve`, built beside this binary) and
    /// measure its CPU time and peak RSS alone.
    #[arg(long)]
    ca_process: bool,
    /// Then run cfssl (`cfssl serve`, Debian's golang-cfssl) under the same load and print the
    /// ratio of CPU per certificate (with `--ca-process`).
    #[arg(long)]
    cfssl: bool,
}

/// The CA under load: in this process, or a `hallmark-ca serve` child.
enum Target {
    InProcess(TestCa),
    Process {
        ca: CaProcess,
        _dir: tempfile::TempDir,
    },
}

impl Target {
    async fn client(&self) -> CertificateAuthorityClient<Channel> {
        match self {
            Self::InProcess(ca) => ca.admin().await,
            Self::Process { ca, .. } => CertificateAuthorityClient::new(ca.admin_channel().await),
        }
    }

    /// CPU seconds and peak RSS (MiB) of the CA's process.
    fn usage(&self) -> (f64, f64) {
        match self {
            Self::InProcess(_) => process_usage(std::process::id()),
            Self::Process { ca, .. } => process_usage(ca.pid()),
        }
    }
}

/// Starts `hallmark-ca serve` on a new data dir with `config_toml`, initialised first on the
/// PostgreSQL database `url` when given.
fn start_process(config_toml: &str, url: Option<&str>) -> Target {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("ca.toml");
    std::fs::write(&conf, config_toml).expect("write the CA config");
    let data = dir.path().join("data");
    let mut extra = vec!["--config", s(&conf)];
    if let Some(url) = url {
        extra.extend(["--database-url", url]);
        let mut init = vec!["init", "--data-dir", s(&data)];
        init.extend(&extra);
        ok(&hallmark_ca(&init));
    }
    let ca = CaProcess::start(&data, &extra);
    Target::Process { ca, _dir: dir }
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
    let cap = args.clients + 8;
    let target = if args.ca_process {
        let toml = format!(
            "[limits]\ngrpc_max_connections_per_peer = {cap}\ngrpc_max_connections = {}\n",
            cap.max(1024)
        );
        start_process(&toml, args.database_url.as_deref())
    } else {
        let mut config = hallmark_ca::config::Config::default();
        config.limits.grpc_max_connections_per_peer =
            config.limits.grpc_max_connections_per_peer.max(cap);
        config.limits.grpc_max_connections = config.limits.grpc_max_connections.max(cap);
        config.database = args
            .database_url
            .clone()
            .map(hallmark_ca::store::Database::Postgres);
        Target::InProcess(TestCa::start_with(config).await)
    };
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(target.client().await);
    }
    let (ca_cpu0, _) = target.usage();
    let cpu0 = process_usage(std::process::id()).0;
    let start = Instant::now();
    let per_client = args.count.div_ceil(args.clients);
    let mut tasks = Vec::new();
    let deadline = args.seconds.map(|s| start + Duration::from_secs_f64(s));
    let clients_n = args.clients;
    let rate = args.rate;
    for (c, mut client) in clients.into_iter().enumerate() {
        let mine: Vec<(usize, Vec<u8>)> = (c * per_client..((c + 1) * per_client).min(args.count))
            .map(|i| (i, csrs[i].clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(mine.len());
            for (k, (i, csr)) in mine.into_iter().enumerate() {
                let t = match rate {
                    // Client c's k-th request is due at (k * clients + c) / rate.
                    Some(r) => {
                        let due = start
                            + Duration::from_secs_f64((k * clients_n + c) as f64 / r.max(0.001));
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                if deadline.is_some_and(|d| t >= d) {
                    break;
                }
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
    let cpu = process_usage(std::process::id()).0 - cpu0;
    let (ca_cpu1, ca_peak_rss) = target.usage();
    latencies.sort();
    let n = latencies.len();
    println!("machine: {}", machine());
    if let Some(r) = args.rate {
        println!("fixed rate: {r:.0} certificates/s asked");
    }
    println!(
        "issued {n} certificates with {} clients in {elapsed:.2} s: {:.0}/s, {:.0}/CPU-second ({})",
        args.clients,
        n as f64 / elapsed,
        n as f64 / cpu.max(0.001),
        if args.ca_process {
            "this process: the clients"
        } else {
            "CA and clients in one process"
        }
    );
    println!(
        "latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.95).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let mut ca_per_cert = None;
    if let Target::Process { .. } = target {
        let ca_cpu = ca_cpu1 - ca_cpu0;
        let per_cert = ca_cpu / n.max(1) as f64;
        ca_per_cert = Some(per_cert);
        println!(
            "CA process: {:.0} CPU-ms per 1,000 certificates ({:.0} certificates per CA CPU-second), \
             {:.1}x the floor's CPU per certificate; peak RSS {ca_peak_rss:.0} MiB",
            per_cert * 1e6,
            1.0 / per_cert.max(1e-9),
            per_cert * floor_rate
        );
    }
    match (&target, &args.database_url) {
        (_, Some(_)) => println!("database: PostgreSQL, {} rows", n + 2),
        (Target::InProcess(ca), None) => {
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
        }
        (Target::Process { .. }, None) => println!("database: SQLite, {} rows", n + 2),
    }
    if let Target::InProcess(ca) = target {
        ca.server.shutdown().await;
    }
    if args.cfssl
        && let Some(cfssl) = Cfssl::start()
    {
        compare_cfssl(&cfssl, &csrs, args.clients, ca_per_cert).await;
    }
}

/// The same CSRs from the same number of clients against cfssl; its figures, and the ratio of
/// its CPU per certificate to the CA's (`ca_per_cert`, CPU seconds).
async fn compare_cfssl(cfssl: &Cfssl, csrs: &[Vec<u8>], clients: usize, ca_per_cert: Option<f64>) {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(CfsslClient::connect(cfssl.addr).await);
    }
    let (cpu0, _) = process_usage(cfssl.pid());
    let start = Instant::now();
    let per_client = csrs.len().div_ceil(clients);
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let mine: Vec<Vec<u8>> =
            csrs[(c * per_client).min(csrs.len())..((c + 1) * per_client).min(csrs.len())].to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(mine.len());
            for csr in mine {
                let t = Instant::now();
                conn.sign(&csr).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("a cfssl client"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, peak_rss) = process_usage(cfssl.pid());
    latencies.sort();
    let n = latencies.len();
    let per_cert = (cpu1 - cpu0) / n.max(1) as f64;
    println!(
        "cfssl serve (HTTP/1.1, stores nothing): {n} certificates in {elapsed:.2} s: {:.0}/s, \
         p50 {:.1} ms, p99 {:.1} ms; {:.0} CPU-ms per 1,000 certificates; peak RSS {peak_rss:.0} MiB",
        n as f64 / elapsed,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        per_cert * 1e6
    );
    if let Some(ca) = ca_per_cert {
        println!(
            "cfssl / hallmark-ca CPU per certificate: {:.2} (the target is at least 3)",
            per_cert / ca.max(1e-9)
        );
    }
}
