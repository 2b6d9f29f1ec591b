//! The CA's own identity (issue 10, item 1), from the attacker's side.
//!
//! - Device ids that name the CA, the local host or an IP address are refused at registration
//!   and issuance, and a provisioner's certificates carry DNS names only under the zone's
//!   configured suffixes.
//! - A rogue gRPC server presenting a gateway certificate for `localhost`, signed by the real
//!   issuing CA exactly as the old code issued it, is refused by the CLI, `enroll`, `rotate`,
//!   the broker agent and the factory station, which write nothing.
//! - A rogue server holding the CA's real server key, answering with a trust bundle of a new
//!   root, is refused by `rotate`, `enroll`, the agent and the station, which write nothing.
//! - A CA whose server certificate lacks the marker reissues it at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hallmark_ca::api::tls;
use hallmark_ca::authority::csr::check_csr;
use hallmark_ca::authority::profile::{ProfileOverride, ProfileSet};
use hallmark_ca::authority::server_identity::has_ca_server_eku;
use hallmark_ca::authority::{Authority, IssuingCa, LeafRequest, NamingPolicy};
use hallmark_ca::bootstrap::{DataDir, load_issuing};
use hallmark_ca::clock::SystemClock;
use hallmark_ca::config::{Config, ZoneConfig};
use hallmark_ca::identity::DeviceId;
use hallmark_ca::store::{IssuerKind, NewDevice};
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_server::{
    CertificateAuthority, CertificateAuthorityServer,
};
use hallmark_proto::v1::devices_client::DevicesClient;
use hallmark_proto::v1::devices_server::{Devices, DevicesServer};
use hallmark_proto::v1::revocation_client::RevocationClient;
use hallmark_proto::v1::revocation_server::{Revocation, RevocationServer};
use hallmark_tests::{TestCa, assert_refused, bin, p256_csr, s};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::{Request, Response, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a client of the test ran: exit status and both outputs.
struct Ran {
    success: bool,
    text: String,
}

/// Runs the `hallmark` CLI (without blocking the runtime the CA runs on) with `env`.
async fn hallmark(env: &[(&str, String)], args: &[&str]) -> Ran {
    let out = tokio::process::Command::new(bin("hallmark"))
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("run hallmark");
    Ran {
        success: out.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The environment of a client with the credential bundle `dir` talking to `endpoint`.
fn env_of(endpoint: &str, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("HALLMARK_ENDPOINT", endpoint.to_owned()),
        ("HALLMARK_CA", s(&dir.join("ca.pem")).to_owned()),
        ("HALLMARK_CERT", s(&dir.join("cert.pem")).to_owned()),
        ("HALLMARK_KEY", s(&dir.join("key.pem")).to_owned()),
    ]
}

/// The admin's environment against the real CA.
fn admin_env(ca: &TestCa) -> Vec<(&'static str, String)> {
    env_of(&ca.endpoint(), &ca.admin_dir())
}

/// `hallmark` as the admin of the real CA; panics when it fails.
async fn admin_ok(ca: &TestCa, args: &[&str]) -> String {
    let r = hallmark(&admin_env(ca), args).await;
    assert!(r.success, "hallmark {}: {}", args.join(" "), r.text);
    r.text
}

fn cert_der(pem: &[u8]) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The DNS-name SANs of a certificate.
fn dns_names(der: &[u8]) -> Vec<String> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every file below `dir` with its contents (empty when `dir` does not exist).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(snapshot(&p));
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Issues a provisioner credential scoped to `gateway` in zones `field` and `it`.
async fn provisioner_identity(ca: &TestCa) -> (Vec<u8>, Vec<u8>) {
    let (key, csr) = p256_csr("station-1");
    let issued = ca
        .admin()
        .await
        .issue(pb::IssueRequest {
            device_id: "station-1".into(),
            profile: "provisioner".into(),
            csr,
            scope: Some(pb::ProvisionerScope {
                profiles: vec!["gateway".into()],
                zones: vec!["field".into(), "it".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (issued.chain_pem.into_bytes(), key.into_bytes())
}

fn gateway(id: &str, zone: &str) -> pb::IssueRequest {
    pb::IssueRequest {
        device_id: id.into(),
        profile: "gateway".into(),
        zone: zone.into(),
        csr: p256_csr(id).1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_device_ids_are_refused_and_dns_names_need_a_zone_suffix() {
    let mut config = Config {
        server_names: vec!["ca.plant4.example".into()],
        ..Config::default()
    };
    config.zones.insert(
        "field".into(),
        ZoneConfig {
            dns_suffixes: vec!["plant4.example".into()],
        },
    );
    // Renewals right after issuance, for the DNS-name rule of renewals below.
    config.profiles.insert(
        "gateway".into(),
        ProfileOverride {
            min_renewal_interval: Some(Duration::ZERO),
            ..Default::default()
        },
    );
    let ca = TestCa::start_with(config).await;
    let station = provisioner_identity(&ca).await;
    let mut prov = ca.client(Some(station.clone())).await;
    let mut prov_devices = DevicesClient::new(ca.channel(Some(station)).await);
    let before = ca.counts().await;

    // (a) A provisioner may neither register nor issue the CA's names, the local host or IPs.
    let reserved = [
        ("localhost", "names the local host"),
        ("gw.localhost", "names the local host"),
        ("127.0.0.1", "reads as an IP address"),
        ("0x7f000001", "reads as an IP address"),
        ("10.1", "reads as an IP address"),
        ("ca.plant4.example", "name of the CA's own server"),
        ("hallmark-ca", "name of the CA's own server"),
    ];
    for (id, why) in reserved {
        let r = prov_devices
            .register(pb::RegisterDeviceRequest {
                id: id.into(),
                zone: "field".into(),
                profile: "gateway".into(),
                ..Default::default()
            })
            .await;
        assert_refused(
            &format!("register {id}"),
            r,
            tonic::Code::InvalidArgument,
            why,
        );
        let r = prov.issue(gateway(id, "field")).await;
        assert_refused(&format!("issue {id}"), r, tonic::Code::InvalidArgument, why);
    }
    let imported = prov_devices
        .import(pb::ImportDevicesRequest {
            devices: reserved
                .iter()
                .map(|(id, _)| pb::RegisterDeviceRequest {
                    id: (*id).into(),
                    zone: "field".into(),
                    profile: "gateway".into(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.imported, 0);
    assert_eq!(
        imported.errors.len(),
        reserved.len(),
        "{:?}",
        imported.errors
    );
    // Not even an admin gets a credential named like the CA.
    let r = hallmark(
        &admin_env(&ca),
        &[
            "credential",
            "create",
            "--role",
            "admin",
            "--name",
            "localhost",
            "--out",
            s(&ca.dir.path().join("x")),
        ],
    )
    .await;
    assert!(
        !r.success && r.text.contains("names the local host"),
        "{}",
        r.text
    );
    assert_eq!(ca.counts().await, before, "refusals store nothing");

    // A device registered before the rule (written straight into the store) cannot get a
    // certificate either, not even from an admin.
    ca.store()
        .register_devices(
            vec![NewDevice {
                id: "localhost.".into(),
                zone: "field".into(),
                profile: "gateway".into(),
                lot: None,
                model: None,
                serial_number: None,
                manufacturer: None,
            }],
            0,
            "test:legacy-row",
        )
        .await
        .unwrap();
    let r = ca.admin().await.issue(gateway("localhost.", "")).await;
    assert_refused(
        "issue for a legacy row",
        r,
        tonic::Code::InvalidArgument,
        "names the local host",
    );

    // DNS names: a provisioner's gateway gets one only under its zone's suffix; an admin's
    // as the profile says; a renewal keeps what the renewed certificate had.
    let issued = |r: pb::IssueResponse| r.certificate.unwrap().der;
    let under = issued(
        prov.issue(gateway("gw1.plant4.example", "field"))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(dns_names(&under), ["gw1.plant4.example"]);
    let (plain_key, plain_csr) = p256_csr("gw2");
    let plain = prov
        .issue(pb::IssueRequest {
            csr: plain_csr,
            ..gateway("gw2", "field")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dns_names(&issued(plain.clone())).is_empty());
    let other_zone = issued(
        prov.issue(gateway("gw3.plant4.example", "it"))
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(dns_names(&other_zone).is_empty(), "zone it has no suffix");
    let by_admin = issued(
        ca.admin()
            .await
            .issue(gateway("gw4", "it"))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(dns_names(&by_admin), ["gw4"]);
    let renewed = ca
        .client(Some((plain.chain_pem.into_bytes(), plain_key.into_bytes())))
        .await
        .renew(pb::RenewRequest {
            csr: p256_csr("gw2").1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dns_names(&issued(renewed)).is_empty(), "renewal adds none");
    println!("reserved ids refused; DNS names only under zone suffixes");
}

/// The rogue server's answers.
#[derive(Clone)]
struct Rogue {
    /// Signs leaves with the real issuing CA (the attacker has its key in this test).
    authority: Authority,
    /// The trust bundle it hands out: a root of its own and the real issuing CA.
    roots_pem: String,
    intermediates_pem: String,
    /// The real CRLs, so that the agent would otherwise be content.
    crls: pb::CrlSet,
}

impl Rogue {
    fn answer(&self, csr: &[u8]) -> Result<Response<pb::IssueResponse>, Status> {
        let profiles = ProfileSet::new(&BTreeMap::new()).unwrap();
        let profile = profiles.get("sensor").unwrap();
        let csr = check_csr(csr, profile).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = DeviceId::parse("rogue-device").unwrap();
        let leaf = self
            .authority
            .sign_leaf(&LeafRequest {
                device_id: &id,
                zone: "field",
                profile,
                csr: &csr,
                lifetime: None,
                dns_san_allowed: true,
            })
            .map_err(|e| Status::internal(e.to_string()))?;
        let pem = hallmark_ca::authority::ca::der_to_pem;
        Ok(Response::new(pb::IssueResponse {
            chain_pem: format!("{}{}", pem(&leaf.der), leaf.issuer.cert_pem()),
            trust_bundle_pem: format!("{}{}", self.roots_pem, self.intermediates_pem),
            certificate: Some(pb::Certificate {
                serial: leaf.serial,
                device_id: id.to_string(),
                profile: "sensor".into(),
                zone: "field".into(),
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                der: leaf.der,
                ..Default::default()
            }),
        }))
    }
}

#[tonic::async_trait]
impl CertificateAuthority for Rogue {
    async fn issue(
        &self,
        r: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        self.answer(&r.into_inner().csr)
    }
    async fn get_certificate(
        &self,
        _: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        Err(Status::unimplemented("rogue"))
    }
    async fn list_certificates(
        &self,
        _: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        Ok(Response::new(pb::ListCertificatesResponse::default()))
    }
    async fn get_trust_bundle(
        &self,
        _: Request<pb::GetTrustBundleRequest>,
    ) -> Result<Response<pb::TrustBundle>, Status> {
        Ok(Response::new(pb::TrustBundle {
            roots_pem: self.roots_pem.clone(),
            intermediates_pem: self.intermediates_pem.clone(),
        }))
    }
    async fn enroll(
        &self,
        r: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        self.answer(&r.into_inner().csr)
    }
    async fn renew(
        &self,
        r: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        self.answer(&r.into_inner().csr)
    }
}

#[tonic::async_trait]
impl Revocation for Rogue {
    async fn revoke(
        &self,
        _: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        Err(Status::unimplemented("rogue"))
    }
    async fn suspend(
        &self,
        _: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        Err(Status::unimplemented("rogue"))
    }
    async fn resume(
        &self,
        _: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        Err(Status::unimplemented("rogue"))
    }
    async fn get_crl(&self, _: Request<pb::GetCrlRequest>) -> Result<Response<pb::CrlSet>, Status> {
        Ok(Response::new(self.crls.clone()))
    }
    type WatchCrlStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::CrlSet, Status>>>;
    async fn watch_crl(
        &self,
        _: Request<pb::WatchCrlRequest>,
    ) -> Result<Response<Self::WatchCrlStream>, Status> {
        Ok(Response::new(tokio_stream::iter(vec![Ok(self
            .crls
            .clone())])))
    }
}

#[tonic::async_trait]
impl Devices for Rogue {
    async fn register(
        &self,
        r: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let r = r.into_inner();
        Ok(Response::new(pb::Device {
            id: r.id,
            zone: r.zone,
            profile: r.profile,
            status: pb::DeviceStatus::Active as i32,
            ..Default::default()
        }))
    }
    async fn import(
        &self,
        _: Request<pb::ImportDevicesRequest>,
    ) -> Result<Response<pb::ImportDevicesResponse>, Status> {
        Err(Status::unimplemented("rogue"))
    }
    async fn get(&self, _: Request<pb::GetDeviceRequest>) -> Result<Response<pb::Device>, Status> {
        Err(Status::unimplemented("rogue"))
    }
    async fn list(
        &self,
        _: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        Err(Status::unimplemented("rogue"))
    }
    async fn set_status(
        &self,
        _: Request<pb::SetDeviceStatusRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        Err(Status::unimplemented("rogue"))
    }
    async fn readmit(
        &self,
        _: Request<pb::ReadmitDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        Err(Status::unimplemented("rogue"))
    }
}

/// The real issuing CA with its key, read from the data dir as an attacker holding it would.
async fn real_issuing(ca: &TestCa) -> IssuingCa {
    let issuers = ca.store().issuers().await.unwrap();
    let record = issuers
        .iter()
        .find(|i| i.kind == IssuerKind::Issuing && i.active)
        .unwrap();
    load_issuing(&DataDir::new(ca.data_dir()), record, None).unwrap()
}

/// A self-signed root of the attacker's, with the real root's name.
fn rogue_root() -> String {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Hallmark Root CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    p.self_signed(&key).unwrap().pem()
}

/// Serves `rogue` with TLS certificate `chain` and `key` on a free loopback port.
async fn serve_rogue(
    rogue: Rogue,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> (u16, tokio::sync::watch::Sender<bool>) {
    let config = tls::server_config(chain, key, false, Vec::new()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    // A plain accept loop: the rogue needs none of the CA's connection limits.
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                a = listener.accept() => match a {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
                _ = stopped.changed() => break,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                }
            });
        }
    });
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CertificateAuthorityServer::new(rogue.clone()))
            .add_service(DevicesServer::new(rogue.clone()))
            .add_service(RevocationServer::new(rogue))
            .serve_with_incoming(incoming),
    );
    (port, stop)
}

/// What the clients need: a device bundle, a broker-agent bundle and an enrollment token.
struct Clients {
    device: PathBuf,
    agent: PathBuf,
    station: PathBuf,
    token: String,
    /// Everything the clients hold or would write (bundles, broker files, the station's image).
    work: PathBuf,
    /// The station's lot manifest (its journal and report go beside it, outside `work`).
    lot: PathBuf,
}

async fn clients(ca: &TestCa) -> Clients {
    let work = ca.dir.path().join("clients");
    std::fs::create_dir_all(&work).unwrap();
    let device = work.join("sensor-1");
    admin_ok(
        ca,
        &[
            "cert",
            "issue",
            "--device",
            "sensor-1",
            "--profile",
            "sensor",
            "--generate-key",
            "--out",
            s(&device),
        ],
    )
    .await;
    let agent = work.join("agent");
    admin_ok(
        ca,
        &[
            "credential",
            "create",
            "--role",
            "broker-agent",
            "--name",
            "agent-1",
            "--out",
            s(&agent),
        ],
    )
    .await;
    admin_ok(
        ca,
        &[
            "device",
            "register",
            "sensor-2",
            "--zone",
            "field",
            "--profile",
            "sensor",
        ],
    )
    .await;
    let created = admin_ok(ca, &["token", "create", "--device", "sensor-2"]).await;
    let token = created
        .split_whitespace()
        .find(|w| w.starts_with("hmk_"))
        .unwrap_or_else(|| panic!("a token in {created}"))
        .to_owned();
    let station = work.join("station");
    admin_ok(
        ca,
        &[
            "credential",
            "create",
            "--role",
            "provisioner",
            "--name",
            "station-1",
            "--zones",
            "field",
            "--profiles",
            "sensor",
            "--out",
            s(&station),
        ],
    )
    .await;
    let lots = ca.dir.path().join("lots");
    std::fs::create_dir_all(&lots).unwrap();
    let lot = lots.join("lot-1.csv");
    std::fs::write(
        &lot,
        "device_id,zone,profile,model,serial_number\nsensor-9,field,sensor,TX-100,SN9\n",
    )
    .unwrap();
    Clients {
        device,
        agent,
        station,
        token,
        work,
        lot,
    }
}

/// The real CRLs, as the real CA serves them.
async fn real_crls(ca: &TestCa) -> pb::CrlSet {
    RevocationClient::new(ca.channel(None).await)
        .get_crl(pb::GetCrlRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Runs `rotate`, `enroll`, the broker agent, the factory station (and with `cli`, a plain
/// CLI call) against the rogue at `endpoint`; each must fail with `needle` in its message and
/// write nothing.
async fn all_refuse(c: &Clients, endpoint: &str, needle: &str, cli: bool) {
    let before = snapshot(&c.work);
    let device_env = env_of(endpoint, &c.device);
    let agent_env = env_of(endpoint, &c.agent);
    let enroll_env: Vec<_> = device_env
        .iter()
        .filter(|(k, _)| *k == "HALLMARK_ENDPOINT" || *k == "HALLMARK_CA")
        .cloned()
        .collect();
    let (crl_file, ca_file, enrolled) = (
        c.work.join("broker-crl.pem"),
        c.work.join("broker-ca.pem"),
        c.work.join("enrolled"),
    );
    let mut runs = vec![
        (
            "rotate",
            hallmark(
                &device_env,
                &["rotate", "--bundle", s(&c.device), "--force"],
            )
            .await,
        ),
        (
            "enroll",
            hallmark(
                &enroll_env,
                &["enroll", "--token", &c.token, "--out", s(&enrolled)],
            )
            .await,
        ),
        (
            "broker sync --once",
            hallmark(
                &agent_env,
                &[
                    "broker",
                    "sync",
                    "--once",
                    "--crl-file",
                    s(&crl_file),
                    "--ca-file",
                    s(&ca_file),
                    "--reload-command",
                    "true",
                ],
            )
            .await,
        ),
    ];
    let station = tokio::process::Command::new(bin("hallmark-provisioner"))
        .args(["run", "--lot", s(&c.lot), "--target"])
        .arg(format!("dir:{}", s(&c.work.join("image"))))
        .env_clear()
        .envs(env_of(endpoint, &c.station))
        .output()
        .await
        .unwrap();
    runs.push((
        "hallmark-provisioner run",
        Ran {
            success: station.status.success(),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&station.stdout),
                String::from_utf8_lossy(&station.stderr)
            ),
        },
    ));
    if cli {
        runs.push(("cert list", hallmark(&agent_env, &["cert", "list"]).await));
    }
    // Every client's outcome first, then the verdict: a failure names all that gave in.
    let mut gave_in = Vec::new();
    for (what, ran) in &runs {
        println!("{what}: {}", ran.text.trim());
        if ran.success || !ran.text.contains(needle) {
            gave_in.push(*what);
        }
    }
    let written: Vec<_> = snapshot(&c.work)
        .into_iter()
        .filter(|(p, data)| before.get(p) != Some(data))
        .map(|(p, _)| p)
        .collect();
    assert!(
        gave_in.is_empty() && written.is_empty(),
        "accepted the rogue (or said something else than `{needle}`): {gave_in:?}; wrote {written:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_server_with_a_gateway_certificate_for_localhost_is_refused() {
    let ca = TestCa::start().await;
    let c = clients(&ca).await;

    // The certificate a provisioner scoped to `gateway` got from the old code for a device
    // named `localhost`: gateway profile, DNS SAN `localhost`, signed by the real issuing CA.
    let issuing = real_issuing(&ca).await;
    let issuing_pem = issuing.cert_pem();
    let issuing_der = issuing.cert_der.clone();
    let authority = Authority::new(
        Arc::new(issuing),
        NamingPolicy {
            organisation: "Hallmark".into(),
            device_uri_template: "urn:dev:org:32473-{device}".into(),
            crl_base_url: None,
        },
        Arc::new(SystemClock),
    );
    let profiles = ProfileSet::new(&BTreeMap::new()).unwrap();
    let gateway_profile = profiles.get("gateway").unwrap();
    let (key_pem, csr) = p256_csr("localhost");
    let csr = check_csr(&csr, gateway_profile).unwrap();
    let id = DeviceId::parse("localhost").unwrap();
    let leaf = authority
        .sign_leaf(&LeafRequest {
            device_id: &id,
            zone: "field",
            profile: gateway_profile,
            csr: &csr,
            lifetime: None,
            dns_san_allowed: true,
        })
        .unwrap();
    assert_eq!(dns_names(&leaf.der), ["localhost"]);
    let rogue = Rogue {
        authority,
        roots_pem: rogue_root(),
        intermediates_pem: issuing_pem,
        crls: real_crls(&ca).await,
    };
    let (port, _stop) = serve_rogue(
        rogue,
        vec![leaf.der.clone().into(), issuing_der.into()],
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
    )
    .await;
    let endpoint = format!("https://localhost:{port}");
    all_refuse(
        &c,
        &endpoint,
        "is not the Hallmark CA's server certificate",
        true,
    )
    .await;

    // The genuine CA is still accepted by the same clients.
    let ran = hallmark(&env_of(&ca.endpoint(), &c.agent), &["cert", "list"]).await;
    assert!(ran.success, "{}", ran.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_bundle_with_a_new_root_is_refused_even_from_the_ca_server_key() {
    let ca = TestCa::start().await;
    let c = clients(&ca).await;
    let server_dir = ca.data_dir().join("server");
    let chain_pem = std::fs::read(server_dir.join("chain.pem")).unwrap();
    assert!(has_ca_server_eku(&cert_der(&chain_pem)));
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(server_dir.join("key.pem")).unwrap();
    let issuing = real_issuing(&ca).await;
    let issuing_pem = issuing.cert_pem();
    let rogue = Rogue {
        authority: Authority::new(
            Arc::new(issuing),
            NamingPolicy {
                organisation: "Hallmark".into(),
                device_uri_template: "urn:dev:org:32473-{device}".into(),
                crl_base_url: None,
            },
            Arc::new(SystemClock),
        ),
        roots_pem: rogue_root(),
        intermediates_pem: issuing_pem,
        crls: real_crls(&ca).await,
    };
    let (port, _stop) = serve_rogue(rogue, chain, key).await;
    // The real server certificate names 127.0.0.1: TLS passes, the bundle check must not.
    all_refuse(
        &c,
        &format!("https://127.0.0.1:{port}"),
        "root rollover is an explicit operator action",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_without_the_marker_is_reissued_at_start() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let start = |data: PathBuf| async move {
        let config = Config {
            grpc_listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        hallmark_ca::server::start(hallmark_ca::server::ServeOptions {
            data_dir: data,
            config,
            passphrase: None,
            clock: Arc::new(SystemClock),
        })
        .await
        .unwrap()
    };
    start(data.clone()).await.shutdown().await;

    // A server certificate as the old code made it: the same names, no marker.
    let server = data.join("server");
    let issuing_key =
        hallmark_ca::keys::file::read_key(&data.join("ca/issuing.key"), None).unwrap();
    let issuing_der = cert_der(&std::fs::read(data.join("ca/issuing.crt")).unwrap());
    let issuer =
        rcgen::Issuer::from_ca_cert_der(&issuing_der.as_slice().into(), issuing_key).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "hallmark-ca");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let old = p.signed_by(&key, &issuer).unwrap();
    let issuing_pem = hallmark_ca::authority::ca::der_to_pem(&issuing_der);
    std::fs::write(server.join("cert.pem"), old.pem()).unwrap();
    std::fs::write(
        server.join("chain.pem"),
        format!("{}{issuing_pem}", old.pem()),
    )
    .unwrap();
    std::fs::write(server.join("key.pem"), key.serialize_pem()).unwrap();
    assert!(!has_ca_server_eku(old.der()));

    let second = start(data.clone()).await;
    let reissued = cert_der(&std::fs::read(server.join("cert.pem")).unwrap());
    assert!(has_ca_server_eku(&reissued), "reissued with the marker");
    assert_ne!(reissued, old.der().to_vec());
    let endpoint = format!("https://{}", second.grpc_addr);
    let ran = hallmark(&env_of(&endpoint, &data.join("admin")), &["cert", "list"]).await;
    assert!(ran.success, "{}", ran.text);
    second.shutdown().await;
}

/// REVIEW FINDING (issue 10 review): the trust-bundle check reads only `CERTIFICATE` PEM blocks
/// (rustls's PEM reader skips other labels), while the clients write the CA's answer verbatim
/// and OpenSSL (Mosquitto's CA file, `openssl verify -CAfile`) also loads `TRUSTED
/// CERTIFICATE`, `X509 CERTIFICATE` and `X509 CRL` blocks from a CA file. A server holding the
/// CA's server key could so smuggle a root of its own (and a CRL for it) past the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_smuggled_in_a_trusted_certificate_pem_block_is_refused() {
    let ca = TestCa::start().await;
    let c = clients(&ca).await;
    let server_dir = ca.data_dir().join("server");
    let chain_pem = std::fs::read(server_dir.join("chain.pem")).unwrap();
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(server_dir.join("key.pem")).unwrap();
    let issuing = real_issuing(&ca).await;
    let real_bundle = std::fs::read_to_string(ca.data_dir().join("trust-bundle.pem")).unwrap();
    // The genuine bundle, and a root of the attacker's under a label OpenSSL trusts too.
    let smuggled = rogue_root()
        .replace("BEGIN CERTIFICATE", "BEGIN TRUSTED CERTIFICATE")
        .replace("END CERTIFICATE", "END TRUSTED CERTIFICATE");
    let rogue = Rogue {
        authority: Authority::new(
            Arc::new(issuing),
            NamingPolicy {
                organisation: "Hallmark".into(),
                device_uri_template: "urn:dev:org:32473-{device}".into(),
                crl_base_url: None,
            },
            Arc::new(SystemClock),
        ),
        roots_pem: format!("{real_bundle}{smuggled}"),
        intermediates_pem: String::new(),
        crls: real_crls(&ca).await,
    };
    let (port, _stop) = serve_rogue(rogue, chain, key).await;
    all_refuse(
        &c,
        &format!("https://127.0.0.1:{port}"),
        "other than CERTIFICATE",
        false,
    )
    .await;
}
