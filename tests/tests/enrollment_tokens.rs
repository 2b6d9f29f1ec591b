//! Commissioning with one-time tokens: a device with only a token and the trust bundle
//! enrolls from its own process; every bad token is refused without storing anything; a peer
//! that keeps failing is throttled, and the throttle is audited.

use std::process::Command;

use hallmark_proto::v1 as pb;
use hallmark_tests::{
    CaProcess, TestCa, assert_bundle_verifies, assert_refused, bin, ok, openssl, openssl_p256_csr,
    s,
};
use tonic::Code;
use x509_parser::prelude::*;

fn register(id: &str) -> pb::RegisterDeviceRequest {
    pb::RegisterDeviceRequest {
        id: id.into(),
        zone: "field".into(),
        profile: "sensor".into(),
        lot: "lot-1".into(),
        ..Default::default()
    }
}

async fn token(ca: &TestCa, device: &str, ttl: u64) -> String {
    ca.admin_enrollment()
        .await
        .create_token(pb::CreateTokenRequest {
            device_id: device.into(),
            ttl_seconds: ttl,
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

fn enroll_req(token: &str, csr: Vec<u8>) -> pb::EnrollRequest {
    pb::EnrollRequest {
        token: token.into(),
        csr,
        device_id: String::new(),
    }
}

#[test]
fn a_device_with_only_a_token_enrolls_from_its_own_process() {
    let work = tempfile::tempdir().unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &[]);
    ok(&ca.hallmark(&[
        "device",
        "register",
        "sensor-0100",
        "--zone",
        "field",
        "--profile",
        "sensor",
        "--lot",
        "lot-7",
    ]));
    let token = ok(&ca.hallmark(&["token", "create", "--device", "sensor-0100", "--ttl", "1h"]));
    let token = token.trim();
    assert!(token.starts_with("hmk_"), "{token}");

    // The device's process knows the endpoint, the trust bundle and the token: nothing else.
    let get = |k: &str| ca.env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let bundle = work.path().join("ca.pem");
    std::fs::copy(get("HALLMARK_CA"), &bundle).unwrap();
    let out = work.path().join("sensor-0100");
    let enrolled = Command::new(bin("hallmark"))
        .args(["enroll", "--token", token, "--out", s(&out)])
        .env_clear()
        .env("HALLMARK_ENDPOINT", get("HALLMARK_ENDPOINT"))
        .env("HALLMARK_CA", &bundle)
        .output()
        .unwrap();
    ok(&enrolled);
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
    assert_eq!(subject.trim(), "subject=OU=field,O=Hallmark,CN=sensor-0100");

    // The token is spent.
    let again = Command::new(bin("hallmark"))
        .args([
            "enroll",
            "--token",
            token,
            "--out",
            s(&work.path().join("again")),
        ])
        .env_clear()
        .env("HALLMARK_ENDPOINT", get("HALLMARK_ENDPOINT"))
        .env("HALLMARK_CA", &bundle)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already used"));
}

#[tokio::test]
async fn names_come_from_the_registry_not_from_the_csr() {
    let ca = TestCa::start().await;
    ca.admin_devices()
        .await
        .register(register("sensor-0101"))
        .await
        .unwrap();
    let t = token(&ca, "sensor-0101", 3600).await;
    let work = tempfile::tempdir().unwrap();
    let (key, csr) = (work.path().join("k.pem"), work.path().join("r.csr"));
    openssl_p256_csr(
        &key,
        &csr,
        "/CN=admin/OU=it/O=Evil",
        &[
            "-outform",
            "DER",
            "-addext",
            "subjectAltName=DNS:broker.evil.example,URI:urn:dev:org:1-admin",
        ],
    );
    let mut anon = ca.client(None).await;
    let resp = anon
        .enroll(enroll_req(&t, std::fs::read(&csr).unwrap()))
        .await
        .unwrap()
        .into_inner();
    let der = resp.certificate.unwrap().der;
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        cert.subject().to_string(),
        "CN=sensor-0101, O=Hallmark, OU=field"
    );
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(names, ["URI(urn:dev:org:32473-sensor-0101)"]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    ca.server.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_fail_clearly_and_store_nothing() {
    let ca = TestCa::start().await;
    let mut devices = ca.admin_devices().await;
    for id in ["sensor-0201", "sensor-0202", "sensor-0203"] {
        devices.register(register(id)).await.unwrap();
    }
    let mut anon = ca.client(None).await;
    let csr = || hallmark_tests::p256_csr("x").1;

    // Replay: the first use succeeds, the second is refused.
    let t1 = token(&ca, "sensor-0201", 3600).await;
    anon.enroll(enroll_req(&t1, csr()))
        .await
        .expect("first use");
    let before = ca.counts().await;
    assert_refused(
        "replay",
        anon.enroll(enroll_req(&t1, csr())).await,
        Code::Unauthenticated,
        "already used",
    );

    // Expired.
    let t2 = token(&ca, "sensor-0202", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_refused(
        "expired",
        anon.enroll(enroll_req(&t2, csr())).await,
        Code::Unauthenticated,
        "expired at",
    );

    // A token of another device.
    let t3 = token(&ca, "sensor-0203", 3600).await;
    let mut other = enroll_req(&t3, csr());
    other.device_id = "sensor-0202".into();
    assert_refused(
        "another device's token",
        anon.enroll(other).await,
        Code::PermissionDenied,
        "belongs to another device",
    );

    // Tampered: one hex digit changed.
    let mut tampered: Vec<char> = t3.chars().collect();
    tampered[20] = if tampered[20] == 'a' { 'b' } else { 'a' };
    let tampered: String = tampered.into_iter().collect();
    assert_refused(
        "tampered",
        anon.enroll(enroll_req(&tampered, csr())).await,
        Code::Unauthenticated,
        "not valid",
    );
    assert_refused(
        "malformed",
        anon.enroll(enroll_req("hmk_123", csr())).await,
        Code::Unauthenticated,
        "malformed",
    );

    // A suspended device cannot enroll, even with its own valid token.
    devices
        .set_status(pb::SetDeviceStatusRequest {
            id: "sensor-0203".into(),
            status: pb::DeviceStatus::Suspended as i32,
        })
        .await
        .unwrap();
    let audit_before_suspended = ca.counts().await.audit_events;
    assert_refused(
        "suspended",
        anon.enroll(enroll_req(&t3, csr())).await,
        Code::FailedPrecondition,
        "is suspended",
    );
    assert_eq!(ca.counts().await.audit_events, audit_before_suspended);

    let after = ca.counts().await;
    assert_eq!(
        (after.certificates, after.devices),
        (before.certificates, before.devices),
        "a refused enrollment stored something"
    );
    // The refusals did not consume the suspended device's token: resumed, it enrolls.
    devices
        .set_status(pb::SetDeviceStatusRequest {
            id: "sensor-0203".into(),
            status: pb::DeviceStatus::Active as i32,
        })
        .await
        .unwrap();
    anon.enroll(enroll_req(&t3, csr()))
        .await
        .expect("resumed device enrolls with its token");
    ca.server.shutdown().await;
}

#[tokio::test]
async fn twenty_bad_tokens_from_one_peer_are_throttled_and_audited() {
    let ca = TestCa::start().await;
    ca.admin_devices()
        .await
        .register(register("sensor-0301"))
        .await
        .unwrap();
    let good = token(&ca, "sensor-0301", 3600).await;
    let mut anon = ca.client(None).await;
    let mut codes = Vec::new();
    for i in 0..20 {
        let bad = format!("hmk_{:064x}", i);
        let status = anon
            .enroll(enroll_req(&bad, hallmark_tests::p256_csr("x").1))
            .await
            .unwrap_err();
        codes.push(status.code());
    }
    let limited = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert_eq!(
        codes[..10]
            .iter()
            .filter(|c| **c == Code::Unauthenticated)
            .count(),
        10,
        "{codes:?}"
    );
    assert_eq!(
        limited, 10,
        "the last ten attempts are throttled: {codes:?}"
    );
    // While throttled, even a good token from that peer waits.
    assert_refused(
        "good token while throttled",
        anon.enroll(enroll_req(&good, hallmark_tests::p256_csr("x").1))
            .await,
        Code::ResourceExhausted,
        "too many failed enrollment attempts",
    );
    let events = ca.store().audit_events(0, 10_000).await.unwrap();
    let throttled: Vec<_> = events
        .iter()
        .filter(|(_, e, _, _)| e.action == "enroll.throttled")
        .collect();
    assert_eq!(throttled.len(), 1, "the throttle is audited once");
    assert_eq!(throttled[0].1.target, "127.0.0.1");
    assert_eq!(
        ca.store().verify_audit_chain().await.unwrap().map(|_| ()),
        Ok(())
    );
    ca.server.shutdown().await;
}
