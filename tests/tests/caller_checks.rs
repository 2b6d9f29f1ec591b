//! The per-call checks of a caller with its record kept in memory (issue 14): a credential in
//! use is refused on its very next call once it is revoked, suspended or its device held; a
//! change no announcement covers (another process on the same SQLite file) reaches callers
//! within a second; an Issue that names its zone without a registry read cannot move or
//! revive a registered device.

use std::time::{Duration, Instant};

use hallmark_ca::store::{
    CertStatus, CertificateStatusUpdate, DeviceStatus, DeviceStatusUpdate, SqliteStore, Store,
};
use hallmark_proto::v1 as pb;
use hallmark_tests::{TestCa, assert_refused, p256_csr};
use pb::certificate_authority_client::CertificateAuthorityClient;
use tonic::Code;
use tonic::transport::Channel;

/// A credential of `profile` for `device` (in zone `field`, with `scope`), issued by the
/// admin, and a client presenting it.
async fn credential(
    ca: &TestCa,
    device: &str,
    profile: &str,
    scope: Option<pb::ProvisionerScope>,
) -> (String, CertificateAuthorityClient<Channel>) {
    let (key, csr) = p256_csr(device);
    let issued = ca
        .admin()
        .await
        .issue(pb::IssueRequest {
            device_id: device.into(),
            profile: profile.into(),
            zone: "field".into(),
            csr,
            scope,
            ..Default::default()
        })
        .await
        .expect("issue")
        .into_inner();
    let serial = issued.certificate.expect("record").serial;
    let client = ca
        .client(Some((issued.chain_pem.into_bytes(), key.into_bytes())))
        .await;
    (serial, client)
}

async fn list(
    client: &mut CertificateAuthorityClient<Channel>,
) -> Result<tonic::Response<pb::ListCertificatesResponse>, tonic::Status> {
    client
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
}

fn set_status(serial: &str, status: CertStatus) -> CertificateStatusUpdate {
    CertificateStatusUpdate {
        serial: serial.into(),
        status,
        reason: Some(1),
        at: 0,
        actor: "test".into(),
    }
}

fn device_status(id: &str, status: DeviceStatus) -> DeviceStatusUpdate {
    DeviceStatusUpdate {
        id: id.into(),
        status,
        admin_profiles: vec!["admin".into()],
        at: 0,
        actor: "test".into(),
    }
}

#[tokio::test]
async fn a_credential_in_use_is_refused_on_its_next_call_after_a_change() {
    let ca = TestCa::start().await;
    let (serial, mut device) = credential(&ca, "sensor-hot", "sensor", None).await;
    // In use: its record is read, marked as authenticated, then kept.
    for _ in 0..3 {
        list(&mut device).await.expect("a valid device may list");
    }

    ca.store()
        .set_certificate_status(set_status(&serial, CertStatus::Suspended))
        .await
        .unwrap();
    assert_refused(
        "suspended credential",
        list(&mut device).await,
        Code::Unauthenticated,
        "is suspended",
    );
    ca.store()
        .set_certificate_status(set_status(&serial, CertStatus::Active))
        .await
        .unwrap();
    list(&mut device)
        .await
        .expect("resumed, it is served again");
    list(&mut device).await.expect("and again");

    ca.store()
        .set_device_status(device_status("sensor-hot", DeviceStatus::Suspended))
        .await
        .unwrap();
    assert_refused(
        "credential of a suspended device",
        list(&mut device).await,
        Code::Unauthenticated,
        "suspended",
    );
    ca.store()
        .set_device_status(device_status("sensor-hot", DeviceStatus::Active))
        .await
        .unwrap();
    list(&mut device).await.expect("device resumed");
    list(&mut device).await.expect("and again");

    ca.store()
        .set_certificate_status(set_status(&serial, CertStatus::Revoked))
        .await
        .unwrap();
    assert_refused(
        "revoked credential",
        list(&mut device).await,
        Code::Unauthenticated,
        "is revoked",
    );
    ca.server.shutdown().await;
}

#[tokio::test]
async fn a_change_another_process_commits_reaches_callers_within_a_second() {
    let ca = TestCa::start().await;
    let (serial, mut device) = credential(&ca, "sensor-far", "sensor", None).await;
    for _ in 0..3 {
        list(&mut device).await.expect("a valid device may list");
    }
    // Another store on the same file, as `hallmark-ca` run by an operator beside the server
    // would open it: its commit is announced to nobody.
    let other = SqliteStore::open(&ca.data_dir().join("hallmark.db"), 16)
        .await
        .unwrap();
    other
        .set_certificate_status(set_status(&serial, CertStatus::Revoked))
        .await
        .unwrap();
    let revoked = Instant::now();
    let refused_after = loop {
        match list(&mut device).await {
            Err(s) if s.code() == Code::Unauthenticated && s.message().contains("is revoked") => {
                break revoked.elapsed();
            }
            Err(s) => panic!("refused for another reason: {s:?}"),
            Ok(_) => {}
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(3),
            "a revocation by another process still not applied after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "revocation by another process refused after {:.3} s",
        refused_after.as_secs_f64()
    );
    assert!(
        refused_after <= Duration::from_millis(1300),
        "took {refused_after:?}: the cache keeps records longer than its second"
    );
    ca.server.shutdown().await;
}

#[tokio::test]
async fn an_issue_naming_a_zone_cannot_move_or_revive_a_registered_device() {
    let ca = TestCa::start().await;
    let mut admin = ca.admin().await;
    // meter-7 is registered in zone secure, meter-8 in field (then suspended).
    for (device, zone) in [("meter-7", "secure"), ("meter-8", "field")] {
        admin
            .issue(pb::IssueRequest {
                device_id: device.into(),
                profile: "sensor".into(),
                zone: zone.into(),
                csr: p256_csr(device).1,
                ..Default::default()
            })
            .await
            .expect("registered by its first certificate");
    }
    ca.store()
        .set_device_status(device_status("meter-8", DeviceStatus::Suspended))
        .await
        .unwrap();
    let scope = pb::ProvisionerScope {
        profiles: vec!["sensor".into()],
        zones: vec!["field".into()],
    };
    let (_, mut station) = credential(&ca, "station-1", "provisioner", Some(scope)).await;
    // The station's credential in use first (its record kept in memory).
    let before = ca.counts().await;

    let ask = |device: &str, zone: &str| pb::IssueRequest {
        device_id: device.into(),
        profile: "sensor".into(),
        zone: zone.into(),
        csr: p256_csr(device).1,
        ..Default::default()
    };
    // Naming its own zone, the station would take a device of another zone.
    assert_refused(
        "device of another zone, named into the station's",
        station.issue(ask("meter-7", "field")).await,
        Code::FailedPrecondition,
        "registered in zone secure",
    );
    // Without a zone, the registry's zone is outside its scope.
    assert_refused(
        "device of another zone",
        station.issue(ask("meter-7", "")).await,
        Code::PermissionDenied,
        "zones [field]; not profile sensor in zone secure",
    );
    // A suspended device gets nothing, zone named or not; nor from an admin.
    for zone in ["field", ""] {
        assert_refused(
            "suspended device",
            station.issue(ask("meter-8", zone)).await,
            Code::FailedPrecondition,
            "meter-8 is suspended",
        );
    }
    assert_refused(
        "suspended device, by an admin",
        admin.issue(ask("meter-8", "field")).await,
        Code::FailedPrecondition,
        "meter-8 is suspended",
    );
    // Another profile than the registered one.
    let mut gateway = ask("meter-7", "secure");
    gateway.profile = "gateway".into();
    assert_refused(
        "device of another profile",
        admin.issue(gateway).await,
        Code::FailedPrecondition,
        "with profile sensor",
    );
    assert_eq!(ca.counts().await, before, "nothing recorded");
    let meter7 = ca.store().device("meter-7").await.unwrap().unwrap();
    assert_eq!(meter7.zone, "secure");
    ca.server.shutdown().await;
}
