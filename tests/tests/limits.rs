//! Item 3 of issue 10: what an unauthenticated peer on loopback can hold on the CA. The CA runs
//! as its own process (started with a soft open-files limit of 1024, a common host default) and
//! is flooded with idle TCP connections to both ports, idle TLS connections without a client
//! certificate and 200 concurrent ~1 MB streams on one HTTP/2 connection; the admin must still
//! get an answer within 1 s and the CA must stay under 100 MB.
//!
//! The per-peer caps are what hold a single flooding address off, so the admin (and the HTTP
//! probe) connect from another loopback address, 127.0.0.2; every flood has its own address.
//! A last flood from 20 addresses goes over the total cap.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::revocation_client::RevocationClient;
use hallmark_tests::{CaProcess, ok};
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Idle TCP connections per port, as in the review.
const TCP_FLOOD: usize = 1100;
/// Idle TLS connections without a client certificate.
const TLS_FLOOD: usize = 200;
/// Concurrent streams on one connection, and the size of each message.
const STREAMS: usize = 200;
const STREAM_MESSAGE: usize = 1_000_000;
/// Addresses of the flood over the total cap, and connections from each.
const SPREAD_ADDRESSES: u8 = 20;
const SPREAD_PER_ADDRESS: usize = 64;

const ADMIN_FROM: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A TCP connection to `to` from the loopback address `from`, within 1 s.
async fn connect_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(1), socket.connect(to))
        .await
        .ok()?
        .ok()
}

/// Opens up to `n` TCP connections from `from` to `to` and holds them (as plain non-blocking
/// sockets, so that [`closed_by_ca`] can look at them); bounded by `deadline`.
async fn tcp_flood(
    from: IpAddr,
    to: SocketAddr,
    n: usize,
    deadline: Instant,
) -> Vec<std::net::TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        if Instant::now() > deadline {
            break;
        }
        if let Some(c) = connect_from(from, to).await
            && let Ok(c) = c.into_std()
        {
            let _ = c.set_nonblocking(true);
            held.push(c);
        }
    }
    held
}

/// [`TCP_FLOOD`] idle TCP connections from `from` to the `what` port at `to`, held; prints how
/// many the CA closed within 0.3 s (over its caps).
async fn idle_tcp_flood(what: &str, from: IpAddr, to: SocketAddr) -> Vec<std::net::TcpStream> {
    let t = Instant::now();
    let held = tcp_flood(from, to, TCP_FLOOD, t + Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "{what} port: {} idle TCP connections opened ({:?}), {} closed by the CA within 0.3 s",
        held.len(),
        t.elapsed(),
        closed_by_ca(&held)
    );
    held
}

/// How many of `conns` the CA has closed (EOF or reset), looked at without blocking.
fn closed_by_ca(conns: &[std::net::TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    conns
        .iter()
        .filter(|c| match c.peek(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        })
        .count()
}

/// rustls client: trusts the CA's bundle, offers h2, no client certificate.
fn tls_connector(bundle: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(bundle).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_from(connector: &TlsConnector, from: IpAddr, to: SocketAddr) -> Option<Tls> {
    let tcp = connect_from(from, to).await?;
    let name = ServerName::IpAddress(to.ip().into());
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .ok()?
        .ok()
}

/// A fresh admin channel from [`ADMIN_FROM`] (a new TLS connection per call measured).
async fn admin_channel(ca: &CaProcess) -> Result<Channel, tonic::transport::Error> {
    let read = |v: &str| std::fs::read(ca.var(v)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("HALLMARK_CA")))
        .identity(Identity::from_pem(
            read("HALLMARK_CERT"),
            read("HALLMARK_KEY"),
        ));
    Endpoint::from_shared(ca.var("HALLMARK_ENDPOINT").to_owned())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .local_address(Some(ip(ADMIN_FROM)))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Connects and makes one admin call (`ListCertificates`); how long it took, or why it failed
/// (given up after 10 s: a TLS handshake with a CA that never accepts has no other bound).
async fn admin_call(ca: &CaProcess) -> Result<Duration, String> {
    let started = Instant::now();
    let call = async {
        let channel = admin_channel(ca)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        CertificateAuthorityClient::new(channel)
            .list_certificates(pb::ListCertificatesRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .map_err(|s| format!("call: {s}"))?;
        Ok(started.elapsed())
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

/// A plain HTTP GET from [`ADMIN_FROM`]; the status line, within 5 s.
async fn http_status_from(to: SocketAddr, path: &str) -> Result<String, String> {
    let fut = async {
        let mut c = connect_from(ip(ADMIN_FROM), to)
            .await
            .ok_or("connect failed")?;
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out).into_owned();
        Ok::<_, String>(text.lines().next().unwrap_or("").to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

/// Sends `data` on `stream` as flow control allows, 16 KiB at a time so that all streams of
/// the connection progress together (h2 hands out capacity in request order); stops quietly
/// when the CA ends the stream.
async fn send_body(stream: &mut h2::SendStream<Bytes>, mut data: Bytes) {
    while !data.is_empty() {
        stream.reserve_capacity(data.len().min(16 * 1024));
        let cap = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(c)) => c,
            _ => return,
        };
        if cap == 0 {
            continue;
        }
        let chunk = data.split_to(cap.min(data.len()));
        if stream.send_data(chunk, data.is_empty()).is_err() {
            return;
        }
    }
}

/// `grpc-status` and (percent-decoded) `grpc-message` of a response, trailers-only or not.
async fn grpc_status(resp: h2::client::ResponseFuture) -> Option<(String, String)> {
    let resp = resp.await.ok()?;
    let read = |h: &http::HeaderMap| {
        let code = h.get("grpc-status")?.to_str().ok()?.to_owned();
        let raw = h.get("grpc-message").map(|m| m.as_bytes()).unwrap_or(b"");
        let mut message = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|x| std::str::from_utf8(x).ok());
            match (raw[i], hex.and_then(|x| u8::from_str_radix(x, 16).ok())) {
                (b'%', Some(b)) => {
                    message.push(b);
                    i += 3;
                }
                (c, _) => {
                    message.push(c);
                    i += 1;
                }
            }
        }
        Some((code, String::from_utf8_lossy(&message).into_owned()))
    };
    if let Some(status) = read(resp.headers()) {
        return Some(status);
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    read(&body.trailers().await.ok()??)
}

/// 200 concurrent `Issue` calls of ~1 MB each on one unauthenticated HTTP/2 connection.
/// Returns the grpc-status of each call that got an answer, and how many were never answered.
async fn stream_flood(connector: &TlsConnector, to: SocketAddr) -> (Vec<String>, usize) {
    let Some(tls) = tls_from(connector, ip("127.0.0.4"), to).await else {
        println!("stream flood: no TLS connection to the CA");
        return (Vec::new(), STREAMS);
    };
    let Ok((send, conn)) = h2::client::handshake(tls).await else {
        println!("stream flood: no HTTP/2 connection to the CA");
        return (Vec::new(), STREAMS);
    };
    tokio::spawn(conn);
    // Streams opened before the CA's SETTINGS arrive would be reset by the CA and end the
    // connection on our side: wait for its stream limit first, as a patient attacker would.
    let settled = tokio::time::Instant::now() + Duration::from_secs(2);
    while send.current_max_send_streams() > 1000 && tokio::time::Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "stream flood: the CA allows {} concurrent streams",
        send.current_max_send_streams()
    );
    // A well-formed IssueRequest whose CSR field makes it ~1 MB, in one gRPC frame.
    let request = pb::IssueRequest {
        device_id: "flood".to_owned(),
        profile: "sensor".to_owned(),
        csr: vec![0x30; STREAM_MESSAGE - 32],
        ..Default::default()
    }
    .encode_to_vec();
    let mut message = vec![0];
    message.extend_from_slice(&(request.len() as u32).to_be_bytes());
    message.extend_from_slice(&request);
    let message = Bytes::from(message);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        // Waits for a stream slot when the CA limits concurrent streams.
        let Ok(Ok(mut ready)) = tokio::time::timeout_at(deadline, send.clone().ready()).await
        else {
            break;
        };
        let request = http::Request::post(format!(
            "https://{to}/hallmark.v1.CertificateAuthority/Issue"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let Ok((resp, mut body)) = ready.send_request(request, false) else {
            break;
        };
        let message = message.clone();
        calls.spawn(async move {
            let sending = send_body(&mut body, message);
            let (_, status) = tokio::join!(sending, grpc_status(resp));
            status.map(|(code, _)| code)
        });
    }
    let mut statuses = Vec::new();
    let mut unanswered = STREAMS - calls.len();
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, calls.join_next()).await {
        match done.ok().flatten() {
            Some(s) => statuses.push(s),
            None => unanswered += 1,
        }
    }
    unanswered += calls.len();
    calls.abort_all();
    (statuses, unanswered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_leave_the_ca_answering_and_small() {
    // This test holds thousands of sockets itself.
    let mut nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    nofile.current = nofile.maximum;
    rustix::process::setrlimit(rustix::process::Resource::Nofile, nofile)
        .expect("raise the test's own open-files limit");
    let work = tempfile::tempdir().unwrap();
    let ca = CaProcess::start_with_soft_nofile(&work.path().join("data"), &[], 1024);
    let pid = ca.pid();
    let http: SocketAddr = ca.http.parse().unwrap();
    let grpc: SocketAddr = ca
        .var("HALLMARK_ENDPOINT")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    println!("CA started with a soft limit of 1024; now: {nofile}");

    let baseline = admin_call(&ca).await.expect("admin call before the floods");
    let (rss_before, _) = memory_kib(pid);
    println!("admin call before the floods: {baseline:?}; CA RSS {rss_before} KiB");

    // Sample RSS through the floods (VmHWM gives the peak too).
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse::<u64>().ok())
                {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let connector = tls_connector(Path::new(ca.var("HALLMARK_CA")));
    let t = Instant::now();
    let (statuses, unanswered) = stream_flood(&connector, grpc).await;
    let exhausted = statuses.iter().filter(|s| *s == "8").count();
    let (rss_streams, _) = memory_kib(pid);
    println!(
        "{STREAMS} Issue calls of {STREAM_MESSAGE} bytes on one unauthenticated connection: \
         {exhausted} RESOURCE_EXHAUSTED, {} other answers (e.g. grpc-status {:?}), {unanswered} \
         unanswered, in {:?}; CA RSS now {rss_streams} KiB",
        statuses.len() - exhausted,
        statuses.iter().find(|s| *s != "8"),
        t.elapsed()
    );

    let t = Instant::now();
    let tls_attempts = (0..TLS_FLOOD).map(|_| tls_from(&connector, ip("127.0.0.3"), grpc));
    let tls_idle: Vec<Tls> = futures::future::join_all(tls_attempts)
        .await
        .into_iter()
        .flatten()
        .collect();
    println!(
        "gRPC port: {} of {TLS_FLOOD} TLS connections without a client certificate completed \
         their handshake and are held idle ({:?})",
        tls_idle.len(),
        t.elapsed()
    );

    let grpc_idle = idle_tcp_flood("gRPC", ip("127.0.0.1"), grpc).await;
    let http_idle = idle_tcp_flood("HTTP", ip("127.0.0.1"), http).await;

    // With every flood still held: the admin and the HTTP side answer.
    let during = admin_call(&ca).await;
    let http_during = http_status_from(http, "/healthz").await;
    let (rss_during, hwm_during) = memory_kib(pid);
    println!(
        "with the floods held: admin call {during:?}, HTTP /healthz {http_during:?}, \
         CA RSS {rss_during} KiB (peak so far {hwm_during} KiB)"
    );
    drop((tls_idle, grpc_idle, http_idle));

    // Over the total cap: 20 addresses x 64 connections to the gRPC port.
    let t = Instant::now();
    let mut spread = Vec::new();
    for i in 1..=SPREAD_ADDRESSES {
        let from = IpAddr::from([127, 0, 1, i]);
        spread.extend(tcp_flood(from, grpc, SPREAD_PER_ADDRESS, t + Duration::from_secs(30)).await);
    }
    let spread_opened = spread.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spread_refused = closed_by_ca(&spread);
    println!(
        "{spread_opened} connections from {SPREAD_ADDRESSES} addresses: {spread_refused} closed \
         by the CA within 0.3 s (over the total cap)"
    );
    drop(spread);
    // Let the CA see those closes before the admin connects (the total cap is full until then).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let after = admin_call(&ca).await;
    let http_after = http_status_from(http, "/healthz").await;
    sampling.abort();
    let (rss_after, hwm) = memory_kib(pid);
    let sampled_peak = peak.load(Ordering::Relaxed);
    println!(
        "after the floods: admin call {after:?}, HTTP /healthz {http_after:?}; CA RSS before \
         {rss_before} KiB, peak {} KiB (VmHWM {hwm}, sampled {sampled_peak}), after {rss_after} KiB",
        hwm.max(sampled_peak)
    );

    let during = during.expect("the admin call succeeds while the floods are held");
    assert!(
        during < Duration::from_secs(1),
        "admin call took {during:?} with the floods held"
    );
    let after = after.expect("the admin call succeeds after the floods");
    assert!(after < Duration::from_secs(1), "admin call took {after:?}");
    assert!(
        http_during.as_deref().is_ok_and(|s| s.contains("200")),
        "HTTP during the floods: {http_during:?}"
    );
    assert!(
        http_after.as_deref().is_ok_and(|s| s.contains("200")),
        "HTTP after the floods: {http_after:?}"
    );
    assert!(
        hwm.max(sampled_peak) < 100 * 1024,
        "the CA grew to {} KiB",
        hwm.max(sampled_peak)
    );
    assert_eq!(
        exhausted, STREAMS,
        "every ~1 MB Issue is refused with RESOURCE_EXHAUSTED ({unanswered} unanswered)"
    );
    assert!(
        nofile.split_whitespace().nth(3) == nofile.split_whitespace().nth(4),
        "the soft open-files limit is raised to the hard one: {nofile}"
    );
}

/// Writes a config that shortens every timeout to 2 s.
fn short_timeouts(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ca.toml");
    std::fs::write(
        &path,
        "[limits]\nhandshake_timeout = \"2s\"\ngrpc_idle_timeout = \"2s\"\n\
         http_header_read_timeout = \"2s\"\nhttp_idle_timeout = \"2s\"\n",
    )
    .unwrap();
    path
}

/// How long until the CA closes `conn` (reads EOF or an error), at most `bound`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    conn: &mut S,
    bound: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let fut = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(bound, fut)
        .await
        .ok()
        .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_crl_watchers_are_not() {
    let work = tempfile::tempdir().unwrap();
    let config = short_timeouts(work.path());
    let ca = CaProcess::start(
        &work.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let http: SocketAddr = ca.http.parse().unwrap();
    let grpc: SocketAddr = ca
        .var("HALLMARK_ENDPOINT")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    ca.issue_bundle("s1", "sensor", None, &work.path().join("s1"));

    // An admin watching the CRL: a call in flight, never idle.
    let mut watch = RevocationClient::new(admin_channel(&ca).await.unwrap())
        .watch_crl(pb::WatchCrlRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("the current CRLs");

    let bound = Duration::from_secs(15);
    let mut tcp = connect_from(ip("127.0.0.1"), grpc).await.unwrap();
    let handshake = closed_within(&mut tcp, bound).await;
    println!("gRPC TCP connection without a handshake closed after {handshake:?}");

    let connector = tls_connector(Path::new(ca.var("HALLMARK_CA")));
    let tls = tls_from(&connector, ip("127.0.0.1"), grpc).await.unwrap();
    let (_send, conn) = h2::client::handshake(tls).await.unwrap();
    let t = Instant::now();
    let h2_idle = tokio::time::timeout(bound, conn)
        .await
        .ok()
        .map(|_| t.elapsed());
    println!("idle HTTP/2 connection without a client certificate closed after {h2_idle:?}");

    let mut tcp = connect_from(ip("127.0.0.1"), http).await.unwrap();
    let http_header = closed_within(&mut tcp, bound).await;
    println!("HTTP connection sending no request closed after {http_header:?}");

    let mut tcp = connect_from(ip("127.0.0.1"), http).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let http_keepalive = closed_within(&mut tcp, bound).await;
    println!("HTTP keep-alive connection after one request closed after {http_keepalive:?}");

    // The watcher outlived several idle periods: a revocation still reaches it.
    ok(&ca.hallmark(&["revoke", "--device", "s1", "--reason", "key-compromise"]));
    // Heartbeats (no CRLs) may come first.
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let set = watch
                .message()
                .await
                .unwrap()
                .expect("the stream is still open");
            if !set.heartbeat {
                return set;
            }
        }
    })
    .await
    .expect("the watcher gets the new CRL");
    let number = |s: &pb::CrlSet| s.crls.iter().map(|c| c.number).max().unwrap_or(0);
    println!(
        "CRL watcher still open: CRL number {} -> {}",
        number(&first),
        number(&next)
    );
    assert!(number(&next) > number(&first));

    for (what, took) in [
        ("idle TCP on the gRPC port (handshake timeout)", handshake),
        (
            "idle HTTP/2 without client certificate (idle timeout)",
            h2_idle,
        ),
        ("HTTP without a request (header timeout)", http_header),
        ("HTTP keep-alive (idle timeout)", http_keepalive),
    ] {
        let took = took.unwrap_or_else(|| panic!("{what}: still open after {bound:?}"));
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
            "{what}: closed after {took:?}, configured 2 s"
        );
    }
}

/// A gRPC request frame header declaring `len` bytes, followed by `body`.
fn frame(len: u32, body: &[u8]) -> Bytes {
    let mut out = vec![0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Opens a call to `path` on `send` and sends `data` (ending the request when `end`).
async fn open_call(
    send: &h2::client::SendRequest<Bytes>,
    to: SocketAddr,
    path: &str,
    data: Bytes,
    end: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut ready = send.clone().ready().await.unwrap();
    let request = http::Request::post(format!("https://{to}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut body) = ready.send_request(request, false).unwrap();
    body.send_data(data, end).unwrap();
    (resp, body)
}

/// A request message that trickles in is cut after `request_read_timeout`, and one that would
/// take the buffered request bytes over `max_buffered_request_bytes` is refused; both before
/// any service code runs, and the budget comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_piled_up_requests_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("ca.toml");
    // The budget holds exactly one Import-sized message (1 MiB and its 5-byte header).
    std::fs::write(
        &config,
        "[limits]\nrequest_read_timeout = \"2s\"\nmax_buffered_request_bytes = 1048581\n",
    )
    .unwrap();
    let ca = CaProcess::start(
        &work.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let grpc: SocketAddr = ca
        .var("HALLMARK_ENDPOINT")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let connector = tls_connector(Path::new(ca.var("HALLMARK_CA")));
    let tls = tls_from(&connector, ip("127.0.0.5"), grpc).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let import = "/hallmark.v1.Devices/Import";

    // Declares 1 MiB, sends 10 bytes of it and stalls: it holds the whole budget meanwhile.
    let started = Instant::now();
    let (slow, _slow_body) =
        open_call(&send, grpc, import, frame(1024 * 1024, &[0; 10]), false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (piled, _) = open_call(&send, grpc, import, frame(0, &[]), true).await;
    let piled = tokio::time::timeout(Duration::from_secs(5), grpc_status(piled))
        .await
        .expect("an answer at once")
        .expect("a gRPC status");
    println!("a second call while the budget is held: {piled:?}");

    let slow = tokio::time::timeout(Duration::from_secs(10), grpc_status(slow))
        .await
        .expect("the stalled call is answered")
        .expect("a gRPC status");
    let slow_took = started.elapsed();
    println!("a request stalled after 10 of 1048576 bytes: {slow:?} after {slow_took:?}");

    // The budget is back: the same small call now reaches the service (which wants a credential).
    let (after, _) = open_call(&send, grpc, import, frame(0, &[]), true).await;
    let after = tokio::time::timeout(Duration::from_secs(5), grpc_status(after))
        .await
        .expect("an answer")
        .expect("a gRPC status");
    println!("the same call once the stalled one is gone: {after:?}");

    assert_eq!(piled.0, "8", "RESOURCE_EXHAUSTED: {piled:?}");
    assert!(piled.1.contains("too many requests at once"), "{piled:?}");
    assert_eq!(slow.0, "4", "DEADLINE_EXCEEDED: {slow:?}");
    assert!(
        slow.1.contains("hallmark.v1.Devices/Import") && slow.1.contains("within 2s"),
        "{slow:?}"
    );
    assert!(
        slow_took >= Duration::from_millis(1500) && slow_took < Duration::from_secs(8),
        "cut after {slow_took:?}, configured 2 s"
    );
    assert_eq!(after.0, "16", "UNAUTHENTICATED from the service: {after:?}");
}

/// REVIEW FINDING (issue 10 review): idleness is "no call in flight", and `Health/Watch` is a
/// stream anyone may open without a client certificate. One such call keeps a connection
/// without a client certificate open past `grpc_idle_timeout` for good, so unauthenticated
/// peers can pin the per-peer and total connection caps (64 per address, 1024 in all) forever
/// instead of until their handshakes time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_health_watch_does_not_hold_a_connection_open_forever() {
    let work = tempfile::tempdir().unwrap();
    let config = short_timeouts(work.path());
    let ca = CaProcess::start(
        &work.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let grpc: SocketAddr = ca
        .var("HALLMARK_ENDPOINT")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let connector = tls_connector(Path::new(ca.var("HALLMARK_CA")));
    let tls = tls_from(&connector, ip("127.0.0.1"), grpc).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    let t = Instant::now();
    let driver = tokio::spawn(conn);
    // An empty HealthCheckRequest (service ""): the server's overall status, then updates.
    let (resp, _body) = open_call(
        &send,
        grpc,
        "/grpc.health.v1.Health/Watch",
        frame(0, b""),
        true,
    )
    .await;
    let resp = resp.await.expect("the health watch is answered");
    println!(
        "Health/Watch without a client certificate: HTTP {}",
        resp.status()
    );
    let mut stream = resp.into_body();
    let _first = stream.data().await;
    let bound = Duration::from_secs(15);
    let closed = tokio::time::timeout(bound, driver)
        .await
        .ok()
        .map(|_| t.elapsed());
    println!(
        "connection without a client certificate, holding Health/Watch: closed after {closed:?} (idle timeout 2 s)"
    );
    assert!(
        closed.is_some(),
        "a connection without a client certificate outlived grpc_idle_timeout (2 s) by {bound:?} with one Health/Watch call"
    );
}
