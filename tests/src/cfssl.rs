//! cfssl beside Hallmark in the load generator: `cfssl serve` (Debian's `golang-cfssl`) with a
//! P-256 CA made by OpenSSL on a free loopback port, and a client that has it sign CSRs over
//! HTTP/1.1 keep-alive connections (`POST /api/v1/cfssl/sign`), as Hallmark's clients do over
//! gRPC. cfssl stores nothing; it is the reference for the CPU a signing service spends.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::{Kill, openssl, s, wait_until};

/// A running `cfssl serve`, stopped on drop.
pub struct Cfssl {
    process: Kill,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Cfssl {
    /// Starts `cfssl serve` with a new CA; `None` (after saying why) when cfssl is not installed.
    pub fn start() -> Option<Self> {
        if Command::new("cfssl").arg("version").output().is_err() {
            eprintln!("cfssl is not installed (Debian: apt install golang-cfssl): no comparison");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (key, cert, config) = (
            dir.path().join("ca.key"),
            dir.path().join("ca.pem"),
            dir.path().join("config.json"),
        );
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            s(&key),
        ]);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            s(&key),
            "-subj",
            "/CN=cfssl bench CA",
            "-days",
            "30",
            "-out",
            s(&cert),
        ]);
        std::fs::write(
            &config,
            r#"{"signing":{"default":{"expiry":"720h","usages":["digital signature","client auth"]}}}"#,
        )
        .expect("write the cfssl config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let process = Kill(serve(&cert, &key, &config, port));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("cfssl listening", Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Some(Self {
            process,
            addr,
            _dir: dir,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

/// `cfssl serve` logging warnings only (as the CA under load logs).
fn serve(cert: &Path, key: &Path, config: &Path, port: u16) -> std::process::Child {
    Command::new("cfssl")
        .args(["serve", "-loglevel", "2", "-address", "127.0.0.1"])
        .args(["-port", &port.to_string()])
        .args(["-ca", s(cert), "-ca-key", s(key), "-config", s(config)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cfssl serve")
}

/// One keep-alive HTTP/1.1 connection to cfssl.
pub struct CfsslClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl CfsslClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to cfssl");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 with cfssl");
        tokio::spawn(conn);
        Self { sender }
    }

    /// Has cfssl sign `csr` (DER); panics unless it answers with a certificate.
    pub async fn sign(&mut self, csr: &[u8]) {
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr.to_vec()));
        let body = serde_json::json!({ "certificate_request": pem }).to_string();
        let request = hyper::Request::post("/api/v1/cfssl/sign")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("cfssl answers");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("cfssl's answer")
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\"success\":true"), "cfssl refused: {text}");
    }
}
