//! The store suite: what every backend must do, written against the [`Store`] interface only.
//! A backend runs all of it with one line, `store_suite!(name, factory)`, where the factory
//! opens a fresh, empty store (see `tests.rs`).

use std::sync::Arc;

use super::interface::Store;
use super::interface::*;
use super::*;
use crate::audit::AuditEvent;

/// A fresh, empty store of one backend, with what must live as long as it (a temp dir...).
pub(super) struct Fresh {
    /// The store.
    pub(super) store: Arc<dyn Store>,
    /// Dropped after the test.
    pub(super) _keep: Box<dyn std::any::Any + Send>,
}

/// Instantiates every test of the suite for one backend: `store_suite!(sqlite, fresh_sqlite)`
/// makes a module `sqlite` with one `#[tokio::test]` per suite function, each on a store from
/// `fresh_sqlite().await` (a [`Fresh`]; names visible where the macro is used resolve).
macro_rules! store_suite {
    ($backend:ident, $fresh:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $crate::store::suite::store_suite!(@tests $fresh;
                plain_issuances_register_the_device_once_and_fail_alone,
                concurrent_issuances_fail_alone_in_one_batch,
                an_issuance_records_its_audit_events_with_it_or_not_at_all,
                a_replacing_issuance_revokes_the_device_others_and_tells_the_feed,
                an_enrollment_token_buys_one_certificate,
                renewals_keep_the_interval_and_supersede_or_revoke,
                an_admin_revocation_with_reason_superseded_keeps_the_idevid_out,
                the_initial_hierarchy_is_recorded_whole_or_not_at_all,
                mark_authenticated_keeps_the_first_time,
                the_caller_generation_moves_with_what_a_caller_check_reads,
                status_changes_are_audited_and_revocation_is_final,
                committed_status_changes_reach_the_feed_in_order_and_failed_ones_do_not,
                a_dry_run_selects_what_the_change_would_change,
                a_zone_of_ten_thousand_is_revoked_in_one_change,
                no_change_takes_the_last_admin_credential,
                crl_numbers_increase_per_issuer,
                a_shared_issuing_crl_is_stored_only_newer,
                failed_enrollments_throttle_their_peer_for_a_window,
                a_rotation_switches_issuers_whole_or_not_at_all,
                a_revoked_issuer_records_nothing_more_and_takes_its_certificates_along,
                a_root_crl_is_stored_only_newer_and_only_for_what_is_revoked_now,
                device_registration_refuses_rows_one_by_one,
                a_device_status_carries_over_to_its_certificates,
                manufacturer_cas_are_unique,
                audit_events_extend_the_chain,
            );
        }
    };
    (@tests $fresh:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let fresh: $crate::store::suite::Fresh = ($fresh)().await;
                $crate::store::suite::$test(fresh.store.clone()).await;
            }
        )*
    };
}
pub(super) use store_suite;

const ROOT: &str = "root-1";
const ISSUING: &str = "issuing-1";

pub(super) fn issuer(id: &str, kind: IssuerKind, active: bool) -> IssuerRecord {
    IssuerRecord {
        id: id.into(),
        kind,
        subject: format!("CN={id}"),
        cert_der: vec![1],
        not_before: 0,
        not_after: 100,
        active,
        revoked_at: None,
        revocation_reason: None,
    }
}

/// Records the hierarchy every test starts from (root `root-1`, active issuing CA
/// `issuing-1`, no certificate); returns the number of audit events it took.
pub(super) async fn seed(store: &dyn Store) -> u64 {
    store
        .record_initial_hierarchy(InitialHierarchy {
            root: issuer(ROOT, IssuerKind::Root, true),
            issuing: issuer(ISSUING, IssuerKind::Issuing, true),
            certificates: Vec::new(),
            at: 0,
            actor: "test".into(),
        })
        .await
        .unwrap();
    store.verify_audit_chain().await.unwrap().unwrap()
}

pub(super) fn claim(device: &str, zone: &str, profile: &str) -> DeviceClaim {
    DeviceClaim {
        id: device.into(),
        zone: zone.into(),
        profile: profile.into(),
        serial_number: None,
        manufacturer: None,
    }
}

/// A certificate of `issuing-1` issued at 1, valid from 0 to 10.
fn cert(serial: &str, device: &str, zone: &str, profile: &str) -> NewCertificate {
    NewCertificate {
        serial: serial.into(),
        device_id: device.into(),
        profile: profile.into(),
        zone: zone.into(),
        issuer_id: ISSUING.into(),
        subject: format!("CN={device}"),
        not_before: 0,
        not_after: 10,
        scope: None,
        requested_by: "test".into(),
        spki_sha256: "00".into(),
        der: vec![0x30, 0x00],
        issued_at: 1,
    }
}

/// A plain issuance of a `sensor` certificate.
pub(super) fn issue(serial: &str, device: &str, zone: &str) -> IssuanceRecord {
    IssuanceRecord::new(
        claim(device, zone, "sensor"),
        cert(serial, device, zone, "sensor"),
        "test",
        IssuanceRule::Plain,
    )
}

/// A plain issuance at `at`, valid until 10 000.
fn issue_at(serial: &str, device: &str, at: i64) -> IssuanceRecord {
    let mut i = issue(serial, device, "field");
    i.cert.issued_at = at;
    i.cert.not_before = at;
    i.cert.not_after = 10_000;
    i
}

/// A plain issuance of an `admin` credential valid until 10 000.
fn admin(serial: &str, name: &str) -> IssuanceRecord {
    let mut cert = cert(serial, name, "field", "admin");
    cert.not_after = 10_000;
    IssuanceRecord::new(
        claim(name, "field", "admin"),
        cert,
        "test",
        IssuanceRule::Plain,
    )
}

/// A renewal of `old` by `serial` at `at` (interval 10 s).
fn renewal(old: &str, serial: &str, at: i64, key_compromise: bool) -> IssuanceRecord {
    let mut i = issue_at(serial, "d-1", at);
    i.rule = IssuanceRule::Limited {
        supersedes: Some(old.into()),
        min_interval: 10,
        key_compromise,
    };
    i
}

/// An IDevID enrollment of `device` at `at` (a certificate `serial` valid until 10 000).
fn idevid(serial: &str, device: &str, at: i64) -> IssuanceRecord {
    let mut i = issue_at(serial, device, at);
    i.device.manufacturer = Some("acme".into());
    i.rule = IssuanceRule::Limited {
        supersedes: None,
        min_interval: 10,
        key_compromise: false,
    };
    i
}

fn change(selector: CertSelector, change: StatusChange, at: i64) -> StatusChangeRequest {
    StatusChangeRequest {
        selector,
        change,
        operators: Operators::default(),
        at,
        actor: "test".into(),
    }
}

pub(super) fn set_status(serial: &str, status: CertStatus, at: i64) -> CertificateStatusUpdate {
    CertificateStatusUpdate {
        serial: serial.into(),
        status,
        reason: Some(1),
        at,
        actor: "test".into(),
    }
}

fn device_status(id: &str, status: DeviceStatus, at: i64) -> DeviceStatusUpdate {
    DeviceStatusUpdate {
        id: id.into(),
        status,
        admin_profiles: Vec::new(),
        at,
        actor: "test".into(),
    }
}

fn root_crl(number: u64) -> RootCrlRecord {
    RootCrlRecord {
        issuer_id: ROOT.into(),
        number,
        this_update: 1,
        next_update: 50,
        entries: 0,
        der: vec![number as u8],
        signed_at: 1,
        signed_by: "test".into(),
    }
}

pub(super) fn crl_update(number: u64, revoked: &[&str]) -> RootCrlUpdate {
    RootCrlUpdate {
        crl: root_crl(number),
        revoked_issuers: revoked.iter().map(|r| r.to_string()).collect(),
    }
}

pub(super) fn revocation(
    id: &str,
    admin_profiles: &[&str],
    crl: RootCrlUpdate,
) -> IssuerRevocation {
    IssuerRevocation {
        id: id.into(),
        reason: Some(2),
        admin_profiles: admin_profiles.iter().map(|p| p.to_string()).collect(),
        root_crl: crl,
        details: serde_json::json!({}),
        at: 5,
        actor: "test".into(),
    }
}

fn new_device(id: &str, serial_number: Option<&str>) -> NewDevice {
    NewDevice {
        id: id.into(),
        zone: "field".into(),
        profile: "sensor".into(),
        lot: Some("lot-1".into()),
        model: None,
        serial_number: serial_number.map(Into::into),
        manufacturer: None,
    }
}

fn token(hash: u8, device: &str) -> TokenRecord {
    TokenRecord {
        hash: vec![hash; 32],
        device_id: device.into(),
        profile: "sensor".into(),
        expires_at: 100,
        created_at: 0,
        created_by: "test".into(),
        used_at: None,
        revoked_at: None,
    }
}

fn serials(changed: &[RevocationStatus]) -> Vec<&str> {
    changed.iter().map(|c| c.serial.as_str()).collect()
}

/// Each issuance succeeds or fails alone: a claim of a device in another zone, a duplicate
/// serial (whose new device is not registered either).
pub(super) async fn plain_issuances_register_the_device_once_and_fail_alone(store: Arc<dyn Store>) {
    let base = seed(&*store).await;
    let results = [
        store.record_issuance(issue("aa01", "d-1", "field")).await,
        store.record_issuance(issue("aa02", "d-1", "it")).await,
        store.record_issuance(issue("aa01", "d-2", "field")).await,
        store.record_issuance(issue("aa03", "d-1", "field")).await,
        store.record_issuance(issue("aa04", "d-3", "field")).await,
    ];
    let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, [true, false, false, true, true], "{results:?}");
    assert!(matches!(results[1], Err(StoreError::DeviceConflict(_))));
    assert!(matches!(results[2], Err(StoreError::Duplicate(_))));
    assert!(results[0].as_ref().unwrap().device_registered);
    assert_eq!(results[3].as_ref().unwrap(), &Recorded::default());
    assert_eq!(store.count(CountedTable::Certificates).await.unwrap(), 3);
    // d-2 was only claimed by the refused duplicate: it must not be registered.
    assert!(store.device("d-2").await.unwrap().is_none());
    assert_eq!(store.device("d-1").await.unwrap().unwrap().zone, "field");
    assert_eq!(store.count(CountedTable::Devices).await.unwrap(), 2);
    // 2 device registrations + 3 issuances
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 5));
    let c = store.certificate("AA03").await.unwrap().unwrap();
    assert_eq!(
        (c.device_id.as_str(), c.status, c.issuer_id.as_str()),
        ("d-1", CertStatus::Active, ISSUING)
    );
}

/// Issuances arriving together (one group commit, written as one run) fail alone: a
/// duplicate serial fails the run's statement, and the batch is written again one by one.
pub(super) async fn concurrent_issuances_fail_alone_in_one_batch(store: Arc<dyn Store>) {
    let base = seed(&*store).await;
    store
        .record_issuance(issue("aa01", "d-1", "field"))
        .await
        .unwrap();
    let batch = [
        issue("bb01", "d-2", "field"),
        issue("aa01", "d-3", "field"),
        issue("bb02", "d-1", "it"),
        issue("bb03", "d-4", "field"),
        issue("bb04", "d-2", "field"),
    ];
    let results =
        futures::future::join_all(batch.into_iter().map(|r| store.record_issuance(r))).await;
    let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, [true, false, false, true, true], "{results:?}");
    assert!(matches!(results[1], Err(StoreError::Duplicate(_))));
    assert!(matches!(results[2], Err(StoreError::DeviceConflict(_))));
    assert_eq!(store.count(CountedTable::Certificates).await.unwrap(), 4);
    // d-3 was only claimed by the refused duplicate.
    assert!(store.device("d-3").await.unwrap().is_none());
    assert_eq!(store.count(CountedTable::Devices).await.unwrap(), 3);
    // 3 device registrations (d-1 before; d-2, d-4) + 4 issuances
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 7));
}

/// The events an issuance carries (bootstrap's `admin.create`) are recorded with it, and not
/// when it is refused.
pub(super) async fn an_issuance_records_its_audit_events_with_it_or_not_at_all(
    store: Arc<dyn Store>,
) {
    let base = seed(&*store).await;
    let event =
        |target: &str| AuditEvent::new(1, "test", "admin.create", target, serde_json::json!({}));
    store
        .record_issuance(admin("ad01", "admin-1").with_audit(event("admin-1")))
        .await
        .unwrap();
    let refused = store
        .record_issuance(admin("ad01", "admin-2").with_audit(event("admin-2")))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate(_))),
        "{refused:?}"
    );
    // registration + issuance + admin.create
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 3));
    let events = store.audit_events(0, 100).await.unwrap();
    let last = &events.last().unwrap().1;
    assert_eq!(
        (last.action.as_str(), last.target.as_str()),
        ("admin.create", "admin-1")
    );
    assert!(store.device("admin-2").await.unwrap().is_none());
}

/// Re-provisioning replaces the device's other certificates (reason superseded): they are in
/// the result and on the feed.
pub(super) async fn a_replacing_issuance_revokes_the_device_others_and_tells_the_feed(
    store: Arc<dyn Store>,
) {
    seed(&*store).await;
    store
        .record_issuance(issue("aa01", "d-1", "field"))
        .await
        .unwrap();
    store
        .record_issuance(issue("bb01", "d-2", "field"))
        .await
        .unwrap();
    let mut feed = store.status_changes();
    let mut again = issue("aa02", "d-1", "field");
    again.rule = IssuanceRule::ReplaceActive;
    let recorded = store.record_issuance(again).await.unwrap();
    assert!(!recorded.device_registered);
    assert_eq!(serials(&recorded.changed), ["aa01"]);
    assert_eq!(
        (recorded.changed[0].status, recorded.changed[0].reason),
        (CertStatus::Revoked, Some(4))
    );
    assert_eq!(feed.try_recv().unwrap().changes, recorded.changed);
    let old = store.certificate("aa01").await.unwrap().unwrap();
    assert_eq!(old.superseded_by.as_deref(), Some("aa02"));
    assert_eq!(
        store.certificate("bb01").await.unwrap().unwrap().status,
        CertStatus::Active
    );
    // A new device: registered, nothing replaced.
    let mut first = issue("cc01", "d-3", "field");
    first.rule = IssuanceRule::ReplaceActive;
    let recorded = store.record_issuance(first).await.unwrap();
    assert_eq!(
        recorded,
        Recorded {
            device_registered: true,
            changed: Vec::new()
        }
    );
    assert!(feed.try_recv().is_err(), "nothing changed");
}

/// A token is consumed by the certificate it buys, once, for its device only; revoking a
/// device's tokens counts the unused ones.
pub(super) async fn an_enrollment_token_buys_one_certificate(store: Arc<dyn Store>) {
    seed(&*store).await;
    let registered = store
        .register_devices(vec![new_device("d-1", None)], 0, "test")
        .await
        .unwrap();
    assert_eq!(registered.registered, 1);
    for t in [token(1, "d-1"), token(2, "d-1"), token(3, "d-1")] {
        store.create_token(t).await.unwrap();
    }
    assert_eq!(
        store.count(CountedTable::EnrollmentTokens).await.unwrap(),
        3
    );
    assert_eq!(
        store.token(&[1; 32]).await.unwrap().unwrap(),
        token(1, "d-1")
    );
    let enroll = |serial: &str, device: &str, hash: u8| {
        let mut i = issue(serial, device, "field");
        i.rule = IssuanceRule::ConsumeToken {
            token_hash: vec![hash; 32],
        };
        i
    };
    let recorded = store
        .record_issuance(enroll("aa01", "d-1", 1))
        .await
        .unwrap();
    assert!(!recorded.device_registered);
    assert_eq!(
        store.token(&[1; 32]).await.unwrap().unwrap().used_at,
        Some(1)
    );
    // Used already.
    let refused = store.record_issuance(enroll("aa02", "d-1", 1)).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("used, revoked or expired")),
        "{refused:?}"
    );
    // Another device's token.
    let refused = store.record_issuance(enroll("aa03", "d-9", 2)).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert!(store.device("d-9").await.unwrap().is_none());
    assert_eq!(store.revoke_tokens("d-1", 7, "test").await.unwrap(), 2);
    assert_eq!(
        store.token(&[2; 32]).await.unwrap().unwrap().revoked_at,
        Some(7)
    );
    assert_eq!(store.revoke_tokens("d-1", 8, "test").await.unwrap(), 0);
    let refused = store.record_issuance(enroll("aa04", "d-1", 3)).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.count(CountedTable::Certificates).await.unwrap(), 1);
}

/// Renewals: one certificate per interval, the renewed one (and an unused successor) marked
/// superseded; refused once the successor is in use; with key compromise the renewed key is
/// revoked, once per interval.
pub(super) async fn renewals_keep_the_interval_and_supersede_or_revoke(store: Arc<dyn Store>) {
    seed(&*store).await;
    store
        .record_issuance(issue_at("aa01", "d-1", 1))
        .await
        .unwrap();
    let refused = store
        .record_issuance(renewal("aa01", "aa02", 5, false))
        .await;
    assert!(
        matches!(refused, Err(StoreError::TooSoon(_))),
        "{refused:?}"
    );
    let recorded = store
        .record_issuance(renewal("aa01", "aa02", 20, false))
        .await
        .unwrap();
    assert_eq!(recorded, Recorded::default());
    let old = store.certificate("aa01").await.unwrap().unwrap();
    assert_eq!(
        (old.status, old.superseded_by.as_deref()),
        (CertStatus::Active, Some("aa02"))
    );
    // aa02 never authenticated: renewing aa01 again replaces it too.
    store
        .record_issuance(renewal("aa01", "aa03", 40, false))
        .await
        .unwrap();
    for old in ["aa01", "aa02"] {
        let c = store.certificate(old).await.unwrap().unwrap();
        assert_eq!(c.superseded_by.as_deref(), Some("aa03"), "{old}");
    }
    store.mark_authenticated("aa03", 45).await.unwrap();
    let refused = store
        .record_issuance(renewal("aa01", "aa04", 60, false))
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Superseded(m)) if m.contains("aa03")),
        "{refused:?}"
    );
    let mut feed = store.status_changes();
    let recorded = store
        .record_issuance(renewal("aa03", "aa05", 61, true))
        .await
        .unwrap();
    assert_eq!(serials(&recorded.changed), ["aa03"]);
    assert_eq!(
        (recorded.changed[0].status, recorded.changed[0].reason),
        (CertStatus::Revoked, Some(1))
    );
    assert_eq!(feed.try_recv().unwrap().changes, recorded.changed);
    let refused = store
        .record_issuance(renewal("aa05", "aa06", 62, true))
        .await;
    assert!(
        matches!(refused, Err(StoreError::TooSoon(_))),
        "{refused:?}"
    );
    let refused = store
        .record_issuance(renewal("aa03", "aa07", 80, false))
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("no longer active")),
        "{refused:?}"
    );
    let refused = store
        .record_issuance(renewal("ffff", "aa08", 80, false))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
}

/// REVIEW FINDING (issue 10 review): an admin's revocation with reason superseded (a reason
/// `hallmark revoke --reason superseded` accepts) must keep the IDevID out like any other;
/// only a re-provisioning's replacement (which records `superseded_by`) is routine.
pub(super) async fn an_admin_revocation_with_reason_superseded_keeps_the_idevid_out(
    store: Arc<dyn Store>,
) {
    seed(&*store).await;
    store
        .record_issuance(idevid("aa01", "d-1", 1))
        .await
        .unwrap();
    // A re-provisioning replaces it (reason superseded, superseded_by set): routine.
    let mut again = issue_at("aa02", "d-1", 20);
    again.rule = IssuanceRule::ReplaceActive;
    store.record_issuance(again).await.unwrap();
    store
        .record_issuance(idevid("aa03", "d-1", 100))
        .await
        .unwrap();
    // An admin revokes the device, choosing the reason superseded.
    let mut revoke = change(
        CertSelector::Device("d-1".into()),
        StatusChange::Revoke(4),
        200,
    );
    revoke.actor = "admin".into();
    let changed = store.change_status(revoke).await.unwrap();
    assert!(!changed.is_empty());
    let refused = store.record_issuance(idevid("aa04", "d-1", 300)).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(ref m)) if m.contains("readmit")),
        "the IDevID enrolled again after an admin's revocation: {refused:?}"
    );
    // Re-admitted, it enrolls again.
    store.readmit_device("d-1", 301, "admin").await.unwrap();
    store
        .record_issuance(idevid("aa05", "d-1", 302))
        .await
        .unwrap();
}

/// A new CA's hierarchy and first certificates are recorded in one transaction.
pub(super) async fn the_initial_hierarchy_is_recorded_whole_or_not_at_all(store: Arc<dyn Store>) {
    let system = |serial: &str, device: &str, zone: &str, profile: &str| {
        let mut cert = cert(serial, device, zone, profile);
        cert.not_after = 10_000;
        SystemCertificate {
            device: claim(device, zone, profile),
            cert,
        }
    };
    let initial = |admin_serial: &str| InitialHierarchy {
        root: issuer(ROOT, IssuerKind::Root, true),
        issuing: issuer(ISSUING, IssuerKind::Issuing, true),
        certificates: vec![
            system("5e01", "hallmark-ca", "ca", "ca-server"),
            system(admin_serial, "admin", "field", "admin"),
        ],
        at: 0,
        actor: "system".into(),
    };
    // A duplicate serial refuses all of it.
    let refused = store.record_initial_hierarchy(initial("5e01")).await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate(_))),
        "{refused:?}"
    );
    assert!(store.issuers().await.unwrap().is_empty());
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(0));

    store
        .record_initial_hierarchy(initial("ad01"))
        .await
        .unwrap();
    store.ping().await.unwrap();
    let issuers = store.issuers().await.unwrap();
    let ids: Vec<(&str, &str)> = issuers
        .iter()
        .map(|i| (i.id.as_str(), i.status_text()))
        .collect();
    assert_eq!(ids, [(ROOT, "active"), (ISSUING, "active")]);
    assert_eq!(store.count(CountedTable::Devices).await.unwrap(), 2);
    // 2 issuers, 2 registrations, 2 issuances
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(6));
    let caller = store.certificate_of_caller("AD01").await.unwrap().unwrap();
    assert_eq!(
        (
            caller.record.profile.as_str(),
            caller.device_status,
            caller.issuer_revoked
        ),
        ("admin", DeviceStatus::Active, false)
    );
    assert!(store.certificate_of_caller("ffff").await.unwrap().is_none());
    assert_eq!(store.valid_certificates_of(ISSUING, 5).await.unwrap(), 2);
    // A second hierarchy (another `init` on a shared database) is refused whole.
    let mut second = initial("ad02");
    second.root.id = "root-2".into();
    second.issuing.id = "issuing-2".into();
    second.certificates[0].cert.serial = "5e02".into();
    let refused = store.record_initial_hierarchy(second).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("holds a CA already")),
        "{refused:?}"
    );
    assert_eq!(store.issuers().await.unwrap().len(), 2);
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(6));
    // The CA's own certificate is never selected by a status change.
    let none = store
        .change_status(change(
            CertSelector::Zone("ca".into()),
            StatusChange::Revoke(1),
            5,
        ))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(
        store
            .revocation_entries(ISSUING, 5)
            .await
            .unwrap()
            .is_empty()
    );
    let mut suspend = set_status("ad01", CertStatus::Suspended, 6);
    suspend.reason = Some(6);
    let held = store.set_certificate_status(suspend).await.unwrap();
    assert_eq!(store.revocation_entries(ISSUING, 7).await.unwrap(), [held]);
    assert!(
        store
            .revocation_entries(ISSUING, 10_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.valid_certificates_of(ISSUING, 7).await.unwrap(), 1);
}

/// The first authentication of a certificate is kept; later ones change nothing.
pub(super) async fn mark_authenticated_keeps_the_first_time(store: Arc<dyn Store>) {
    let base = seed(&*store).await;
    store
        .record_issuance(issue("aa01", "d-1", "field"))
        .await
        .unwrap();
    store.mark_authenticated("aa01", 5).await.unwrap();
    store.mark_authenticated("aa01", 7).await.unwrap();
    let c = store.certificate("aa01").await.unwrap().unwrap();
    assert_eq!(c.first_authenticated_at, Some(5));
    // It observes use: no audit event.
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 2));
}

/// The caller generation moves, before the change's writer is answered, with every change of
/// what the per-call caller check reads (a callers' cache depends on it), and stands still
/// while certificates are only issued and used.
pub(super) async fn the_caller_generation_moves_with_what_a_caller_check_reads(
    store: Arc<dyn Store>,
) {
    seed(&*store).await;
    if store.is_shared() {
        // A replica's listener counts its first connection as news (it may have missed some).
        let remote = store.remote_changes();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while *remote.borrow() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let still = store.caller_generation();
    store
        .record_issuance(issue("aa01", "d-1", "field"))
        .await
        .unwrap();
    store
        .record_issuance(issue("aa02", "d-2", "field"))
        .await
        .unwrap();
    store.mark_authenticated("aa01", 5).await.unwrap();
    assert_eq!(
        store.caller_generation(),
        still,
        "issuing and using moved it"
    );

    let mut last = still;
    let mut moved = |what: &str, store: &dyn Store| {
        let now = store.caller_generation();
        assert!(now > last, "{what} did not move the caller generation");
        last = now;
    };
    store
        .set_certificate_status(set_status("aa01", CertStatus::Suspended, 6))
        .await
        .unwrap();
    moved("a suspension", &*store);
    store
        .set_certificate_status(set_status("aa01", CertStatus::Active, 7))
        .await
        .unwrap();
    moved("a resumption", &*store);
    store
        .set_device_status(device_status("d-2", DeviceStatus::Suspended, 8))
        .await
        .unwrap();
    moved("a device suspension", &*store);
    store
        .change_status(change(
            CertSelector::Zone("field".into()),
            StatusChange::Revoke(1),
            9,
        ))
        .await
        .unwrap();
    moved("a bulk revocation", &*store);
    store
        .rotate_issuer(IssuerRotation {
            issuer: issuer("issuing-2", IssuerKind::Issuing, true),
            retire: ISSUING.into(),
            root_crl: None,
            at: 10,
            actor: "test".into(),
        })
        .await
        .unwrap();
    moved("an issuer rotation", &*store);
    store
        .revoke_issuer(revocation(ISSUING, &[], crl_update(1, &[ISSUING])))
        .await
        .unwrap();
    moved("an issuer revocation", &*store);
}

pub(super) async fn status_changes_are_audited_and_revocation_is_final(store: Arc<dyn Store>) {
    let base = seed(&*store).await;
    store
        .record_issuance(issue("cc01", "d-1", "field"))
        .await
        .unwrap();
    let changed = store
        .set_certificate_status(set_status("cc01", CertStatus::Revoked, 5))
        .await
        .unwrap();
    assert_eq!(
        changed,
        RevocationStatus {
            serial: "cc01".into(),
            issuer_id: ISSUING.into(),
            not_after: 10,
            status: CertStatus::Revoked,
            revoked_at: Some(5),
            reason: Some(1),
        }
    );
    let c = store.certificate("CC01").await.unwrap().unwrap();
    assert_eq!(
        (c.status, c.revoked_at, c.revocation_reason),
        (CertStatus::Revoked, Some(5), Some(1))
    );
    assert!(matches!(
        store
            .set_certificate_status(set_status("cc01", CertStatus::Active, 5))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 3));
}

pub(super) async fn committed_status_changes_reach_the_feed_in_order_and_failed_ones_do_not(
    store: Arc<dyn Store>,
) {
    seed(&*store).await;
    for (serial, device, zone) in [
        ("aa01", "d-1", "a"),
        ("aa02", "d-2", "a"),
        ("bb01", "d-3", "b"),
    ] {
        store
            .record_issuance(issue(serial, device, zone))
            .await
            .unwrap();
    }
    let mut feed = store.status_changes();
    let v0 = store.status_version().await.unwrap();
    store
        .change_status(change(
            CertSelector::Zone("a".into()),
            StatusChange::Suspend,
            5,
        ))
        .await
        .unwrap();
    store
        .change_status(change(
            CertSelector::Serial("aa02".into()),
            StatusChange::Resume,
            5,
        ))
        .await
        .unwrap();
    // Nothing to resume: no change, nothing on the feed.
    let none = store
        .change_status(change(
            CertSelector::Zone("b".into()),
            StatusChange::Resume,
            5,
        ))
        .await
        .unwrap();
    assert!(none.is_empty());
    let first = feed.try_recv().unwrap();
    // Each committed batch of changes is the next status version, the empty one none.
    assert_eq!(first.version, v0 + 1);
    let first = &first.changes;
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
            ("aa01", CertStatus::Suspended, ISSUING, 10),
            ("aa02", CertStatus::Suspended, ISSUING, 10)
        ]
    );
    assert!(first.iter().all(|c| c.listed(5) && !c.listed(10)));
    let second = feed.try_recv().unwrap();
    assert_eq!(second.version, v0 + 2);
    let second = &second.changes;
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].serial.as_str(), second[0].status),
        ("aa02", CertStatus::Active)
    );
    assert!(!second[0].listed(5));
    assert!(feed.try_recv().is_err(), "no third batch");
    // A write that fails sends nothing.
    store
        .set_certificate_status(set_status("bb01", CertStatus::Revoked, 6))
        .await
        .unwrap();
    assert!(
        store
            .set_certificate_status(set_status("bb01", CertStatus::Active, 6))
            .await
            .is_err()
    );
    let third = feed.try_recv().unwrap();
    assert_eq!(
        (third.version, third.changes[0].status),
        (v0 + 3, CertStatus::Revoked)
    );
    assert!(feed.try_recv().is_err(), "the failed write sent nothing");
    assert_eq!(store.status_version().await.unwrap(), v0 + 3);

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
    // Pages follow issue order.
    let first = store
        .list_certificates(&CertFilter::default(), 0, 2)
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = store
        .list_certificates(&CertFilter::default(), first.next.unwrap(), 2)
        .await
        .unwrap();
    assert_eq!((rest.items[0].serial.as_str(), rest.next), ("bb01", None));
}

/// The dry run leaves out operator credentials from bulk selections and device holds from
/// resumptions, as the change does.
/// Incident response: a whole zone revoked in one change, with more certificates than one
/// statement may carry parameters for (SQLite 32,766, PostgreSQL 65,535: seven per audit
/// event), all revoked, each audited, the chain intact.
pub(super) async fn a_zone_of_ten_thousand_is_revoked_in_one_change(store: Arc<dyn Store>) {
    const N: usize = 10_000;
    let base = seed(&*store).await;
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let results = futures::future::join_all(chunk.iter().map(|i| {
            store.record_issuance(issue(&format!("{i:06x}"), &format!("z-{i}"), "field"))
        }))
        .await;
        assert!(
            results.iter().all(|r| r.is_ok()),
            "{:?}",
            results.iter().find(|r| r.is_err())
        );
    }
    let changed = store
        .change_status(change(
            CertSelector::Zone("field".into()),
            StatusChange::Revoke(1),
            5,
        ))
        .await
        .unwrap();
    assert_eq!(changed.len(), N);
    let entries = store.revocation_entries(ISSUING, 5).await.unwrap();
    assert_eq!(entries.len(), N);
    assert!(entries.iter().all(|e| e.status == CertStatus::Revoked));
    // N device registrations, N issuances, N revocations.
    assert_eq!(
        store.verify_audit_chain().await.unwrap(),
        Ok(base + 3 * N as u64)
    );
}

pub(super) async fn a_dry_run_selects_what_the_change_would_change(store: Arc<dyn Store>) {
    seed(&*store).await;
    store
        .record_issuance(issue("aa01", "d-1", "field"))
        .await
        .unwrap();
    store
        .record_issuance(admin("ad01", "admin-1"))
        .await
        .unwrap();
    let operators = Operators {
        profiles: vec!["admin".into()],
        admin_profiles: vec!["admin".into()],
        include_in_bulk: false,
    };
    let zone = CertSelector::Zone("field".into());
    let selected = store
        .certificates_selected(&zone, StatusChange::Suspend, &operators, 5)
        .await
        .unwrap();
    let got: Vec<&str> = selected
        .certificates
        .iter()
        .map(|c| c.serial.as_str())
        .collect();
    assert_eq!((got, selected.operators_left_out), (vec!["aa01"], 1));
    let mut suspend = change(zone.clone(), StatusChange::Suspend, 5);
    suspend.operators = operators.clone();
    let changed = store.change_status(suspend).await.unwrap();
    assert_eq!(serials(&changed), ["aa01"]);

    // A hold made by the device's suspension stays when its certificates are resumed.
    store
        .record_issuance(issue("bb01", "d-2", "field"))
        .await
        .unwrap();
    store
        .set_device_status(device_status("d-2", DeviceStatus::Suspended, 6))
        .await
        .unwrap();
    let selected = store
        .certificates_selected(&zone, StatusChange::Resume, &operators, 7)
        .await
        .unwrap();
    let got: Vec<&str> = selected
        .certificates
        .iter()
        .map(|c| c.serial.as_str())
        .collect();
    assert_eq!((got, selected.device_holds_left_out), (vec!["aa01"], 1));
}

/// Neither a status change nor a device's decommissioning takes the last valid admin
/// credential.
pub(super) async fn no_change_takes_the_last_admin_credential(store: Arc<dyn Store>) {
    seed(&*store).await;
    store
        .record_issuance(admin("ad01", "admin-1"))
        .await
        .unwrap();
    let admins = vec!["admin".to_owned()];
    let mut revoke = change(
        CertSelector::Serial("ad01".into()),
        StatusChange::Revoke(1),
        5,
    );
    revoke.operators.admin_profiles = admins.clone();
    let refused = store.change_status(revoke.clone()).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("last valid admin")),
        "{refused:?}"
    );
    let mut decommission = device_status("admin-1", DeviceStatus::Decommissioned, 5);
    decommission.admin_profiles = admins;
    let refused = store.set_device_status(decommission.clone()).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("last valid admin")),
        "{refused:?}"
    );
    assert_eq!(
        store.certificate("ad01").await.unwrap().unwrap().status,
        CertStatus::Active
    );
    // With another admin, both go through.
    store
        .record_issuance(admin("ad02", "admin-2"))
        .await
        .unwrap();
    assert_eq!(
        serials(&store.change_status(revoke).await.unwrap()),
        ["ad01"]
    );
    store.set_device_status(decommission).await.unwrap();
}

/// CRL numbers start at 1 and increase per issuer.
pub(super) async fn crl_numbers_increase_per_issuer(store: Arc<dyn Store>) {
    seed(&*store).await;
    assert_eq!(store.next_crl_number(ISSUING, 1).await.unwrap(), 1);
    assert_eq!(store.next_crl_number(ISSUING, 2).await.unwrap(), 2);
    assert_eq!(store.next_crl_number(ROOT, 2).await.unwrap(), 1);
    assert_eq!(store.next_crl_number(ISSUING, 3).await.unwrap(), 3);
}

/// A stored CRL of an issuing CA is replaced only by a higher number, and read back whole.
pub(super) async fn a_shared_issuing_crl_is_stored_only_newer(store: Arc<dyn Store>) {
    seed(&*store).await;
    assert!(store.issuing_crl(ISSUING).await.unwrap().is_none());
    let crl = |number: u64, basis: i64| IssuingCrlRecord {
        issuer_id: ISSUING.into(),
        number,
        basis,
        this_update: 10,
        next_update: 100,
        entries: 2,
        der: vec![0x30, number as u8],
        built_at: 11,
    };
    store.store_issuing_crl(crl(2, 5)).await.unwrap();
    for stale in [crl(2, 6), crl(1, 9)] {
        let refused = store.store_issuing_crl(stale).await;
        assert!(
            matches!(refused, Err(StoreError::Changed(_))),
            "{refused:?}"
        );
    }
    assert_eq!(store.issuing_crl(ISSUING).await.unwrap(), Some(crl(2, 5)));
    store.store_issuing_crl(crl(3, 7)).await.unwrap();
    assert_eq!(store.issuing_crl(ISSUING).await.unwrap(), Some(crl(3, 7)));
    // A CA that is not an issuer has no CRL to store.
    let mut unknown = crl(4, 7);
    unknown.issuer_id = "issuing-9".into();
    assert!(store.store_issuing_crl(unknown).await.is_err());
}

/// Failed enrollments count per peer within a window: the one that reaches the limit starts
/// the throttle (audited once), which ends with the window; other peers are not held up.
pub(super) async fn failed_enrollments_throttle_their_peer_for_a_window(store: Arc<dyn Store>) {
    let events = seed(&*store).await;
    let failure = |peer: &str, at: i64| EnrollFailure {
        peer: peer.into(),
        at,
        window: 100,
        max_failures: 3,
        throttled_event: AuditEvent::new(
            at,
            format!("peer:{peer}"),
            "enroll.throttled",
            peer,
            serde_json::json!({}),
        ),
    };
    let throttled = |peer: &'static str, now: i64| {
        let store = store.clone();
        async move { store.enroll_throttled(peer, now, 100, 3).await.unwrap() }
    };
    for at in [10, 20] {
        assert!(
            !store
                .record_enroll_failure(failure("10.0.0.1", at))
                .await
                .unwrap()
        );
        assert_eq!(throttled("10.0.0.1", at).await, None);
    }
    assert!(
        store
            .record_enroll_failure(failure("10.0.0.1", 30))
            .await
            .unwrap()
    );
    // Until the window that began at 10 ends.
    assert_eq!(throttled("10.0.0.1", 30).await, Some(80));
    assert_eq!(throttled("10.0.0.2", 30).await, None);
    assert!(
        !store
            .record_enroll_failure(failure("10.0.0.1", 40))
            .await
            .unwrap(),
        "the throttle is reported once per window"
    );
    assert_eq!(throttled("10.0.0.1", 109).await, Some(1));
    assert_eq!(throttled("10.0.0.1", 110).await, None);
    // A failure after the window opens a new one, counted from 1.
    assert!(
        !store
            .record_enroll_failure(failure("10.0.0.1", 120))
            .await
            .unwrap()
    );
    assert_eq!(throttled("10.0.0.1", 120).await, None);
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(events + 1));
}

/// A rollover records the new issuing CA, retires the old one and stores the root CRL in one
/// transaction.
pub(super) async fn a_rotation_switches_issuers_whole_or_not_at_all(store: Arc<dyn Store>) {
    let base = seed(&*store).await;
    let rotation = |retire: &str, root_crl| IssuerRotation {
        issuer: issuer("issuing-2", IssuerKind::Issuing, true),
        retire: retire.into(),
        root_crl,
        at: 3,
        actor: "test".into(),
    };
    let refused = store.rotate_issuer(rotation(ROOT, None)).await;
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    let refused = store
        .rotate_issuer(rotation(ISSUING, Some(crl_update(1, &["issuing-9"]))))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Changed(_))),
        "{refused:?}"
    );
    assert_eq!(store.issuers().await.unwrap().len(), 2, "nothing recorded");
    assert!(store.root_crl(ROOT).await.unwrap().is_none());

    store
        .rotate_issuer(rotation(ISSUING, Some(crl_update(1, &[]))))
        .await
        .unwrap();
    let status: Vec<(String, &str)> = store
        .issuers()
        .await
        .unwrap()
        .iter()
        .map(|i| (i.id.clone(), i.status_text()))
        .collect();
    assert!(
        status.contains(&(ISSUING.to_owned(), "retired")),
        "{status:?}"
    );
    assert!(
        status.contains(&("issuing-2".to_owned(), "active")),
        "{status:?}"
    );
    assert_eq!(store.root_crl(ROOT).await.unwrap().unwrap(), root_crl(1));
    // issuer.add, issuer.retire, root_crl.sign
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 3));
    // The new one is known now.
    let refused = store.rotate_issuer(rotation("issuing-2", None)).await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate(_))),
        "{refused:?}"
    );
}

/// A revoked issuing CA: only a retired one, once, with the root CRL listing it; no
/// certificate of it is recorded from then on; its certificates are refused as callers and
/// count for no admin.
pub(super) async fn a_revoked_issuer_records_nothing_more_and_takes_its_certificates_along(
    store: Arc<dyn Store>,
) {
    seed(&*store).await;
    store
        .record_issuance(issue("aa01", "d-1", "field"))
        .await
        .unwrap();
    let listing = |number| crl_update(number, &[ISSUING]);
    // The active issuing CA and roots are never revoked.
    for (id, needle) in [
        (ISSUING, "the active one"),
        (ROOT, "root CA"),
        ("nope", "no issuer"),
    ] {
        let refused = store.revoke_issuer(revocation(id, &[], listing(1))).await;
        assert!(
            matches!(&refused, Err(StoreError::Conflict(m) | StoreError::NotFound(m)) if m.contains(needle)),
            "{id}: {refused:?}"
        );
    }
    store
        .rotate_issuer(IssuerRotation {
            issuer: issuer("issuing-2", IssuerKind::Issuing, true),
            retire: ISSUING.into(),
            root_crl: None,
            at: 3,
            actor: "test".into(),
        })
        .await
        .unwrap();
    // d-1's certificate is the only valid one of profile `sensor`: as if it were the last admin.
    let refused = store
        .revoke_issuer(revocation(ISSUING, &["sensor"], listing(1)))
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("last valid admin")),
        "{refused:?}"
    );
    // A root CRL that does not list it is refused, and the revocation with it.
    let refused = store
        .revoke_issuer(revocation(ISSUING, &[], crl_update(1, &[])))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Changed(_))),
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
    store
        .revoke_issuer(revocation(ISSUING, &[], listing(1)))
        .await
        .unwrap();
    // issuer.revoke, root_crl.sign
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(before + 2));
    assert_eq!(store.root_crl(ROOT).await.unwrap().unwrap(), root_crl(1));
    let revoked = store.issuers().await.unwrap();
    let revoked = revoked.iter().find(|i| i.id == ISSUING).unwrap();
    assert_eq!(
        (revoked.revoked_at, revoked.revocation_reason),
        (Some(5), Some(2))
    );
    assert_eq!(revoked.status_text(), "revoked");
    assert!(matches!(
        store.revoke_issuer(revocation(ISSUING, &[], listing(2))).await,
        Err(StoreError::Conflict(m)) if m.contains("revoked already")
    ));
    // Its certificate is refused as a caller; a new one of it is never recorded.
    let caller = store.certificate_of_caller("aa01").await.unwrap().unwrap();
    assert!(caller.issuer_revoked);
    let refused = store.record_issuance(issue("aa02", "d-2", "field")).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("issuing-1 is revoked")),
        "{refused:?}"
    );
    assert!(store.certificate("aa02").await.unwrap().is_none());
}

/// Root CRLs: only a higher number replaces the stored one, and one signed while the revoked
/// issuing CAs changed is refused.
pub(super) async fn a_root_crl_is_stored_only_newer_and_only_for_what_is_revoked_now(
    store: Arc<dyn Store>,
) {
    seed(&*store).await;
    assert!(store.root_crl(ROOT).await.unwrap().is_none());
    store.store_root_crl(crl_update(3, &[])).await.unwrap();
    for number in [2, 3] {
        assert!(matches!(
            store.store_root_crl(crl_update(number, &[])).await,
            Err(StoreError::Changed(m)) if m.contains("or higher is stored")
        ));
    }
    assert!(matches!(
        store.store_root_crl(crl_update(4, &[ISSUING])).await,
        Err(StoreError::Changed(m)) if m.contains("revoked issuing CAs changed")
    ));
    store.store_root_crl(crl_update(4, &[])).await.unwrap();
    let stored = store.root_crl(ROOT).await.unwrap().unwrap();
    assert_eq!(stored, root_crl(4));
    assert_eq!(
        store.root_crl_numbers().await.unwrap(),
        [(ROOT.to_owned(), 4)]
    );
}

/// Devices are registered row by row: repeats within the import and collisions with the
/// registry are refused and explained, the rest kept.
pub(super) async fn device_registration_refuses_rows_one_by_one(store: Arc<dyn Store>) {
    let base = seed(&*store).await;
    let first = store
        .register_devices(
            vec![
                new_device("d-1", Some("s1")),
                new_device("d-2", Some("s2")),
                new_device("d-1", None),
                new_device("d-3", Some("s1")),
            ],
            1,
            "test",
        )
        .await
        .unwrap();
    assert_eq!(
        first,
        Registration {
            registered: 2,
            rejected: vec![
                (2, "device d-1 appears twice in this import".into()),
                (3, "serial number s1 appears twice in this import".into()),
            ],
        }
    );
    let second = store
        .register_devices(
            vec![new_device("d-1", None), new_device("d-4", Some("s2"))],
            2,
            "test",
        )
        .await
        .unwrap();
    assert_eq!(
        second,
        Registration {
            registered: 0,
            rejected: vec![
                (0, "device d-1 is already registered".into()),
                (
                    1,
                    "serial number s2 is already registered to another device".into()
                ),
            ],
        }
    );
    assert_eq!(
        store.register_devices(Vec::new(), 3, "test").await.unwrap(),
        Registration::default()
    );
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 2));
    let d1 = store.device("d-1").await.unwrap().unwrap();
    assert_eq!(
        (d1.lot.as_deref(), d1.status, d1.created_at),
        (Some("lot-1"), DeviceStatus::Active, 1)
    );
    // Registered without a manufacturer: found under any.
    let found = store.device_by_serial_number("s1", "acme").await.unwrap();
    assert_eq!(found.map(|d| d.id), Some("d-1".into()));
    assert!(
        store
            .device_by_serial_number("s9", "acme")
            .await
            .unwrap()
            .is_none()
    );
    let filter = DeviceFilter {
        lot: Some("lot-1".into()),
        ..Default::default()
    };
    let (page, next) = store.list_devices(&filter, "", 1).await.unwrap();
    assert_eq!((page[0].id.as_str(), next.as_deref()), ("d-1", Some("d-1")));
    let (page, next) = store.list_devices(&filter, "d-1", 1).await.unwrap();
    assert_eq!((page[0].id.as_str(), next), ("d-2", None));
}

/// Suspending a device holds its certificates, resuming releases them, decommissioning
/// revokes them and is final until the device is re-admitted.
pub(super) async fn a_device_status_carries_over_to_its_certificates(store: Arc<dyn Store>) {
    seed(&*store).await;
    for (serial, device) in [
        ("aa01", "d-1"),
        ("aa02", "d-1"),
        ("bb01", "d-2"),
        ("cc01", "d-3"),
    ] {
        store
            .record_issuance(issue_at(serial, device, 1))
            .await
            .unwrap();
    }
    let mut feed = store.status_changes();
    let held = store
        .set_device_status(device_status("d-1", DeviceStatus::Suspended, 2))
        .await
        .unwrap();
    let mut held_serials = serials(&held);
    held_serials.sort();
    assert_eq!(held_serials, ["aa01", "aa02"]);
    assert!(held.iter().all(|c| c.status == CertStatus::Suspended));
    assert_eq!(feed.try_recv().unwrap().changes, held);
    assert_eq!(
        store.device("d-1").await.unwrap().unwrap().status,
        DeviceStatus::Suspended
    );
    let released = store
        .set_device_status(device_status("d-1", DeviceStatus::Active, 3))
        .await
        .unwrap();
    assert!(released.iter().all(|c| c.status == CertStatus::Active));
    assert_eq!(released.len(), 2);
    let revoked = store
        .set_device_status(device_status("d-1", DeviceStatus::Decommissioned, 5))
        .await
        .unwrap();
    assert!(
        revoked
            .iter()
            .all(|c| (c.status, c.reason) == (CertStatus::Revoked, Some(5)))
    );
    let refused = store
        .set_device_status(device_status("d-1", DeviceStatus::Active, 6))
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("decommissioned")),
        "{refused:?}"
    );
    store.readmit_device("d-1", 6, "test").await.unwrap();
    assert_eq!(
        store.device("d-1").await.unwrap().unwrap().status,
        DeviceStatus::Active
    );
    // Its revoked certificates stay revoked.
    assert_eq!(
        store.certificate("aa01").await.unwrap().unwrap().status,
        CertStatus::Revoked
    );

    let refused = store
        .set_device_status(device_status("d-9", DeviceStatus::Suspended, 6))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    let refused = store.readmit_device("d-9", 6, "test").await;
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    store
        .set_device_status(device_status("d-2", DeviceStatus::Suspended, 6))
        .await
        .unwrap();
    let refused = store.readmit_device("d-2", 7, "test").await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("suspended")),
        "{refused:?}"
    );
    // A revocation within this second would still keep it out: refused for now.
    store
        .set_device_status(device_status("d-3", DeviceStatus::Decommissioned, 8))
        .await
        .unwrap();
    let refused = store.readmit_device("d-3", 8, "test").await;
    assert!(
        matches!(refused, Err(StoreError::TooSoon(_))),
        "{refused:?}"
    );
    store.readmit_device("d-3", 9, "test").await.unwrap();
}

pub(super) async fn manufacturer_cas_are_unique(store: Arc<dyn Store>) {
    let base = seed(&*store).await;
    let record = |id: &str, der: u8| ManufacturerCaRecord {
        id: id.into(),
        name: "acme".into(),
        cert_der: vec![der],
        zone: "field".into(),
        profile: "sensor".into(),
        auto_register: true,
        subject: "CN=Acme".into(),
        not_after: 100,
        created_at: 1,
    };
    store
        .add_manufacturer_ca(record("mfr-1", 1), "test")
        .await
        .unwrap();
    let refused = store.add_manufacturer_ca(record("mfr-2", 2), "test").await;
    assert!(
        matches!(&refused, Err(StoreError::Duplicate(m)) if m.contains("acme")),
        "{refused:?}"
    );
    assert_eq!(
        store.manufacturer_cas().await.unwrap(),
        [record("mfr-1", 1)]
    );
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 1));
}

pub(super) async fn audit_events_extend_the_chain(store: Arc<dyn Store>) {
    let base = seed(&*store).await;
    let event = AuditEvent::new(
        7,
        "test",
        "enroll.throttle",
        "d-1",
        serde_json::json!({"why": "test"}),
    );
    store.audit(event.clone()).await.unwrap();
    assert_eq!(
        store.count(CountedTable::AuditEvents).await.unwrap(),
        base as i64 + 1
    );
    let events = store.audit_events(base as i64 - 1, 10).await.unwrap();
    let (_, last, prev_hash, hash) = events.last().unwrap();
    assert_eq!(last, &event);
    assert_eq!(events.len(), 2);
    assert_eq!(prev_hash, &events[0].3);
    assert_eq!(hash.as_slice(), event.chain_hash(prev_hash).as_slice());
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 1));
}
