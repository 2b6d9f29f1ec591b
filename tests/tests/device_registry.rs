//! Registry rules: decommissioning is final, duplicates are refused, provisioners register
//! only within their scope, and devices that are not active get no certificates.

use hallmark_proto::v1 as pb;
use hallmark_tests::{TestCa, p256_csr};
use tonic::Code;

fn row(id: &str, zone: &str, profile: &str) -> pb::RegisterDeviceRequest {
    pb::RegisterDeviceRequest {
        id: id.into(),
        zone: zone.into(),
        profile: profile.into(),
        ..Default::default()
    }
}

fn set(id: &str, status: pb::DeviceStatus) -> pb::SetDeviceStatusRequest {
    pb::SetDeviceStatusRequest {
        id: id.into(),
        status: status as i32,
    }
}

#[tokio::test]
async fn registry_rules_hold() {
    let ca = TestCa::start().await;
    let mut devices = ca.admin_devices().await;
    let mut admin = ca.admin().await;
    devices
        .register(row("gw-1", "supervision", "gateway"))
        .await
        .unwrap();
    let dup = devices
        .register(row("gw-1", "field", "gateway"))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup:?}");
    let cred = devices
        .register(row("boss", "field", "admin"))
        .await
        .unwrap_err();
    assert!(cred.message().contains("not a device profile"), "{cred:?}");

    // Issuing for a registered device takes its zone; another zone is refused.
    let issue = |zone: &str| pb::IssueRequest {
        device_id: "gw-1".into(),
        profile: "gateway".into(),
        zone: zone.into(),
        csr: p256_csr("gw-1").1,
        ..Default::default()
    };
    let c = admin
        .issue(issue(""))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(c.zone, "supervision");
    assert_eq!(
        admin.issue(issue("field")).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // Suspended and decommissioned devices get nothing; decommissioning is final.
    devices
        .set_status(set("gw-1", pb::DeviceStatus::Suspended))
        .await
        .unwrap();
    let refused = admin.issue(issue("")).await.unwrap_err();
    assert!(refused.message().contains("is suspended"), "{refused:?}");
    devices
        .set_status(set("gw-1", pb::DeviceStatus::Decommissioned))
        .await
        .unwrap();
    let final_ = devices
        .set_status(set("gw-1", pb::DeviceStatus::Active))
        .await
        .unwrap_err();
    assert_eq!(final_.code(), Code::FailedPrecondition);
    assert!(final_.message().contains("final"), "{final_:?}");

    // A provisioner registers within its scope only.
    let (key, csr) = p256_csr("station-9");
    let p = admin
        .issue(pb::IssueRequest {
            device_id: "station-9".into(),
            profile: "provisioner".into(),
            csr,
            scope: Some(pb::ProvisionerScope {
                profiles: vec!["sensor".into()],
                zones: vec!["field".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pem = hallmark_ca::authority::ca::der_to_pem(&p.certificate.unwrap().der);
    let mut prov = hallmark_proto::v1::devices_client::DevicesClient::new(
        ca.channel(Some((pem.into_bytes(), key.into_bytes()))).await,
    );
    prov.register(row("s-1", "field", "sensor"))
        .await
        .expect("within scope");
    let out = prov.register(row("s-2", "it", "sensor")).await.unwrap_err();
    assert_eq!(out.code(), Code::PermissionDenied, "{out:?}");
    let listing = prov
        .list(pb::ListDevicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(listing.code(), Code::PermissionDenied);
    assert_eq!(
        ca.store().verify_audit_chain().await.unwrap().map(|_| ()),
        Ok(())
    );
    ca.server.shutdown().await;
}

#[tokio::test]
async fn operator_credentials_follow_the_registry_and_tokens_are_for_devices_only() {
    let ca = TestCa::start().await;
    let mut admin = ca.admin().await;
    let mut devices = ca.admin_devices().await;
    let (key, csr) = p256_csr("alice");
    let alice = admin
        .issue(pb::IssueRequest {
            device_id: "alice".into(),
            profile: "admin".into(),
            csr,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pem = hallmark_ca::authority::ca::der_to_pem(&alice.certificate.unwrap().der);
    let mut as_alice = ca.client(Some((pem.into_bytes(), key.into_bytes()))).await;
    as_alice
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .expect("alice is an admin");

    // A token would turn an operator credential into a bearer secret: refused.
    let token = ca
        .admin_enrollment()
        .await
        .create_token(pb::CreateTokenRequest {
            device_id: "alice".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(token.code(), Code::FailedPrecondition, "{token:?}");
    assert!(token.message().contains("devices only"), "{token:?}");

    // Suspending alice in the registry cuts her credential at once.
    devices
        .set_status(set("alice", pb::DeviceStatus::Suspended))
        .await
        .unwrap();
    let cut = as_alice
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(cut.code(), Code::Unauthenticated, "{cut:?}");
    assert!(cut.message().contains("suspended"), "{cut:?}");

    // The CA's own identity cannot be suspended (it would not start again).
    let own = devices
        .set_status(set("hallmark-ca", pb::DeviceStatus::Decommissioned))
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::InvalidArgument, "{own:?}");

    // Time-limited supplier access does not renew itself into permanent access.
    let (key, csr) = p256_csr("supplier");
    let ra = admin
        .issue(pb::IssueRequest {
            device_id: "supplier-1".into(),
            profile: "remote-access".into(),
            csr,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pem = hallmark_ca::authority::ca::der_to_pem(&ra.certificate.unwrap().der);
    let mut supplier = ca.client(Some((pem.into_bytes(), key.into_bytes()))).await;
    let renew = supplier
        .renew(pb::RenewRequest {
            csr: p256_csr("s").1,
            lifetime_seconds: 0,
            key_compromise: false,
        })
        .await
        .unwrap_err();
    assert_eq!(renew.code(), Code::PermissionDenied, "{renew:?}");
    assert!(renew.message().contains("not renewable"), "{renew:?}");
    ca.server.shutdown().await;
}
