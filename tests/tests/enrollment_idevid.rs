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
