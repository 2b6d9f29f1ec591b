//! `hallmark-ca probe`, the exec health check of the Helm chart's pods: exit 0 against a
//! running CA; non-zero with a message that says why against a closed port, a server that never
//! answers (within its timeout), and rogue TLS servers that answer `SERVING` to anyone: one whose
//! certificate does not chain to the trust bundle, and one whose certificate does (signed with
//! the real issuing CA's key, for 127.0.0.1, serverAuth) but lacks the CA-server marker.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use hallmark_ca::api::tls;
use hallmark_tests::{TestCa, bin, s};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Runs `hallmark-ca probe ARGS` (without blocking the runtime the CA runs on).
async fn probe(args: &[&str]) -> Output {
    tokio::process::Command::new(bin("hallmark-ca"))
        .arg("probe")
        .args(args)
        .env_remove("HALLMARK_DATA_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run hallmark-ca probe")
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "the probe should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A TLS server with `cert_pem`/`key_pem` on a free loopback port answering every
/// grpc.health.v1 check with SERVING, to anyone.
async fn rogue_health_server(cert_pem: &str, key_pem: &str) -> u16 {
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(chain, key, false, Vec::new()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                }
            });
        }
    });
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx)),
    );
    port
}

/// A serverAuth certificate for 127.0.0.1 signed by `issuer`, with a new key (PEM pair).
fn server_cert(issuer: Option<(&Path, &Path)>) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x42; 16]));
    let cert = match issuer {
        None => params.self_signed(&key).unwrap(),
        Some((crt, k)) => {
            let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(k).unwrap()).unwrap();
            let ca =
                rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(crt).unwrap(), ca_key)
                    .unwrap();
            params.signed_by(&key, &ca).unwrap()
        }
    };
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_passes_only_a_verified_serving_ca() {
    let ca = TestCa::start().await;
    let data = ca.data_dir();
    let addr = ca.server.grpc_addr.to_string();

    // The real CA: SERVING, through the data dir's trust bundle, as by IP and by name.
    let out = probe(&["--data-dir", s(&data), "--address", &addr]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("SERVING"));
    let by_name = format!("localhost:{}", ca.server.grpc_addr.port());
    let bundle = data.join("trust-bundle.pem");
    let out = probe(&["--ca", s(&bundle), "--address", &by_name]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A service the CA does not have: its answer, named.
    let err = failed(
        &probe(&[
            "--data-dir",
            s(&data),
            "--address",
            &addr,
            "--service",
            "x.Y",
        ])
        .await,
    );
    assert!(err.contains("NotFound"), "{err}");

    // A closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let err = failed(&probe(&["--data-dir", s(&data), "--address", &closed_addr]).await);
    assert!(
        err.contains(&format!("cannot connect to hallmark-ca at {closed_addr}")),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");

    // A server that accepts and never speaks: given up after --timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            open.push(tcp);
        }
    });
    let started = Instant::now();
    let err = failed(
        &probe(&[
            "--data-dir",
            s(&data),
            "--address",
            &silent_addr,
            "--timeout",
            "1s",
        ])
        .await,
    );
    assert!(
        err.contains("no answer from hallmark-ca") && err.contains("within 1s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    held.abort();

    // The HTTP port is not the gRPC port: the TLS handshake fails, and says so.
    let http = ca.server.http_addr.to_string();
    let err = failed(&probe(&["--data-dir", s(&data), "--address", &http]).await);
    assert!(err.contains("cannot connect"), "{err}");

    // Attacker: a self-signed server answering SERVING is refused (not the trust bundle's).
    let (cert, key) = server_cert(None);
    let rogue = format!("127.0.0.1:{}", rogue_health_server(&cert, &key).await);
    let err = failed(&probe(&["--data-dir", s(&data), "--address", &rogue]).await);
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Attacker holding a certificate of the real issuing CA (like a gateway's), for 127.0.0.1:
    // it chains to the trust bundle but is not the CA's own server certificate.
    let (cert, key) = server_cert(Some((
        &data.join("ca/issuing.crt"),
        &data.join("ca/issuing.key"),
    )));
    let rogue = format!("127.0.0.1:{}", rogue_health_server(&cert, &key).await);
    let err = failed(&probe(&["--data-dir", s(&data), "--address", &rogue]).await);
    assert!(
        err.contains("is not the Hallmark CA's server certificate"),
        "{err}"
    );

    // Without a trust bundle, nothing is trusted: the probe says what to give.
    let empty = tempfile::tempdir().unwrap();
    let err = failed(&probe(&["--data-dir", s(empty.path()), "--address", &addr]).await);
    assert!(
        err.contains("cannot read the trust bundle") && err.contains("--ca FILE"),
        "{err}"
    );

    ca.server.shutdown().await;
}
