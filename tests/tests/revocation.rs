//! Revocation in the store and on the API: by serial, device, lot, zone and profile, with dry
//! runs; suspended certificates are refused until resumed; revoked ones for good.

use hallmark_proto::v1 as pb;
use hallmark_proto::v1::revocation_client::RevocationClient;
use hallmark_tests::{CaProcess, TestCa, ok, p256_csr};
use pb::revoke_request::Selector;
use tonic::Code;

async fn issue(
    admin: &mut pb::certificate_authority_client::CertificateAuthorityClient<
        tonic::transport::Channel,
    >,
    device: &str,
    zone: &str,
) -> (pb::Certificate, String) {
    let (key, csr) = p256_csr(device);
    let resp = admin
        .issue(pb::IssueRequest {
            device_id: device.into(),
            profile: "sensor".into(),
            zone: zone.into(),
            csr,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (resp.certificate.unwrap(), key)
}

fn req(selector: Selector, dry_run: bool) -> pb::RevokeRequest {
    pb::RevokeRequest {
        selector: Some(selector),
        reason: pb::RevocationReason::KeyCompromise as i32,
        dry_run,
        ..Default::default()
    }
}

#[tokio::test]
async fn revoking_a_zone_takes_all_of_it_and_nothing_else() {
    let ca = TestCa::start().await;
    let mut admin = ca.admin().await;
    let mut a = Vec::new();
    for i in 0..50 {
        a.push(issue(&mut admin, &format!("a-{i:02}"), "zone-a").await);
    }
    let mut b = Vec::new();
    for i in 0..50 {
        b.push(issue(&mut admin, &format!("b-{i:02}"), "zone-b").await);
    }
    let mut revocation = RevocationClient::new(ca.channel(Some(ca.admin_identity())).await);

    let before = ca.counts().await;
    let dry = revocation
        .revoke(req(Selector::Zone("zone-a".into()), true))
        .await
        .unwrap()
        .into_inner();
    assert!(dry.dry_run);
    assert_eq!(dry.certificates.len(), 50);
    assert_eq!(ca.counts().await, before, "a dry run changes nothing");
    assert!(
        dry.certificates
            .iter()
            .all(|c| c.status == pb::CertificateStatus::Active as i32)
    );

    let done = revocation
        .revoke(req(Selector::Zone("zone-a".into()), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.certificates.len(), 50);
    assert!(
        done.certificates
            .iter()
            .all(|c| c.status == pb::CertificateStatus::Revoked as i32 && c.revocation_reason == 1)
    );
    for (cert, _) in &a {
        let row = ca.store().certificate(&cert.serial).await.unwrap().unwrap();
        assert_eq!(row.status, hallmark_ca::store::CertStatus::Revoked);
    }
    for (cert, _) in &b {
        let row = ca.store().certificate(&cert.serial).await.unwrap().unwrap();
        assert_eq!(row.status, hallmark_ca::store::CertStatus::Active);
    }
    // Revoking again finds nothing: revocation is final and idempotent.
    let again = revocation
        .revoke(req(Selector::Zone("zone-a".into()), false))
        .await
        .unwrap()
        .into_inner();
    assert!(again.certificates.is_empty());
    // Revoked devices are refused on the API (and cannot renew).
    let (cert, key) = &a[0];
    let pem = hallmark_ca::authority::ca::der_to_pem(&cert.der);
    let mut device = ca
        .client(Some((pem.into_bytes(), key.clone().into_bytes())))
        .await;
    let refused = device
        .renew(pb::RenewRequest {
            csr: p256_csr("x").1,
            lifetime_seconds: 0,
            key_compromise: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        ca.store().verify_audit_chain().await.unwrap().map(|_| ()),
        Ok(())
    );
    ca.server.shutdown().await;
}

/// Incident response at scale: a zone of 1,200 revoked in one call. The answer counts them all
/// and lists the first 1,000 (a zone of a million must not make an answer no client takes:
/// 100,000 made 74 MB before); every one is revoked and audited.
#[tokio::test]
async fn a_zone_revoked_whole_is_counted_and_listed_in_part() {
    const N: usize = 1200;
    let ca = TestCa::start().await;
    let admin = ca.admin().await;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let mut admin = admin.clone();
            tokio::spawn(async move {
                for i in (t..N).step_by(16) {
                    issue(&mut admin, &format!("bulk-{i:04}"), "bulk").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut revocation = RevocationClient::new(ca.channel(Some(ca.admin_identity())).await);
    for dry_run in [true, false] {
        let answer = revocation
            .revoke(req(Selector::Zone("bulk".into()), dry_run))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.total, N as u64, "dry run {dry_run}");
        assert_eq!(answer.certificates.len(), 1000, "dry run {dry_run}");
    }
    let issuer = ca.store().issuers().await.unwrap();
    let issuing = issuer
        .iter()
        .find(|i| i.active && i.kind == hallmark_ca::store::IssuerKind::Issuing)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let entries = ca
        .store()
        .revocation_entries(&issuing.id, now)
        .await
        .unwrap();
    assert_eq!(entries.len(), N);
    ca.server.shutdown().await;
}

#[tokio::test]
async fn suspend_refuses_and_resume_readmits() {
    let ca = TestCa::start().await;
    let mut admin = ca.admin().await;
    let (cert, key) = issue(&mut admin, "gw-7", "field").await;
    let pem = hallmark_ca::authority::ca::der_to_pem(&cert.der);
    let identity = (pem.into_bytes(), key.into_bytes());
    let mut device = ca.client(Some(identity.clone())).await;
    let list = || pb::ListCertificatesRequest::default();
    device
        .list_certificates(list())
        .await
        .expect("active device");

    let mut revocation = RevocationClient::new(ca.channel(Some(ca.admin_identity())).await);
    let held = revocation
        .suspend(req(Selector::DeviceId("gw-7".into()), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.certificates.len(), 1);
    assert_eq!(held.certificates[0].revocation_reason, 6, "certificateHold");
    let refused = device.list_certificates(list()).await.unwrap_err();
    assert!(refused.message().contains("suspended"), "{refused:?}");

    let resumed = revocation
        .resume(req(Selector::Serial(cert.serial.clone()), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.certificates.len(), 1);
    device
        .list_certificates(list())
        .await
        .expect("resumed device");

    // A hold is not a reason of Revoke, and a selector is required.
    let mut bad = req(Selector::Serial(cert.serial.clone()), false);
    bad.reason = pb::RevocationReason::CertificateHold as i32;
    assert_eq!(
        revocation.revoke(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let none = revocation
        .revoke(pb::RevokeRequest {
            selector: None,
            reason: 1,
            dry_run: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        none.message().contains("say which certificates"),
        "{none:?}"
    );
    // Only admins revoke.
    let denied = RevocationClient::new(ca.channel(Some(identity)).await)
        .revoke(req(Selector::Lot("x".into()), true))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    ca.server.shutdown().await;
}

#[test]
fn the_cli_revokes_a_lot_with_a_dry_run_first() {
    let work = tempfile::tempdir().unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &[]);
    for (id, lot) in [("s-1", "lot-1"), ("s-2", "lot-1"), ("s-3", "lot-2")] {
        ok(&ca.hallmark(&[
            "device",
            "register",
            id,
            "--zone",
            "field",
            "--profile",
            "sensor",
            "--lot",
            lot,
        ]));
        ca.issue_bundle(id, "sensor", None, &work.path().join(id));
    }
    let dry = ok(&ca.hallmark(&[
        "revoke",
        "--lot",
        "lot-1",
        "--reason",
        "key-compromise",
        "--dry-run",
    ]));
    assert!(
        dry.contains("would revoke 2 certificates (dry run: nothing changed)"),
        "{dry}"
    );
    let done = ok(&ca.hallmark(&["revoke", "--lot", "lot-1", "--reason", "key-compromise"]));
    assert!(done.contains("revoked 2 certificates"), "{done}");
    let listed = ok(&ca.hallmark(&["cert", "list", "--status", "revoked", "-o", "json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let devices: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["s-1", "s-2"]);
}
