//! The PostgreSQL schema on a real server (see [`Scratch`]); the store suite runs on it from
//! `store/tests.rs`.

use sqlx::Row;

use super::PgStore;
use super::scratch::Scratch;
use crate::store::Store;

#[tokio::test]
async fn the_schema_applies_once_even_when_two_replicas_start_together() {
    let db = Scratch::new().await;
    let (a, b) = tokio::join!(
        PgStore::open_with(db.options(), 64),
        PgStore::open_with(db.options(), 64)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    a.ping().await.unwrap();
    b.ping().await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text AS t FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&a.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("t"))
    .collect();
    assert_eq!(
        tables,
        [
            "audit_events",
            "certificates",
            "crl_state",
            "devices",
            "enroll_failures",
            "enrollment_tokens",
            "issuers",
            "issuing_crls",
            "manufacturer_cas",
            "root_crls",
            "status_version"
        ]
    );
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&a.pool)
        .await
        .unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i64;
    assert_eq!(applied, migrations, "each migration ran once");
    // Opening again finds the schema current.
    let again = PgStore::open_with(db.options(), 64).await.unwrap();
    again.ping().await.unwrap();
    for s in [a, b, again] {
        s.close().await;
    }
}

// The database itself refuses a certificate of a revoked issuing CA, whichever replica (or
// whatever stale view of the issuers) tries to record it.
#[tokio::test]
async fn no_certificate_of_a_revoked_issuer_is_recorded() {
    let db = Scratch::new().await;
    let store = PgStore::open_with(db.options(), 64).await.unwrap();
    let insert_issuer = |id: &'static str, revoked: Option<i64>| {
        sqlx::query(
            "INSERT INTO issuers (id, kind, subject, cert_der, not_before, not_after, status, \
             created_at, revoked_at) VALUES ($1, 'issuing', 'CN=i', $2, 0, 100, 'retired', 0, $3)",
        )
        .bind(id)
        .bind(vec![1u8])
        .bind(revoked)
    };
    insert_issuer("issuing-ok", None)
        .execute(&store.pool)
        .await
        .unwrap();
    insert_issuer("issuing-revoked", Some(5))
        .execute(&store.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO devices (id, zone, profile, status, created_at, updated_at) \
         VALUES ('d-1', 'field', 'sensor', 'active', 0, 0)",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    let insert_cert = |serial: &'static str, issuer: &'static str| {
        sqlx::query(
            "INSERT INTO certificates (serial, device_id, profile, zone, issuer_id, subject, \
             not_before, not_after, status, requested_by, spki_sha256, der, issued_at) \
             VALUES ($1, 'd-1', 'sensor', 'field', $2, 'CN=d-1', 0, 10, 'active', 'test', '00', \
             $3, 1)",
        )
        .bind(serial)
        .bind(issuer)
        .bind(vec![0x30u8, 0])
    };
    insert_cert("aa01", "issuing-ok")
        .execute(&store.pool)
        .await
        .unwrap();
    let refused = insert_cert("aa02", "issuing-revoked")
        .execute(&store.pool)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("hallmark: the issuing CA is revoked"),
        "{refused}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    store.close().await;
}

// A serial number is unique per manufacturer, and devices without one do not collide.
#[tokio::test]
async fn serial_numbers_are_unique_per_manufacturer() {
    let db = Scratch::new().await;
    let store = PgStore::open_with(db.options(), 64).await.unwrap();
    let add = |id: &'static str, serial: Option<&'static str>, mfr: Option<&'static str>| {
        sqlx::query(
            "INSERT INTO devices (id, zone, profile, serial_number, manufacturer, status, \
             created_at, updated_at) VALUES ($1, 'field', 'sensor', $2, $3, 'active', 0, 0)",
        )
        .bind(id)
        .bind(serial)
        .bind(mfr)
    };
    add("a", Some("SN1"), Some("acme"))
        .execute(&store.pool)
        .await
        .unwrap();
    add("b", Some("SN1"), Some("other"))
        .execute(&store.pool)
        .await
        .unwrap();
    add("c", None, None).execute(&store.pool).await.unwrap();
    add("d", None, None).execute(&store.pool).await.unwrap();
    let dup = add("e", Some("SN1"), Some("acme"))
        .execute(&store.pool)
        .await
        .unwrap_err();
    assert!(
        matches!(&dup, sqlx::Error::Database(e) if e.is_unique_violation()),
        "{dup}"
    );
    add("f", Some("SN2"), None)
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(
        add("g", Some("SN2"), None)
            .execute(&store.pool)
            .await
            .is_err(),
        "two devices without manufacturer share a serial number"
    );
    store.close().await;
}

/// Polls `cond` every 20 ms for at most `limit`; whether it came true.
async fn within(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cond()
}

// One replica at a time builds the CRL of an issuer: a second one waits until the first lets
// go (also when it dies: the lock is its connection's), while other issuers stay free.
#[tokio::test]
async fn crl_builds_of_one_issuer_take_turns_across_replicas() {
    let db = Scratch::new().await;
    let a = PgStore::open_with(db.options(), 64).await.unwrap();
    let b = PgStore::open_with(db.options(), 64).await.unwrap();
    let held = a.lock_crl_build("issuing-1").await.unwrap();
    // Another issuer's builds are not held up.
    drop(b.lock_crl_build("issuing-2").await.unwrap());
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.lock_crl_build("issuing-1").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "two replicas build one CRL at once");
    drop(held);
    let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("the lock passes on once released")
        .unwrap()
        .unwrap();
    // Still exclusive in the other direction.
    let again = tokio::spawn({
        let a = a.clone();
        async move { a.lock_crl_build("issuing-1").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!again.is_finished());
    drop(second);
    drop(again.await.unwrap().unwrap());
    a.close().await;
    b.close().await;
}

/// Two replicas on `db`, once both listen for the other's announcements (each connection
/// counts once: news may have been missed before it).
async fn listening_replicas(db: &Scratch) -> (PgStore, PgStore) {
    let a = PgStore::open_with(db.options(), 64).await.unwrap();
    let b = PgStore::open_with(db.options(), 64).await.unwrap();
    let (ra, rb) = (a.remote_changes(), b.remote_changes());
    assert!(
        within(std::time::Duration::from_secs(5), || *ra.borrow() > 0
            && *rb.borrow() > 0)
        .await
    );
    (a, b)
}

// A status change committed through one replica moves the other's remote-change counter (a
// notification delivered at commit), and not its own; the status version is shared.
#[tokio::test]
async fn status_changes_reach_the_other_replica() {
    use crate::store::CertStatus;
    use crate::store::suite::{issue, seed, set_status};

    let db = Scratch::new().await;
    let (a, b) = listening_replicas(&db).await;
    let (ra, rb) = (a.remote_changes(), b.remote_changes());
    seed(&a).await;
    a.record_issuance(issue("aa01", "d-1", "field"))
        .await
        .unwrap();
    let (before_a, before_b) = (*ra.borrow(), *rb.borrow());
    let callers_b = b.caller_generation();
    a.set_certificate_status(set_status("aa01", CertStatus::Revoked, 5))
        .await
        .unwrap();
    assert!(
        within(std::time::Duration::from_secs(1), || *rb.borrow()
            > before_b)
        .await,
        "replica B did not hear of A's revocation within 1 s"
    );
    // B's callers' cache ends with it.
    assert!(b.caller_generation() > callers_b);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(*ra.borrow(), before_a, "a replica hears its own changes");
    assert_eq!(
        a.status_version().await.unwrap(),
        b.status_version().await.unwrap()
    );
    a.close().await;
    b.close().await;
}

// An issuing CA revoked through one replica ends the callers' records the other keeps in
// memory (the review found issuer changes unannounced: B accepted the revoked issuer's
// credentials until its cache's second ran out).
#[tokio::test]
async fn an_issuer_revocation_reaches_the_other_replicas_caller_check() {
    use crate::store::suite::{crl_update, issue, issuer, revocation, seed};
    use crate::store::{IssuerKind, IssuerRotation};

    let db = Scratch::new().await;
    let (a, b) = listening_replicas(&db).await;
    seed(&a).await;
    a.record_issuance(issue("aa01", "d-1", "field"))
        .await
        .unwrap();
    a.rotate_issuer(IssuerRotation {
        issuer: issuer("issuing-2", IssuerKind::Issuing, true),
        retire: "issuing-1".into(),
        root_crl: None,
        at: 2,
        actor: "test".into(),
    })
    .await
    .unwrap();
    // The rotation is announced too; let it arrive first.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = b.caller_generation();
    a.revoke_issuer(revocation("issuing-1", &[], crl_update(1, &["issuing-1"])))
        .await
        .unwrap();
    assert!(
        within(std::time::Duration::from_millis(500), || b
            .caller_generation()
            > before)
        .await,
        "replica B's callers' records outlived A's issuer revocation"
    );
    assert!(
        b.certificate_of_caller("aa01")
            .await
            .unwrap()
            .unwrap()
            .issuer_revoked
    );
    a.close().await;
    b.close().await;
}

// The enrollment throttle counts the failures of every replica: a peer cannot spread its
// guesses over them.
#[tokio::test]
async fn the_enrollment_throttle_counts_the_failures_of_every_replica() {
    use crate::store::EnrollFailure;

    let db = Scratch::new().await;
    let a = PgStore::open_with(db.options(), 64).await.unwrap();
    let b = PgStore::open_with(db.options(), 64).await.unwrap();
    let failure = |at: i64| EnrollFailure {
        peer: "192.0.2.7".into(),
        at,
        window: 300,
        max_failures: 3,
        throttled_event: crate::audit::AuditEvent::new(
            at,
            "peer:192.0.2.7",
            "enroll.throttled",
            "192.0.2.7",
            serde_json::json!({}),
        ),
    };
    assert!(!a.record_enroll_failure(failure(1)).await.unwrap());
    assert!(!b.record_enroll_failure(failure(2)).await.unwrap());
    assert_eq!(
        a.enroll_throttled("192.0.2.7", 2, 300, 3).await.unwrap(),
        None
    );
    assert!(a.record_enroll_failure(failure(3)).await.unwrap());
    for store in [&a, &b] {
        assert_eq!(
            store
                .enroll_throttled("192.0.2.7", 3, 300, 3)
                .await
                .unwrap(),
            Some(298)
        );
    }
    assert_eq!(a.verify_audit_chain().await.unwrap(), Ok(1));
    a.close().await;
    b.close().await;
}

// A replica that stops in the middle of a group commit (frozen, cut off) does not stop the
// others for long: the server ends its transaction, and with it the write lock, after 10 s.
#[tokio::test]
async fn a_replica_frozen_mid_commit_releases_the_write_lock() {
    use crate::store::suite::{issue, seed};

    let db = Scratch::new().await;
    let a = PgStore::open_with(db.options(), 64).await.unwrap();
    let b = PgStore::open_with(db.options(), 64).await.unwrap();
    seed(&b).await;
    let mut frozen = a.pool.acquire().await.unwrap();
    let tx = super::dialect::begin_write(&mut frozen).await.unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        b.record_issuance(issue("aa01", "d-1", "field")),
    )
    .await
    .expect("replica B is held up by the frozen one for good")
    .expect("replica B writes once the frozen transaction is ended");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(9) && waited < std::time::Duration::from_secs(30),
        "B waited {waited:?}"
    );
    // The frozen replica's transaction is gone: nothing it does commits.
    assert!(tx.commit().await.is_err());
    b.close().await;
}

// A database whose default isolation is REPEATABLE READ or SERIALIZABLE (a DBA's choice) does
// not fork the audit chain or refuse writes: each group commit reads the chain head after it
// holds the write lock, in READ COMMITTED whatever the default.
#[tokio::test]
async fn the_audit_chain_holds_whatever_the_default_isolation() {
    use crate::store::suite::{issue, seed};

    for isolation in ["repeatable read", "serializable"] {
        let db = Scratch::new().await;
        db.set_default("default_transaction_isolation", isolation)
            .await;
        let a = PgStore::open_with(db.options(), 64).await.unwrap();
        let b = PgStore::open_with(db.options(), 64).await.unwrap();
        seed(&a).await;
        let mut tasks = Vec::new();
        for i in 0..120 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store
                    .record_issuance(issue(&format!("c{i:03}"), &format!("d-{i}"), "field"))
                    .await
            }));
        }
        for t in tasks {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{isolation}: {e}"));
        }
        let events = a
            .count(crate::store::CountedTable::AuditEvents)
            .await
            .unwrap();
        assert_eq!(
            a.verify_audit_chain().await.unwrap(),
            Ok(events as u64),
            "{isolation}"
        );
        a.close().await;
        b.close().await;
    }
}
