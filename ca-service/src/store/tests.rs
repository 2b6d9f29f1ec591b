//! Group commit semantics: each request succeeds or fails alone, and the audit chain holds.

use super::*;

fn issue(serial: &str, device: &str, zone: &str) -> WriteOp {
    WriteOp::Issue {
        device: DeviceClaim {
            id: device.into(),
            zone: zone.into(),
            profile: "sensor".into(),
            serial_number: None,
            manufacturer: None,
        },
        cert: Box::new(NewCertificate {
            serial: serial.into(),
            device_id: device.into(),
            profile: "sensor".into(),
            zone: zone.into(),
            issuer_id: "issuing-1".into(),
            subject: format!("CN={device}"),
            not_before: 0,
            not_after: 10,
            scope: None,
            requested_by: "test".into(),
            spki_sha256: "00".into(),
            der: vec![0x30, 0x00],
            issued_at: 1,
        }),
        actor: "test".into(),
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db"), 64)
        .await
        .unwrap();
    store
        .write(WriteOp::AddIssuer {
            issuer: IssuerRecord {
                id: "issuing-1".into(),
                kind: IssuerKind::Issuing,
                subject: "CN=i".into(),
                cert_der: vec![1],
                not_before: 0,
                not_after: 100,
                active: true,
                revoked_at: None,
                revocation_reason: None,
            },
            at: 0,
            actor: "test".into(),
        })
        .await
        .unwrap();
    (dir, store)
}

// Current-thread runtime: the five writers all queue before the writer task runs, so they
// arrive as one batch and take the multi-row path.
#[tokio::test]
async fn concurrent_writes_fail_alone_and_keep_the_chain() {
    let (_dir, store) = store().await;
    // Fired together so that they land in one batch: a good one, a claim of the same new
    // device in another zone, a duplicate serial, and more good ones.
    let ops = vec![
        issue("aa01", "d-1", "field"),
        issue("aa02", "d-1", "it"),
        issue("aa01", "d-2", "field"),
        issue("aa03", "d-1", "field"),
        issue("aa04", "d-3", "field"),
    ];
    let handles: Vec<_> = ops
        .into_iter()
        .map(|op| {
            let s = store.clone();
            tokio::spawn(async move { s.write(op).await })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, [true, false, false, true, true], "{results:?}");
    assert!(matches!(results[1], Err(StoreError::DeviceConflict(_))));
    assert!(matches!(results[2], Err(StoreError::Duplicate(_))));
    assert_eq!(
        results[0].as_ref().unwrap(),
        &WriteOutput::Issued {
            device_registered: true
        }
    );
    assert_eq!(
        results[3].as_ref().unwrap(),
        &WriteOutput::Issued {
            device_registered: false
        }
    );

    assert_eq!(store.count(CountedTable::Certificates).await.unwrap(), 3);
    // d-2 was only claimed by the refused duplicate: it must not be registered.
    assert!(store.device("d-2").await.unwrap().is_none());
    assert_eq!(store.device("d-1").await.unwrap().unwrap().zone, "field");
    // issuer + 2 device registrations + 3 issuances
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(6));
}

#[tokio::test]
async fn a_changed_audit_row_breaks_the_chain() {
    let (_dir, store) = store().await;
    store.write(issue("bb01", "d-1", "field")).await.unwrap();
    store.write(issue("bb02", "d-1", "field")).await.unwrap();
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(4));
    sqlx::query("UPDATE audit_events SET target = 'forged' WHERE id = 3")
        .execute(&store.pool)
        .await
        .unwrap();
    assert_eq!(store.verify_audit_chain().await.unwrap(), Err(3));
}

#[tokio::test]
async fn status_changes_are_audited_and_revocation_is_final() {
    let (_dir, store) = store().await;
    store.write(issue("cc01", "d-1", "field")).await.unwrap();
    let set = |status| WriteOp::SetCertificateStatus {
        serial: "cc01".into(),
        status,
        reason: Some(1),
        at: 5,
        actor: "test".into(),
    };
    store.write(set(CertStatus::Revoked)).await.unwrap();
    let c = store.certificate("CC01").await.unwrap().unwrap();
    assert_eq!(
        (c.status, c.revoked_at, c.revocation_reason),
        (CertStatus::Revoked, Some(5), Some(1))
    );
    assert!(matches!(
        store.write(set(CertStatus::Active)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(4));
}

#[tokio::test]
async fn committed_status_changes_reach_the_feed_in_order_and_failed_ones_do_not() {
    let (_dir, store) = store().await;
    for (serial, device, zone) in [
        ("aa01", "d-1", "a"),
        ("aa02", "d-2", "a"),
        ("bb01", "d-3", "b"),
    ] {
        store.write(issue(serial, device, zone)).await.unwrap();
    }
    let mut feed = store.status_changes();
    let change = |selector, change| WriteOp::ChangeStatus {
        selector,
        change,
        operators: Default::default(),
        at: 5,
        actor: "test".into(),
    };
    store
        .write(change(
            CertSelector::Zone("a".into()),
            StatusChange::Suspend,
        ))
        .await
        .unwrap();
    store
        .write(change(
            CertSelector::Serial("aa02".into()),
            StatusChange::Resume,
        ))
        .await
        .unwrap();
    // Nothing to resume: no change, nothing on the feed.
    store
        .write(change(CertSelector::Zone("b".into()), StatusChange::Resume))
        .await
        .unwrap();
    let first = feed.try_recv().unwrap();
    assert_eq!(
        first
            .iter()
            .map(|c| (
                c.serial.as_str(),
                c.status,
                c.issuer_id.as_str(),
                c.not_after
            ))
            .collect::<Vec<_>>(),
        [
            ("aa01", CertStatus::Suspended, "issuing-1", 10),
            ("aa02", CertStatus::Suspended, "issuing-1", 10)
        ]
    );
    assert!(first.iter().all(|c| c.listed(5) && !c.listed(10)));
    let second = feed.try_recv().unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].serial.as_str(), second[0].status),
        ("aa02", CertStatus::Active)
    );
    assert!(!second[0].listed(5));
    assert!(feed.try_recv().is_err(), "no third batch");
    // A write that fails sends nothing.
    let set = |status| WriteOp::SetCertificateStatus {
        serial: "bb01".into(),
        status,
        reason: Some(1),
        at: 6,
        actor: "test".into(),
    };
    store.write(set(CertStatus::Revoked)).await.unwrap();
    assert!(store.write(set(CertStatus::Active)).await.is_err());
    assert_eq!(feed.try_recv().unwrap()[0].status, CertStatus::Revoked);
    assert!(feed.try_recv().is_err(), "the failed write sent nothing");

    // The listing filter by serials, as a broker agent uses it.
    let page = store
        .list_certificates(
            &CertFilter {
                serials: Some(vec!["aa02".into(), "bb01".into(), "ffff".into()]),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .unwrap();
    let got: Vec<&str> = page.items.iter().map(|c| c.device_id.as_str()).collect();
    assert_eq!(got, ["d-2", "d-3"]);
}

/// An IDevID enrollment of `device` at `at` (a certificate `serial` valid until 10_000).
fn idevid(serial: &str, device: &str, at: i64) -> WriteOp {
    let WriteOp::Issue {
        mut device,
        mut cert,
        actor,
    } = issue(serial, device, "field")
    else {
        unreachable!()
    };
    device.manufacturer = Some("acme".into());
    cert.issued_at = at;
    cert.not_before = at;
    cert.not_after = 10_000;
    WriteOp::IssueLimited {
        supersedes: None,
        min_interval: 10,
        key_compromise: false,
        device,
        cert,
        actor,
    }
}

/// REVIEW FINDING (issue 10 review): an admin's revocation with reason superseded (a reason
/// `hallmark revoke --reason superseded` accepts) must keep the IDevID out like any other;
/// only a re-provisioning's replacement (which records `superseded_by`) is routine.
#[tokio::test]
async fn an_admin_revocation_with_reason_superseded_keeps_the_idevid_out() {
    let (_dir, store) = store().await;
    store.write(idevid("aa01", "d-1", 1)).await.unwrap();
    // A re-provisioning replaces it (reason superseded, superseded_by set): routine.
    let WriteOp::Issue {
        device,
        mut cert,
        actor,
    } = issue("aa02", "d-1", "field")
    else {
        unreachable!()
    };
    cert.issued_at = 20;
    cert.not_after = 10_000;
    store
        .write(WriteOp::IssueReplacing {
            device,
            cert,
            actor,
        })
        .await
        .unwrap();
    store.write(idevid("aa03", "d-1", 100)).await.unwrap();
    // An admin revokes the device, choosing the reason superseded.
    let changed = store
        .write(WriteOp::ChangeStatus {
            selector: CertSelector::Device("d-1".into()),
            change: StatusChange::Revoke(4),
            operators: Default::default(),
            at: 200,
            actor: "admin".into(),
        })
        .await
        .unwrap();
    assert!(matches!(changed, WriteOutput::StatusChanged(ref c) if !c.is_empty()));
    let refused = store.write(idevid("aa04", "d-1", 300)).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(ref m)) if m.contains("readmit")),
        "the IDevID enrolled again after an admin's revocation: {refused:?}"
    );
}

fn issuer(id: &str, kind: IssuerKind, active: bool) -> WriteOp {
    WriteOp::AddIssuer {
        issuer: IssuerRecord {
            id: id.into(),
            kind,
            subject: format!("CN={id}"),
            cert_der: vec![1],
            not_before: 0,
            not_after: 100,
            active,
            revoked_at: None,
            revocation_reason: None,
        },
        at: 0,
        actor: "test".into(),
    }
}

fn revoke_issuer(id: &str, admin_profiles: &[&str]) -> WriteOp {
    WriteOp::RevokeIssuer {
        id: id.into(),
        reason: Some(2),
        admin_profiles: admin_profiles.iter().map(|p| p.to_string()).collect(),
        at: 5,
        actor: "test".into(),
        details: serde_json::json!({}),
    }
}

fn root_crl(number: u64) -> RootCrlRecord {
    RootCrlRecord {
        issuer_id: "root-1".into(),
        number,
        this_update: 1,
        next_update: 50,
        entries: 0,
        der: vec![number as u8],
        signed_at: 1,
        signed_by: "test".into(),
    }
}

/// A revoked issuing CA: only a retired one, once; no certificate of it is recorded from then
/// on (the trigger also refuses one a serving CA signed before it noticed); its certificates
/// are refused as callers and count for no admin.
#[tokio::test]
async fn a_revoked_issuer_records_nothing_more_and_takes_its_certificates_along() {
    let (_dir, store) = store().await;
    store
        .write(issuer("root-1", IssuerKind::Root, true))
        .await
        .unwrap();
    store
        .write(issuer("issuing-2", IssuerKind::Issuing, true))
        .await
        .unwrap();
    store.write(issue("aa01", "d-1", "field")).await.unwrap();
    // The active issuing CA and roots are never revoked.
    for (id, needle) in [
        ("issuing-1", "the active one"),
        ("root-1", "root CA"),
        ("nope", "no issuer"),
    ] {
        let refused = store.write(revoke_issuer(id, &[])).await;
        assert!(
            matches!(&refused, Err(StoreError::Conflict(m) | StoreError::NotFound(m)) if m.contains(needle)),
            "{id}: {refused:?}"
        );
    }
    store
        .write(WriteOp::RetireIssuer {
            id: "issuing-1".into(),
            at: 3,
            actor: "test".into(),
        })
        .await
        .unwrap();
    // d-1's certificate is the only valid one of profile `sensor`: as if it were the last admin.
    let refused = store.write(revoke_issuer("issuing-1", &["sensor"])).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("last valid admin")),
        "{refused:?}"
    );
    assert!(
        store
            .issuers()
            .await
            .unwrap()
            .iter()
            .all(|i| !i.is_revoked())
    );
    let before = store.verify_audit_chain().await.unwrap().unwrap();
    store.write(revoke_issuer("issuing-1", &[])).await.unwrap();
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(before + 1));
    let revoked = store.issuers().await.unwrap();
    let revoked = revoked.iter().find(|i| i.id == "issuing-1").unwrap();
    assert_eq!(
        (revoked.revoked_at, revoked.revocation_reason),
        (Some(5), Some(2))
    );
    assert_eq!(revoked.status_text(), "revoked");
    assert!(matches!(
        store.write(revoke_issuer("issuing-1", &[])).await,
        Err(StoreError::Conflict(m)) if m.contains("revoked already")
    ));
    // Its certificate is refused as a caller; a new one of it is never recorded, in a batch
    // or alone.
    let caller = store.certificate_of_caller("aa01").await.unwrap().unwrap();
    assert!(caller.issuer_revoked);
    let refused = store.write(issue("aa02", "d-2", "field")).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("issuing-1 is revoked")),
        "{refused:?}"
    );
    assert!(store.certificate("aa02").await.unwrap().is_none());
}

/// Root CRLs: only a higher number replaces the stored one, and one signed while the revoked
/// issuing CAs changed is refused.
#[tokio::test]
async fn a_root_crl_is_stored_only_newer_and_only_for_what_is_revoked_now() {
    let (_dir, store) = store().await;
    store
        .write(issuer("root-1", IssuerKind::Root, true))
        .await
        .unwrap();
    assert!(store.root_crl("root-1").await.unwrap().is_none());
    let put = |number, revoked: &[&str]| WriteOp::StoreRootCrl {
        crl: root_crl(number),
        revoked_issuers: revoked.iter().map(|r| r.to_string()).collect(),
    };
    store.write(put(3, &[])).await.unwrap();
    for number in [2, 3] {
        assert!(matches!(
            store.write(put(number, &[])).await,
            Err(StoreError::Changed(m)) if m.contains("or higher is stored")
        ));
    }
    assert!(matches!(
        store.write(put(4, &["issuing-1"])).await,
        Err(StoreError::Changed(m)) if m.contains("revoked issuing CAs changed")
    ));
    store.write(put(4, &[])).await.unwrap();
    let stored = store.root_crl("root-1").await.unwrap().unwrap();
    assert_eq!(stored, root_crl(4));
    assert_eq!(
        store.root_crl_numbers().await.unwrap(),
        [("root-1".to_owned(), 4)]
    );
}
