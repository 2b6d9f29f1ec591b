//! Every bad input of the foundation issue: the right gRPC code, a message naming the problem,
//! and nothing stored (certificates, devices and audit rows unchanged).

use hallmark_proto::v1 as pb;
use hallmark_tests::{
    TestCa, assert_refused, openssl, openssl_p256_csr, openssl_root_ca, openssl_sign, p256_csr, s,
};
use tonic::Code;

fn req(device: &str, profile: &str, csr: Vec<u8>) -> pb::IssueRequest {
    pb::IssueRequest {
        device_id: device.to_owned(),
        profile: profile.to_owned(),
        zone: String::new(),
        csr,
        lifetime_seconds: 0,
        scope: None,
        replace_active: false,
    }
}

fn openssl_csr(dir: &std::path::Path, name: &str, keygen: &[&str], digest: &str) -> Vec<u8> {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let mut args = keygen.to_vec();
    args.extend(["-out", s(&key)]);
    openssl(&args);
    openssl(&[
        "req",
        "-new",
        "-key",
        s(&key),
        digest,
        "-subj",
        "/CN=evil",
        "-outform",
        "DER",
        "-out",
        s(&csr),
    ]);
    std::fs::read(&csr).unwrap()
}

#[tokio::test]
async fn bad_csrs_are_refused_and_nothing_is_stored() {
    let ca = TestCa::start().await;
    let work = tempfile::tempdir().unwrap();
    let mut admin = ca.admin().await;
    let before = ca.counts().await;

    let mut random = vec![0u8; 300];
    for (i, b) in random.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    assert_refused(
        "random bytes",
        admin.issue(req("s-1", "sensor", random)).await,
        Code::InvalidArgument,
        "not a valid PKCS#10",
    );

    let (_, mut broken) = p256_csr("s-1");
    let n = broken.len();
    broken[n - 4] ^= 0x01;
    assert_refused(
        "broken signature",
        admin.issue(req("s-1", "sensor", broken)).await,
        Code::InvalidArgument,
        "signature does not verify",
    );

    let p384 = openssl_csr(
        work.path(),
        "p384",
        &["ecparam", "-name", "secp384r1", "-genkey", "-noout"],
        "-sha384",
    );
    assert_refused(
        "P-384",
        admin.issue(req("s-1", "sensor", p384)).await,
        Code::InvalidArgument,
        "CSR key is P-384, profile sensor allows P-256",
    );

    // The rcgen pitfall: a P-384 key signed with ecdsa-with-SHA256 must still read as P-384.
    let p384_sha256 = openssl_csr(
        work.path(),
        "p384s",
        &["ecparam", "-name", "secp384r1", "-genkey", "-noout"],
        "-sha256",
    );
    assert_refused(
        "P-384 with SHA-256",
        admin.issue(req("s-1", "sensor", p384_sha256)).await,
        Code::InvalidArgument,
        "CSR key is P-384, profile sensor allows P-256",
    );

    let rsa = openssl_csr(
        work.path(),
        "rsa",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        "-sha256",
    );
    assert_refused(
        "RSA",
        admin.issue(req("s-1", "sensor", rsa)).await,
        Code::InvalidArgument,
        "CSR key is RSA-2048, profile sensor allows P-256",
    );

    let huge = vec![0x30u8; 64 * 1024 + 1];
    assert_refused(
        "over 64 KiB",
        admin.issue(req("s-1", "sensor", huge)).await,
        Code::InvalidArgument,
        "at most 65536 bytes",
    );

    // A valid OpenSSL CSR with extensions (subjectKeyIdentifier) is fine: the next step proves
    // that the refusals above were about the inputs, not about OpenSSL CSRs in general.
    let good = openssl_csr(
        work.path(),
        "good",
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        "-sha256",
    );
    assert_eq!(
        ca.counts().await,
        before,
        "refused requests stored something"
    );
    admin
        .issue(req("s-1", "sensor", good))
        .await
        .expect("valid OpenSSL CSR is accepted");
    let after = ca.counts().await;
    assert_eq!(after.certificates, before.certificates + 1);
    ca.server.shutdown().await;
}

#[tokio::test]
async fn bad_names_and_profiles_are_refused_and_nothing_is_stored() {
    let ca = TestCa::start().await;
    let mut admin = ca.admin().await;
    let before = ca.counts().await;
    let (_, csr) = p256_csr("x");
    assert_refused(
        "unknown profile",
        admin.issue(req("s-1", "thermostat", csr.clone())).await,
        Code::InvalidArgument,
        "unknown profile `thermostat`",
    );
    let long = "a".repeat(65);
    for (bad, needle) in [
        ("../x", "device id `../x` has `.` at position 1"),
        ("", "device id is empty"),
        (long.as_str(), "65 characters long"),
        ("Sensor-1", "upper-case `S`"),
    ] {
        assert_refused(
            &format!("device id {bad:?}"),
            admin.issue(req(bad, "sensor", csr.clone())).await,
            Code::InvalidArgument,
            needle,
        );
    }
    let mut bad_zone = req("s-1", "sensor", csr.clone());
    bad_zone.zone = "Field/1".into();
    assert_refused(
        "bad zone",
        admin.issue(bad_zone).await,
        Code::InvalidArgument,
        "zone `Field/1`",
    );
    let mut too_long = req("s-1", "sensor", csr.clone());
    too_long.lifetime_seconds = 91 * 24 * 3600;
    assert_refused(
        "lifetime over max",
        admin.issue(too_long).await,
        Code::InvalidArgument,
        "exceeds profile sensor's maximum",
    );
    assert_eq!(ca.counts().await, before);
    ca.server.shutdown().await;
}

#[tokio::test]
async fn callers_without_rights_are_refused_and_nothing_is_stored() {
    let ca = TestCa::start().await;
    let work = tempfile::tempdir().unwrap();
    let mut admin = ca.admin().await;

    // A provisioner scoped to sensors in zone `field`.
    let (pkey, pcsr) = p256_csr("station-1");
    let mut preq = req("station-1", "provisioner", pcsr);
    preq.scope = Some(pb::ProvisionerScope {
        profiles: vec!["sensor".into()],
        zones: vec!["field".into()],
    });
    let pcert = admin.issue(preq).await.unwrap().into_inner();
    let pdir = work.path().join("prov");
    std::fs::create_dir(&pdir).unwrap();
    std::fs::write(
        pdir.join("cert.pem"),
        hallmark_ca::authority::ca::der_to_pem(&pcert.certificate.unwrap().der),
    )
    .unwrap();
    std::fs::write(pdir.join("key.pem"), pkey).unwrap();
    let mut prov = ca.client_with(&pdir).await;

    let before = ca.counts().await;
    let (_, csr) = p256_csr("x");
    let mut other_zone = req("s-9", "sensor", csr.clone());
    other_zone.zone = "it".into();
    assert_refused(
        "provisioner, zone out of scope",
        prov.issue(other_zone).await,
        Code::PermissionDenied,
        "not profile sensor in zone it",
    );
    let mut other_profile = req("g-9", "gateway", csr.clone());
    other_profile.zone = "field".into();
    assert_refused(
        "provisioner, profile out of scope",
        prov.issue(other_profile).await,
        Code::PermissionDenied,
        "not profile gateway in zone field",
    );
    assert_refused(
        "provisioner asks for admin",
        prov.issue(req("boss", "admin", csr.clone())).await,
        Code::PermissionDenied,
        "may not request profile admin",
    );

    let mut anon = ca.client(None).await;
    assert_refused(
        "no client certificate",
        anon.issue(req("s-9", "sensor", csr.clone())).await,
        Code::Unauthenticated,
        "no client certificate",
    );

    // A client certificate from another CA, made by OpenSSL.
    let d = work.path();
    let (ck, cc) = (d.join("c.key"), d.join("c.csr"));
    let other = openssl_root_ca(d, "other", "Other Root", 2);
    openssl_p256_csr(&ck, &cc, "/CN=admin", &[]);
    let crt = d.join("c.crt");
    openssl_sign(
        &cc,
        &other,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        1,
        &crt,
    );
    let mut foreign = ca
        .client(Some((
            std::fs::read(&crt).unwrap(),
            std::fs::read(&ck).unwrap(),
        )))
        .await;
    assert_refused(
        "foreign CA",
        foreign.issue(req("s-9", "sensor", csr.clone())).await,
        Code::Unauthenticated,
        "was not issued by this Hallmark CA",
    );
    assert_refused(
        "foreign CA, list",
        foreign
            .list_certificates(pb::ListCertificatesRequest::default())
            .await,
        Code::Unauthenticated,
        "was not issued by this Hallmark CA",
    );

    assert_eq!(
        ca.counts().await,
        before,
        "refused requests stored something"
    );
    ca.server.shutdown().await;
}

#[tokio::test]
async fn unknown_and_revoked_credentials_are_refused_even_on_an_open_connection() {
    let ca = TestCa::start().await;
    let mut admin = ca.admin().await;
    admin
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .expect("admin may list");

    // A certificate signed by the real issuing CA key but never recorded: not a credential.
    let issuing_cert = std::fs::read_to_string(ca.data_dir().join("ca/issuing.crt")).unwrap();
    let issuing_key = std::fs::read_to_string(ca.data_dir().join("ca/issuing.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&issuing_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&issuing_cert, key).unwrap();
    let rogue_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x42; 16]));
    let rogue = params.signed_by(&rogue_key, &issuer).unwrap();
    let mut unknown = ca
        .client(Some((
            rogue.pem().into_bytes(),
            rogue_key.serialize_pem().into_bytes(),
        )))
        .await;
    assert_refused(
        "unrecorded certificate",
        unknown
            .list_certificates(pb::ListCertificatesRequest::default())
            .await,
        Code::Unauthenticated,
        "was not issued by this Hallmark CA",
    );

    // Revoke the admin's certificate in the store: the same open channel is refused next call.
    let admin_pem = std::fs::read(ca.admin_dir().join("cert.pem")).unwrap();
    let (_, der) = x509_parser::pem::parse_x509_pem(&admin_pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der.contents).unwrap();
    let serial = hex::encode(cert.raw_serial());
    ca.store()
        .set_certificate_status(hallmark_ca::store::CertificateStatusUpdate {
            serial: serial.clone(),
            status: hallmark_ca::store::CertStatus::Revoked,
            reason: Some(1),
            at: 0,
            actor: "test".into(),
        })
        .await
        .unwrap();
    assert_refused(
        "revoked admin on an open connection",
        admin
            .list_certificates(pb::ListCertificatesRequest::default())
            .await,
        Code::Unauthenticated,
        "is revoked",
    );
    ca.server.shutdown().await;
}

/// Item 10 of issue 10: a request message over its call's limit gets RESOURCE_EXHAUSTED naming
/// the call and the limit, before the CA reads it; limits fit what each call carries, nothing
/// is stored and the connection keeps working.
#[tokio::test]
async fn oversized_messages_are_refused_with_their_limit() {
    let ca = TestCa::start().await;
    let mut admin = ca.admin().await;
    let mut devices = ca.admin_devices().await;
    let before = ca.counts().await;

    assert_refused(
        "1 MB CSR",
        admin
            .issue(req("s-1", "sensor", vec![0x30; 1_000_000]))
            .await,
        Code::ResourceExhausted,
        "hallmark.v1.CertificateAuthority/Issue accepts request messages of at most 81920 bytes",
    );
    // Just over the CSR cap still fits the call: the CSR check names its own limit.
    assert_refused(
        "65537-byte CSR",
        admin.issue(req("s-1", "sensor", vec![0x30; 65_537])).await,
        Code::InvalidArgument,
        "at most 65536 bytes",
    );
    // No credential at all: Enroll is open to anyone, its limit holds all the same.
    let mut anonymous = ca.client(None).await;
    assert_refused(
        "200 KB token",
        anonymous
            .enroll(pb::EnrollRequest {
                token: "t".repeat(200_000),
                csr: Vec::new(),
                device_id: String::new(),
            })
            .await,
        Code::ResourceExhausted,
        "hallmark.v1.CertificateAuthority/Enroll accepts request messages of at most 81920 bytes",
    );
    // A small call.
    assert_refused(
        "100 KB device id",
        devices
            .get(pb::GetDeviceRequest {
                id: "d".repeat(100_000),
            })
            .await,
        Code::ResourceExhausted,
        "hallmark.v1.Devices/Get accepts request messages of at most 8192 bytes",
    );
    // Import takes 1000 rows of the longest fields (~600 KB): refused row by row (unknown
    // profile), not by size.
    let rows: Vec<pb::RegisterDeviceRequest> = (0..1000)
        .map(|i| pb::RegisterDeviceRequest {
            id: format!("{i:0>64}"),
            zone: "z".repeat(64),
            profile: "p".repeat(64),
            lot: "l".repeat(64),
            model: "m".repeat(128),
            serial_number: format!("{i:0>128}"),
            manufacturer: "f".repeat(64),
        })
        .collect();
    let imported = devices
        .import(pb::ImportDevicesRequest { devices: rows })
        .await
        .expect("1000 long rows fit Import's limit")
        .into_inner();
    assert_eq!((imported.imported, imported.errors.len()), (0, 1000));

    assert_eq!(ca.counts().await, before, "nothing stored");
    // The CA and the very same connection are unharmed.
    let (_, csr) = p256_csr("s-1");
    admin
        .issue(req("s-1", "sensor", csr))
        .await
        .expect("a normal Issue on the same connection");
    ca.server.shutdown().await;
}
