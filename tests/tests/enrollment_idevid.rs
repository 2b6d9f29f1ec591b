//! Commissioning with manufacturer birth certificates (IEEE 802.1AR IDevID), with manufacturer
//! CAs made by OpenSSL: a registered device enrolls; unknown manufacturers, expired IDevIDs,
//! unknown serial numbers (without auto-register), reused keys and IDevIDs on other RPCs are
//! refused; with auto-register an unknown serial number registers and enrolls.

use std::path::{Path, PathBuf};

use hallmark_proto::v1 as pb;
use hallmark_tests::{
    TestCa, assert_bundle_verifies, assert_refused, bin, openssl, openssl_p256_csr,
    openssl_root_ca, openssl_sign, s,
};
use tonic::Code;
use x509_parser::prelude::*;

/// An IDevID signed by the OpenSSL CA `(ca_key, ca_cert)`, with `serialNumber` in its subject.
fn idevid(dir: &Path, name: &str, ca: &(PathBuf, PathBuf), serial: &str) -> (PathBuf, PathBuf) {
    let (key, csr, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.crt")),
    );
    let subj = format!(
        "/O=Maker/CN=Field Sensor/serialNumber={}",
        serial.replace('/', "\\/")
    );
    openssl_p256_csr(&key, &csr, &subj, &[]);
    openssl_sign(
        &csr,
        ca,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        3650,
        &cert,
    );
    (cert, key)
}

fn identity(pair: &(PathBuf, PathBuf)) -> Option<(Vec<u8>, Vec<u8>)> {
    Some((
        std::fs::read(&pair.0).unwrap(),
        std::fs::read(&pair.1).unwrap(),
    ))
}

fn enroll_req(csr: Vec<u8>) -> pb::EnrollRequest {
    pb::EnrollRequest {
        token: String::new(),
        csr,
        device_id: String::new(),
    }
}

fn csr() -> Vec<u8> {
    hallmark_tests::p256_csr("ignored").1
}

async fn add_manufacturer(
    ca: &TestCa,
    name: &str,
    cert: &Path,
    zone: &str,
    profile: &str,
    auto: bool,
) {
    ca.admin_enrollment()
        .await
        .register_manufacturer_ca(pb::RegisterManufacturerCaRequest {
            name: name.into(),
            ca_cert: std::fs::read(cert).unwrap(),
            zone: zone.into(),
            profile: profile.into(),
            auto_register: auto,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idevid_enrollment_end_to_end() {
    let ca = TestCa::start().await;
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let acme = openssl_root_ca(d, "acme-ca", "ACME Manufacturing CA", 3650);
    // The operator registers the manufacturer with the CLI.
    let admin = ca.admin_dir();
    let added = tokio::process::Command::new(bin("hallmark"))
        .args([
            "manufacturer",
            "add",
            "--name",
            "acme",
            "--ca",
            s(&acme.1),
            "--zone",
            "field",
            "--profile",
            "sensor",
        ])
        .env_clear()
        .env("HALLMARK_ENDPOINT", ca.endpoint())
        .env("HALLMARK_CA", ca.data_dir().join("trust-bundle.pem"))
        .env("HALLMARK_CERT", admin.join("cert.pem"))
        .env("HALLMARK_KEY", admin.join("key.pem"))
        .output()
        .await
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    ca.admin_devices()
        .await
        .register(pb::RegisterDeviceRequest {
            id: "sensor-0200".into(),
            zone: "field".into(),
            profile: "sensor".into(),
            serial_number: "SN-0001".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A registered device enrolls with the CLI, presenting its IDevID.
    let good = idevid(d, "good", &acme, "SN-0001");
    let out = d.join("sensor-0200");
    let trust = ca.data_dir().join("trust-bundle.pem");
    let enrolled = tokio::process::Command::new(bin("hallmark"))
        .args([
            "enroll",
            "--idevid-cert",
            s(&good.0),
            "--idevid-key",
            s(&good.1),
            "--out",
            s(&out),
        ])
        .env_clear()
        .env("HALLMARK_ENDPOINT", ca.endpoint())
        .env("HALLMARK_CA", &trust)
        .output()
        .await
        .unwrap();
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    assert_bundle_verifies(&out);
    let subject = openssl(&[
        "x509",
        "-in",
        s(&out.join("cert.pem")),
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
    ]);
    assert_eq!(subject.trim(), "subject=OU=field,O=Hallmark,CN=sensor-0200");
    // The operational key is new: it differs from the IDevID key.
    assert_ne!(
        openssl(&["x509", "-in", s(&out.join("cert.pem")), "-noout", "-pubkey"]),
        openssl(&["x509", "-in", s(&good.0), "-noout", "-pubkey"])
    );

    let before = ca.counts().await;

    // An IDevID from a manufacturer that is not registered.
    let umbrella = openssl_root_ca(d, "umbrella-ca", "Umbrella Corp CA", 3650);
    let stranger = idevid(d, "stranger", &umbrella, "SN-0001");
    let mut c = ca.client(identity(&stranger)).await;
    assert_refused(
        "unregistered manufacturer",
        c.enroll(enroll_req(csr())).await,
        Code::Unauthenticated,
        "does not chain to a registered manufacturer CA",
    );

    // An expired IDevID from the registered manufacturer (made with rcgen, signed by ACME's key).
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&acme.0).unwrap()).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(&acme.1).unwrap(), ca_key)
            .unwrap();
    let old_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Field Sensor");
    params
        .distinguished_name
        .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-0001");
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.signed_by(&old_key, &issuer).unwrap();
    let mut c = ca
        .client(Some((
            expired.pem().into_bytes(),
            old_key.serialize_pem().into_bytes(),
        )))
        .await;
    assert_refused(
        "expired IDevID",
        c.enroll(enroll_req(csr())).await,
        Code::Unauthenticated,
        "expired or not yet valid",
    );

    // An unknown serial number while auto-register is off.
    let unknown = idevid(d, "unknown", &acme, "SN-0404");
    let mut c = ca.client(identity(&unknown)).await;
    assert_refused(
        "unknown serial, no auto-register",
        c.enroll(enroll_req(csr())).await,
        Code::PermissionDenied,
        "no device with serial number SN-0404 is registered",
    );

    // An IDevID is good for Enroll only.
    let mut c = ca.client(identity(&good)).await;
    assert_refused(
        "IDevID on ListCertificates",
        c.list_certificates(pb::ListCertificatesRequest::default())
            .await,
        Code::Unauthenticated,
        "accepted only by Enroll",
    );
    assert_refused(
        "IDevID on Issue",
        c.issue(pb::IssueRequest {
            device_id: "x".into(),
            profile: "sensor".into(),
            csr: csr(),
            ..Default::default()
        })
        .await,
        Code::Unauthenticated,
        "accepted only by Enroll",
    );

    // The operational key must not be the IDevID key.
    let reuse_csr = d.join("reuse.csr");
    openssl(&[
        "req",
        "-new",
        "-key",
        s(&good.1),
        "-subj",
        "/CN=x",
        "-outform",
        "DER",
        "-out",
        s(&reuse_csr),
    ]);
    assert_refused(
        "IDevID key reused",
        c.enroll(enroll_req(std::fs::read(&reuse_csr).unwrap()))
            .await,
        Code::InvalidArgument,
        "reuses the IDevID key",
    );

    let after = ca.counts().await;
    assert_eq!(
        (after.certificates, after.devices),
        (before.certificates, before.devices),
        "a refused IDevID stored something"
    );

    // With auto-register, an unknown serial number registers itself and enrolls.
    let globex = openssl_root_ca(d, "globex-ca", "Globex Devices CA", 3650);
    add_manufacturer(&ca, "globex", &globex.1, "supervision", "gateway", true).await;
    let newcomer = idevid(d, "newcomer", &globex, "GX/777");
    let mut c = ca.client(identity(&newcomer)).await;
    let resp = c
        .enroll(enroll_req(csr()))
        .await
        .expect("auto-registered enrollment")
        .into_inner();
    let cert = resp.certificate.unwrap();
    assert_eq!(
        (
            cert.device_id.as_str(),
            cert.zone.as_str(),
            cert.profile.as_str()
        ),
        ("globex-gx-777", "supervision", "gateway")
    );
    let (_, x509) = X509Certificate::from_der(&cert.der).unwrap();
    assert_eq!(
        x509.subject().to_string(),
        "CN=globex-gx-777, O=Hallmark, OU=supervision"
    );
    let device = ca
        .admin_devices()
        .await
        .get(pb::GetDeviceRequest {
            id: "globex-gx-777".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(device.serial_number, "GX/777");
    assert_eq!(device.zone, "supervision");
    // Presenting the IDevID again at once does not mint a second certificate: one per the
    // profile's minimum interval.
    assert_refused(
        "IDevID replayed at once",
        c.enroll(enroll_req(csr())).await,
        Code::ResourceExhausted,
        "allows one new certificate every",
    );
    assert_eq!(ca.counts().await.devices, after.devices + 1);

    // Serial numbers belong to a manufacturer: Globex's SN-0001 is not ACME's sensor-0200,
    // which its first enrollment bound to ACME.
    let globex_twin = idevid(d, "twin", &globex, "SN-0001");
    let mut c = ca.client(identity(&globex_twin)).await;
    let twin = c
        .enroll(enroll_req(csr()))
        .await
        .expect("same serial, other manufacturer")
        .into_inner();
    assert_eq!(twin.certificate.unwrap().device_id, "globex-sn-0001");
    let bound = ca
        .admin_devices()
        .await
        .get(pb::GetDeviceRequest {
            id: "sensor-0200".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bound.manufacturer, "acme");
    ca.server.shutdown().await;
}

/// Enrolls with the IDevID `pair` and a fresh key.
async fn enroll_with(
    ca: &TestCa,
    pair: &(PathBuf, PathBuf),
) -> Result<pb::Certificate, tonic::Status> {
    let mut c = ca.client(identity(pair)).await;
    c.enroll(enroll_req(csr()))
        .await
        .map(|r| r.into_inner().certificate.unwrap())
}

fn lifecycle_config(valve_role: &str) -> hallmark_ca::config::Config {
    hallmark_ca::config::Config::parse(&format!(
        "[profiles.sensor]\nmin_renewal_interval = \"1s\"\n\
         [profiles.valve]\nrole = \"{valve_role}\"\nekus = [\"client-auth\"]\n\
         default_lifetime = \"1d\"\nmax_lifetime = \"2d\"\nmin_renewal_interval = \"1s\"\n"
    ))
    .unwrap()
}

/// Past the profiles' one-second renewal interval, and into the next second.
async fn next_interval() {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_decommissioned_device_needs_readmission_to_enroll_by_idevid() {
    use hallmark_proto::v1::revocation_client::RevocationClient;
    use pb::revoke_request::Selector;

    let ca = TestCa::start_with(lifecycle_config("device")).await;
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let acme = openssl_root_ca(d, "acme-ca", "ACME Manufacturing CA", 3650);
    add_manufacturer(&ca, "acme", &acme.1, "field", "sensor", true).await;
    let (one, two) = (
        idevid(d, "one", &acme, "SN-1"),
        idevid(d, "two", &acme, "SN-2"),
    );
    let first = enroll_with(&ca, &one).await.expect("first enrollment");
    assert_eq!(first.device_id, "acme-sn-1");
    let second = enroll_with(&ca, &two).await.expect("first enrollment");
    let mut revocation = RevocationClient::new(ca.channel(Some(ca.admin_identity())).await);
    let by_serial = |serial: &str, reason: pb::RevocationReason| pb::RevokeRequest {
        selector: Some(Selector::Serial(serial.into())),
        reason: reason as i32,
        dry_run: false,
        ..Default::default()
    };

    // Revoked: the birth certificate does not buy a new identity, after the interval too.
    revocation
        .revoke(by_serial(
            &first.serial,
            pb::RevocationReason::KeyCompromise,
        ))
        .await
        .unwrap();
    next_interval().await;
    assert_refused(
        "re-enrollment after a revocation",
        enroll_with(&ca, &one).await,
        Code::FailedPrecondition,
        "hallmark device readmit acme-sn-1",
    );
    // On hold: neither (the hold would be bypassed).
    revocation
        .suspend(by_serial(&second.serial, pb::RevocationReason::Unspecified))
        .await
        .unwrap();
    next_interval().await;
    assert_refused(
        "re-enrollment while on hold",
        enroll_with(&ca, &two).await,
        Code::FailedPrecondition,
        "on hold",
    );
    revocation
        .resume(by_serial(&second.serial, pb::RevocationReason::Unspecified))
        .await
        .unwrap();
    enroll_with(&ca, &two)
        .await
        .expect("the hold released, the device enrolls again");
    // Decommissioned: refused too.
    let mut devices = ca.admin_devices().await;
    devices
        .set_status(pb::SetDeviceStatusRequest {
            id: "acme-sn-2".into(),
            status: pb::DeviceStatus::Decommissioned as i32,
        })
        .await
        .unwrap();
    next_interval().await;
    assert_refused(
        "re-enrollment after decommissioning",
        enroll_with(&ca, &two).await,
        Code::FailedPrecondition,
        "hallmark device readmit acme-sn-2",
    );

    // Only an admin re-admits.
    let (key, s9_csr) = hallmark_tests::p256_csr("s-9");
    let s9 = ca
        .admin()
        .await
        .issue(pb::IssueRequest {
            device_id: "s-9".into(),
            profile: "sensor".into(),
            csr: s9_csr,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let pem = hallmark_ca::authority::ca::der_to_pem(&s9.der);
    let mut as_device = hallmark_proto::v1::devices_client::DevicesClient::new(
        ca.channel(Some((pem.into_bytes(), key.into_bytes()))).await,
    );
    assert_refused(
        "a device re-admitting",
        as_device
            .readmit(pb::ReadmitDeviceRequest {
                id: "acme-sn-1".into(),
            })
            .await,
        Code::PermissionDenied,
        "needs role admin",
    );
    // The admin re-admits with the CLI: the device enrolls again.
    let admin = ca.admin_dir();
    let readmitted = tokio::process::Command::new(bin("hallmark"))
        .args(["device", "readmit", "acme-sn-1"])
        .env_clear()
        .env("HALLMARK_ENDPOINT", ca.endpoint())
        .env("HALLMARK_CA", ca.data_dir().join("trust-bundle.pem"))
        .env("HALLMARK_CERT", admin.join("cert.pem"))
        .env("HALLMARK_KEY", admin.join("key.pem"))
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&readmitted.stdout);
    assert!(
        readmitted.status.success() && said.contains("device acme-sn-1 is re-admitted"),
        "{said}{}",
        String::from_utf8_lossy(&readmitted.stderr)
    );
    let again = enroll_with(&ca, &one)
        .await
        .expect("re-admitted device enrolls");
    // A decommissioned device comes back active.
    let back = devices
        .readmit(pb::ReadmitDeviceRequest {
            id: "acme-sn-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.status, pb::DeviceStatus::Active as i32);
    enroll_with(&ca, &two)
        .await
        .expect("re-admitted decommissioned device enrolls");

    // A certificate replaced (superseded) is routine, not a reason to hold the IDevID back.
    let replaced = ca
        .admin()
        .await
        .issue(pb::IssueRequest {
            device_id: "acme-sn-1".into(),
            profile: "sensor".into(),
            csr: csr(),
            replace_active: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let old = ca
        .store()
        .certificate(&again.serial)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.revocation_reason, Some(4));
    next_interval().await;
    let newest = enroll_with(&ca, &one)
        .await
        .expect("superseded certificates do not block the IDevID");
    assert_ne!(newest.serial, replaced.serial);

    // Every re-admission is audited.
    let events = ca.store().audit_events(0, 10_000).await.unwrap();
    let readmits: Vec<&str> = events
        .iter()
        .filter(|(_, e, _, _)| e.action == "device.readmit")
        .map(|(_, e, _, _)| e.target.as_str())
        .collect();
    assert_eq!(readmits, ["acme-sn-1", "acme-sn-2"]);
    assert!(ca.store().verify_audit_chain().await.unwrap().is_ok());
    ca.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idevid_never_yields_an_operator_credential() {
    let ca = TestCa::start_with(lifecycle_config("device")).await;
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let valvco = openssl_root_ca(d, "valvco-ca", "Valve Co CA", 3650);
    // Registering a manufacturer with an operator profile is refused.
    for profile in ["admin", "broker-agent", "provisioner", "ca-server"] {
        assert_refused(
            profile,
            ca.admin_enrollment()
                .await
                .register_manufacturer_ca(pb::RegisterManufacturerCaRequest {
                    name: "valvco".into(),
                    ca_cert: std::fs::read(&valvco.1).unwrap(),
                    zone: "field".into(),
                    profile: profile.into(),
                    auto_register: true,
                })
                .await,
            Code::InvalidArgument,
            "not a device profile",
        );
    }
    add_manufacturer(&ca, "valvco", &valvco.1, "field", "valve", true).await;
    // The profile became an operator profile since: its IDevIDs no longer enroll.
    let ca = ca.restart_with(lifecycle_config("admin")).await;
    let before = ca.counts().await;
    let valve = idevid(d, "valve", &valvco, "V-1");
    assert_refused(
        "an IDevID whose manufacturer's profile is an operator profile",
        enroll_with(&ca, &valve).await,
        Code::FailedPrecondition,
        "not a device profile",
    );
    assert_eq!(ca.counts().await, before, "nothing was recorded");
    ca.server.shutdown().await;
}
