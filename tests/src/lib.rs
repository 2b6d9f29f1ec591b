//! Helpers of the end-to-end tests: a CA started in-process on loopback ports with its own
//! temporary data dir, gRPC clients with a given credential, the real binaries, and OpenSSL.

pub mod bench;
pub mod cfssl;
pub mod debian;
pub mod fault;
pub mod postgres;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hallmark_ca::clock::SystemClock;
use hallmark_ca::config::Config;
use hallmark_ca::server::{self, RunningServer, ServeOptions};
use hallmark_ca::store::{CountedTable, Store};
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::devices_client::DevicesClient;
use hallmark_proto::v1::enrollment_client::EnrollmentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A CA running in this process.
pub struct TestCa {
    /// The running server.
    pub server: RunningServer,
    /// Its data dir (removed on drop).
    pub dir: tempfile::TempDir,
}

/// Row counts that must not move when a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Certificates.
    pub certificates: i64,
    /// Devices.
    pub devices: i64,
    /// Audit events.
    pub audit_events: i64,
}

impl TestCa {
    /// Starts a fresh CA with the default config on ephemeral loopback ports.
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    /// Starts a fresh CA with `config` (listen addresses are replaced by ephemeral ones). On a
    /// database of `config` (PostgreSQL), the CA is initialised first, as `hallmark-ca init`
    /// does it: `serve` never initialises a shared database.
    pub async fn start_with(mut config: Config) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        config.grpc_listen = "127.0.0.1:0".parse().unwrap();
        config.http_listen = "127.0.0.1:0".parse().unwrap();
        if config.database.is_some() {
            let init = hallmark_ca::bootstrap::InitOptions {
                data_dir: dir.path().join("data"),
                passphrase: None,
                root_key_out: None,
                import: None,
            };
            hallmark_ca::bootstrap::init(&init, &config, Arc::new(SystemClock))
                .await
                .expect("init on the database");
        }
        let server = server::start(ServeOptions {
            data_dir: dir.path().join("data"),
            config,
            passphrase: None,
            clock: Arc::new(SystemClock),
        })
        .await
        .expect("CA starts");
        Self { server, dir }
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The first admin's credential bundle.
    pub fn admin_dir(&self) -> PathBuf {
        self.data_dir().join("admin")
    }

    /// `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.server.grpc_addr)
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.server.store()
    }

    /// Current row counts.
    pub async fn counts(&self) -> Counts {
        let s = self.store();
        Counts {
            certificates: s.count(CountedTable::Certificates).await.unwrap(),
            devices: s.count(CountedTable::Devices).await.unwrap(),
            audit_events: s.count(CountedTable::AuditEvents).await.unwrap(),
        }
    }

    /// A client presenting the credential in `bundle_dir` (cert.pem + key.pem).
    pub async fn client_with(&self, bundle_dir: &Path) -> CertificateAuthorityClient<Channel> {
        let cert = std::fs::read(bundle_dir.join("cert.pem")).unwrap();
        let key = std::fs::read(bundle_dir.join("key.pem")).unwrap();
        self.client(Some((cert, key))).await
    }

    /// A client presenting the given PEM certificate and key, or none.
    pub async fn client(
        &self,
        identity: Option<(Vec<u8>, Vec<u8>)>,
    ) -> CertificateAuthorityClient<Channel> {
        CertificateAuthorityClient::new(self.channel(identity).await)
    }

    /// A TLS channel to the CA presenting the given PEM certificate and key, or none.
    pub async fn channel(&self, identity: Option<(Vec<u8>, Vec<u8>)>) -> Channel {
        let ca = std::fs::read(self.data_dir().join("trust-bundle.pem")).unwrap();
        tls_channel(&self.endpoint(), ca, identity).await
    }

    /// A client with the first admin's credential.
    pub async fn admin(&self) -> CertificateAuthorityClient<Channel> {
        self.client_with(&self.admin_dir()).await
    }

    /// The first admin's certificate and key, PEM.
    pub fn admin_identity(&self) -> (Vec<u8>, Vec<u8>) {
        let d = self.admin_dir();
        (
            std::fs::read(d.join("cert.pem")).unwrap(),
            std::fs::read(d.join("key.pem")).unwrap(),
        )
    }

    /// A `Devices` client with the first admin's credential.
    pub async fn admin_devices(&self) -> DevicesClient<Channel> {
        DevicesClient::new(self.channel(Some(self.admin_identity())).await)
    }

    /// An `Enrollment` client with the first admin's credential.
    pub async fn admin_enrollment(&self) -> EnrollmentClient<Channel> {
        EnrollmentClient::new(self.channel(Some(self.admin_identity())).await)
    }

    /// Stops this CA and starts it again on the same data dir with `config` (new ports).
    pub async fn restart_with(self, mut config: Config) -> Self {
        let TestCa { server, dir } = self;
        server.shutdown().await;
        config.grpc_listen = "127.0.0.1:0".parse().unwrap();
        config.http_listen = "127.0.0.1:0".parse().unwrap();
        let server = server::start(ServeOptions {
            data_dir: dir.path().join("data"),
            config,
            passphrase: None,
            clock: Arc::new(SystemClock),
        })
        .await
        .expect("CA starts again");
        Self { server, dir }
    }
}

/// Path of a workspace binary (`hallmark-ca`, `hallmark`), built by `cargo build` beforehand.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> (a test) or target/<profile>/<bin> (a tool such as
    // hallmark-loadgen) -> target/<profile>/<name>
    let mut dir = exe.parent().expect("target dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// Runs `openssl` with `args`; panics with its stderr when it fails.
pub fn openssl(args: &[&str]) -> String {
    let out = openssl_output(args);
    assert!(
        out.status.success(),
        "openssl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `openssl` with `args` and returns whatever happened.
pub fn openssl_output(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI is installed (scripts/test.sh installs it)")
}

/// Makes a self-signed P-256 root CA with OpenSSL: writes `<name>.key` and `<name>.crt` into
/// `dir` and returns their paths.
pub fn openssl_root_ca(dir: &Path, name: &str, cn: &str, days: u32) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let subj = format!("/CN={cn}");
    let days = days.to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(&key),
        "-out",
        s(&cert),
        "-subj",
        &subj,
        "-days",
        &days,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    (key, cert)
}

/// Makes a new P-256 key at `key` and a CSR for `subj` at `csr` with OpenSSL; `extra` goes to
/// `openssl req` as it is (e.g. `-outform DER`, `-addext ...`).
pub fn openssl_p256_csr(key: &Path, csr: &Path, subj: &str, extra: &[&str]) {
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(key),
        "-out",
        s(csr),
        "-subj",
        subj,
    ];
    args.extend(extra);
    openssl(&args);
}

/// Signs `csr` with the CA `(key, cert)` (as [`openssl_root_ca`] returns it) into `out` with
/// OpenSSL, valid `days` days, with the extensions `ext` (an OpenSSL extfile's text, written
/// beside `out`).
pub fn openssl_sign(csr: &Path, ca: &(PathBuf, PathBuf), ext: &str, days: u32, out: &Path) {
    let ext_file = out.with_extension("ext");
    std::fs::write(&ext_file, ext).unwrap();
    let days = days.to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        s(csr),
        "-CA",
        s(&ca.1),
        "-CAkey",
        s(&ca.0),
        "-CAcreateserial",
        "-days",
        &days,
        "-out",
        s(out),
        "-extfile",
        s(&ext_file),
    ]);
}

/// A fresh P-256 key (PEM) and a CSR for it (DER).
pub fn p256_csr(cn: &str) -> (String, Vec<u8>) {
    hallmark_ca::bundle::new_key_and_csr(cn).expect("key and CSR")
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `hallmark-ca` with `args` (no key passphrase in the environment, errors only logged);
/// what it did.
pub fn hallmark_ca(args: &[&str]) -> Output {
    Command::new(bin("hallmark-ca"))
        .args(args)
        .env_remove("HALLMARK_CA_PASSPHRASE")
        .env("RUST_LOG", "error")
        .output()
        .expect("run hallmark-ca")
}

/// A TLS channel to `endpoint` trusting `ca` (PEM), presenting the given PEM certificate and
/// key, or none.
pub async fn tls_channel(
    endpoint: &str,
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(endpoint.to_owned())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("connect to the CA")
}

/// Ephemeral loopback ports for gRPC and HTTP.
const LOOPBACK_ANY: (&str, &str) = ("127.0.0.1:0", "127.0.0.1:0");

/// A `hallmark-ca serve` child process, stopped with SIGTERM on drop.
pub struct CaProcess {
    child: Child,
    /// The `HALLMARK_*` variables it printed, in order.
    pub env: Vec<(String, String)>,
    /// Its HTTP address.
    pub http: String,
}

impl CaProcess {
    /// Starts `hallmark-ca serve` on ephemeral loopback ports and waits for its set-up lines.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(
            Command::new(bin("hallmark-ca")),
            data_dir,
            LOOPBACK_ANY,
            extra,
        )
    }

    /// Starts `hallmark-ca serve` through `command` (a wrapper such as `nsenter ... --`, with
    /// the `hallmark-ca` binary as its last argument), listening on `listen` (gRPC, HTTP).
    pub fn start_through(
        command: Command,
        data_dir: &Path,
        listen: (&str, &str),
        extra: &[&str],
    ) -> Self {
        Self::spawn(command, data_dir, listen, extra)
    }

    /// Like [`CaProcess::start`], but the CA starts with a soft open-files limit of `nofile`
    /// (as on a host whose default is 1024), through `sh -c 'ulimit -Sn N; exec ...'`.
    pub fn start_with_soft_nofile(data_dir: &Path, extra: &[&str], nofile: u32) -> Self {
        let mut sh = Command::new("sh");
        sh.args([
            "-c",
            &format!("ulimit -Sn {nofile} && exec \"$0\" \"$@\""),
            s(&bin("hallmark-ca")),
        ]);
        Self::spawn(sh, data_dir, LOOPBACK_ANY, extra)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL: no shutdown, as a crashed or evicted replica) and reaps it.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(mut command: Command, data_dir: &Path, listen: (&str, &str), extra: &[&str]) -> Self {
        let mut child = command
            .args([
                "serve",
                "--data-dir",
                s(data_dir),
                "--grpc-listen",
                listen.0,
                "--http-listen",
                listen.1,
            ])
            .args(extra)
            .env_remove("HALLMARK_CA_PASSPHRASE")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hallmark-ca");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut env = Vec::new();
        let mut http = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while env.len() < 4 {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("hallmark-ca printed its set-up lines in time");
            if let Some(rest) = line.trim().strip_prefix("export ") {
                let (k, v) = rest.split_once('=').unwrap();
                env.push((k.to_owned(), v.to_owned()));
            }
            if let Some(i) = line.find("HTTP http://") {
                http = line[i + "HTTP http://".len()..].trim().to_owned();
            }
        }
        Self { child, env, http }
    }

    /// Runs the `hallmark` CLI with the printed admin environment.
    pub fn hallmark(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("hallmark"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run hallmark")
    }

    /// Runs the `hallmark` CLI like [`CaProcess::hallmark`], with the credential bundle in
    /// `bundle` (cert.pem, key.pem) instead of the first admin's.
    pub fn hallmark_as(&self, bundle: &Path, args: &[&str]) -> std::process::Output {
        Command::new(bin("hallmark"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HALLMARK_CERT", bundle.join("cert.pem"))
            .env("HALLMARK_KEY", bundle.join("key.pem"))
            .output()
            .expect("run hallmark")
    }

    /// A TLS channel to it with the credential it printed (the first admin's).
    pub async fn admin_channel(&self) -> Channel {
        let read = |var: &str| std::fs::read(self.var(var)).unwrap();
        let identity = (read("HALLMARK_CERT"), read("HALLMARK_KEY"));
        tls_channel(
            self.var("HALLMARK_ENDPOINT"),
            read("HALLMARK_CA"),
            Some(identity),
        )
        .await
    }

    /// A `HALLMARK_*` variable the CA printed at start.
    pub fn var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("hallmark-ca did not print {name}"))
    }

    /// `hallmark cert issue --generate-key` for `device` with `profile` (in `zone` when given)
    /// into the bundle directory `out`, as the admin; what it printed.
    pub fn issue_bundle(
        &self,
        device: &str,
        profile: &str,
        zone: Option<&str>,
        out: &Path,
    ) -> String {
        let mut args = vec!["cert", "issue", "--device", device, "--profile", profile];
        if let Some(z) = zone {
            args.extend(["--zone", z]);
        }
        args.extend(["--generate-key", "--out", s(out)]);
        ok(&self.hallmark(&args))
    }

    /// A station's provisioner credential `name`, scoped to `zones` and `profiles` (comma
    /// lists), written to `out` with `hallmark credential create`.
    pub fn provisioner_credential(&self, name: &str, zones: &str, profiles: &str, out: &Path) {
        ok(&self.hallmark(&[
            "credential",
            "create",
            "--role",
            "provisioner",
            "--name",
            name,
            "--zones",
            zones,
            "--profiles",
            profiles,
            "--out",
            s(out),
        ]));
    }

    /// A plain HTTP/1.1 GET with extra header lines; `(status line and headers, body)`.
    pub fn http_get_raw(&self, path: &str, extra_headers: &str) -> (String, Vec<u8>) {
        http_get_raw(&self.http, path, extra_headers)
    }

    /// GETs the CRL at `path` (`/crl/<issuer>.crl`, DER) and writes it as PEM to `out`;
    /// `Ok(head)` of a 200 answer, `Err(head)` of any other (nothing is written then).
    pub fn fetch_crl(&self, path: &str, out: &Path) -> Result<String, String> {
        let (head, body) = self.http_get_raw(path, "");
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head);
        }
        let der = out.with_extension("der");
        std::fs::write(&der, body).unwrap();
        openssl(&["crl", "-inform", "DER", "-in", s(&der), "-out", s(out)]);
        Ok(head)
    }

    /// [`CaProcess::fetch_crl`] until `done` holds for the CRL (within 10 s), asserting every
    /// answer is a 200 with the DER content type.
    pub fn fetch_crl_until(&self, path: &str, out: &Path, done: impl Fn(&Path) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let head = self
                .fetch_crl(path, out)
                .unwrap_or_else(|head| panic!("{path}: {head}"));
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/pkix-crl"),
                "{head}"
            );
            if done(out) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the CRL at {path} did not change in time"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A plain HTTP/1.1 GET on the HTTP side; the whole response.
    pub fn http_get(&self, path: &str) -> String {
        let (head, body) = self.http_get_raw(path, "");
        format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body))
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `limit`. Returns how
/// long it took.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The CRL number of the (first) CRL of a PEM file, as OpenSSL reads it.
pub fn crl_number(pem: &Path) -> u64 {
    let text = openssl(&["crl", "-in", s(pem), "-noout", "-crlnumber"]);
    let hex = text
        .trim()
        .trim_start_matches("crlNumber=")
        .trim_start_matches("0x");
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("crl number in `{text}`"))
}

/// A plain HTTP/1.1 GET of `path` at `addr` (`host:port`) with extra header lines; `(status
/// line and headers, body)`.
pub fn http_get_raw(addr: &str, path: &str, extra_headers: &str) -> (String, Vec<u8>) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    (
        String::from_utf8_lossy(&out[..split]).into_owned(),
        out[split + 4..].to_vec(),
    )
}

/// `hallmark` with only the endpoint: what a device has (its bundle brings the trust bundle).
pub fn as_device(endpoint: &str, args: &[&str]) -> Output {
    Command::new(bin("hallmark"))
        .args(args)
        .env_clear()
        .env("HALLMARK_ENDPOINT", endpoint)
        .output()
        .expect("run hallmark")
}

/// Asserts that OpenSSL verifies the signature of the CRL file `crl` (PEM) with a CA of
/// `ca_file`.
pub fn assert_crl_verifies(crl: &Path, ca_file: &Path) {
    let v = openssl_output(&[
        "crl",
        "-in",
        s(crl),
        "-CAfile",
        s(ca_file),
        "-noout",
        "-verify",
    ]);
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("verify OK"),
        "{}: {v:?}",
        crl.display()
    );
}

/// Asserts a command succeeded and returns its stdout.
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a command failed and returns what it wrote to stderr.
pub fn refused(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "command should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `result` failed with `code` and a message containing `needle`.
pub fn assert_refused<T: std::fmt::Debug>(
    case: &str,
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    needle: &str,
) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert!(
        status.message().contains(needle),
        "{case}: message `{}` should mention `{needle}`",
        status.message()
    );
}

/// Asserts that OpenSSL verifies the bundle in `dir` (`cert.pem` against `ca.pem`, with
/// `chain.pem` as untrusted intermediates).
pub fn assert_bundle_verifies(dir: &Path) {
    let verify = openssl(&[
        "verify",
        "-CAfile",
        s(&dir.join("ca.pem")),
        "-untrusted",
        s(&dir.join("chain.pem")),
        s(&dir.join("cert.pem")),
    ]);
    assert!(verify.trim_end().ends_with(": OK"), "{verify}");
}

/// The path part (`/crl/<issuer>.crl`) of the CRL distribution point of a certificate file.
pub fn cdp_path(cert: &Path) -> String {
    let text = openssl(&[
        "x509",
        "-in",
        s(cert),
        "-noout",
        "-ext",
        "crlDistributionPoints",
    ]);
    let uri = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("URI:"))
        .expect("a CDP URI")
        .to_owned();
    let path = uri.split_once("://").expect("a URL").1;
    format!("/{}", path.split_once('/').expect("a path").1)
}

/// A child process stopped with SIGTERM (then SIGKILL after 5 s) on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
