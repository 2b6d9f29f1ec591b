//! The API says what it means: superseded certificates are visible as such, subjects are
//! RFC 4514 strings, messages name fields (not CLI flags) and read like sentences, and the CLI
//! takes the RFC 5280 reason names as OpenSSL spells them.

use hallmark_ca::config::Config;
use hallmark_proto::v1 as pb;
use hallmark_tests::{CaProcess, TestCa, assert_refused, ok, openssl, p256_csr, s};
use tonic::Code;

fn issue(device: &str, profile: &str, csr: Vec<u8>) -> pb::IssueRequest {
    pb::IssueRequest {
        device_id: device.to_owned(),
        profile: profile.to_owned(),
        zone: "field".to_owned(),
        csr,
        ..Default::default()
    }
}

#[tokio::test]
async fn messages_name_fields_and_never_leak_parser_internals() {
    let ca = TestCa::start().await;
    let mut admin = ca.admin().await;
    let before = ca.counts().await;

    // Junk that starts like DER: the parser's own error text must not reach the caller.
    let mut junk = vec![0x30, 0x82, 0x01, 0x00, 0x02, 0x01];
    junk.extend((0u8..200).map(|i| i.wrapping_mul(37)));
    let err = admin
        .issue(issue("s-1", "sensor", junk))
        .await
        .expect_err("junk CSR");
    assert_eq!(err.code(), Code::InvalidArgument);
    let m = err.message();
    assert!(m.contains("not a valid PKCS#10"), "{m}");
    for internal in ["Error(", "Parsing", "Der(", "nom", "{", "Incomplete"] {
        assert!(
            !m.contains(internal),
            "parser internals `{internal}` in: {m}"
        );
    }

    assert_refused(
        "empty profile",
        admin.issue(issue("s-1", "", p256_csr("s-1").1)).await,
        Code::InvalidArgument,
        "profile is required",
    );

    // Field names, not the CLI's flags.
    let err = admin
        .issue(issue("station-9", "provisioner", p256_csr("station-9").1))
        .await
        .expect_err("provisioner without scope");
    let m = err.message();
    assert!(
        m.contains("scope.profiles") && m.contains("scope.zones") && !m.contains("--"),
        "{m}"
    );
    let mut anonymous = ca.client(None).await;
    let err = anonymous
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .expect_err("no credential");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!err.message().contains("--"), "{}", err.message());
    let err = anonymous
        .enroll(pb::EnrollRequest {
            csr: p256_csr("s-1").1,
            ..Default::default()
        })
        .await
        .expect_err("enroll without token or IDevID");
    assert!(
        err.message().contains("`token`") && !err.message().contains("--"),
        "{}",
        err.message()
    );
    assert_eq!(
        ca.counts().await,
        before,
        "a refused request stored something"
    );
    ca.server.shutdown().await;
}

#[tokio::test]
async fn subjects_are_rfc4514_strings_as_openssl_prints_them() {
    let mut config = Config::parse(r#"organisation = "ACME, Plant+4""#).unwrap();
    config.default_zone = "field".into();
    let ca = TestCa::start_with(config).await;
    let mut admin = ca.admin().await;
    let resp = admin
        .issue(issue("s-1", "sensor", p256_csr("s-1").1))
        .await
        .unwrap()
        .into_inner();
    let cert = resp.certificate.unwrap();
    let work = tempfile::tempdir().unwrap();
    let pem = work.path().join("cert.pem");
    std::fs::write(&pem, hallmark_ca::authority::ca::der_to_pem(&cert.der)).unwrap();
    let printed = openssl(&[
        "x509",
        "-in",
        s(&pem),
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
    ]);
    let printed = printed.trim().trim_start_matches("subject=");
    assert_eq!(cert.subject, r"OU=field,O=ACME\, Plant\+4,CN=s-1");
    assert_eq!(cert.subject, printed);
    // The stored record reads the same through GetCertificate.
    let got = admin
        .get_certificate(pb::GetCertificateRequest {
            serial: cert.serial,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.subject, printed);
    ca.server.shutdown().await;
}

#[tokio::test]
async fn a_superseded_certificate_reads_as_superseded_and_filters_so() {
    let config = Config::parse("[profiles.sensor]\nmin_renewal_interval = \"0s\"\n").unwrap();
    let ca = TestCa::start_with(config).await;
    let mut admin = ca.admin().await;
    let (key, csr) = p256_csr("s-2");
    let first = admin
        .issue(issue("s-2", "sensor", csr))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let mut device = ca
        .client(Some((
            hallmark_ca::authority::ca::der_to_pem(&first.der).into_bytes(),
            key.into_bytes(),
        )))
        .await;
    let second = device
        .renew(pb::RenewRequest {
            csr: p256_csr("s-2").1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(second.status, pb::CertificateStatus::Active as i32);

    let old = admin
        .get_certificate(pb::GetCertificateRequest {
            serial: first.serial.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.status, pb::CertificateStatus::Superseded as i32);
    assert_eq!(old.superseded_by, second.serial);

    let list = |status: pb::CertificateStatus| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_certificates(pb::ListCertificatesRequest {
                    device_id: "s-2".into(),
                    status: status as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .certificates
                .into_iter()
                .map(|c| c.serial)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(pb::CertificateStatus::Superseded).await,
        [first.serial]
    );
    assert_eq!(list(pb::CertificateStatus::Active).await, [second.serial]);
    ca.server.shutdown().await;
}

#[test]
fn the_cli_takes_rfc5280_reason_names() {
    let work = tempfile::tempdir().unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &[]);
    ca.issue_bundle("s-3", "sensor", Some("field"), &work.path().join("s-3"));
    for reason in [
        "keyCompromise",
        "key-compromise",
        "CACompromise",
        "cessationOfOperation",
        "affiliationChanged",
        "privilegeWithdrawn",
    ] {
        let out = ok(&ca.hallmark(&["revoke", "--device", "s-3", "--reason", reason, "--dry-run"]));
        assert!(out.contains("s-3"), "{reason}: {out}");
    }
    let out = ca.hallmark(&[
        "revoke",
        "--device",
        "s-3",
        "--reason",
        "stolen",
        "--dry-run",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key-compromise"),
        "the error lists the accepted names"
    );
}

/// With the default organisation (Hallmark), CA names say Hallmark once.
#[test]
fn ca_names_do_not_double_the_organisation() {
    let work = tempfile::tempdir().unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &[]);
    let subjects = openssl(&["crl2pkcs7", "-nocrl", "-certfile", ca.var("HALLMARK_CA")]);
    let dir = work.path().join("p7");
    std::fs::write(&dir, subjects).unwrap();
    let printed = openssl(&["pkcs7", "-in", s(&dir), "-print_certs", "-noout"]);
    assert!(printed.contains("Hallmark Root CA"), "{printed}");
    assert!(printed.contains("Hallmark Issuing CA"), "{printed}");
    assert!(!printed.contains("Hallmark Hallmark"), "{printed}");
}
