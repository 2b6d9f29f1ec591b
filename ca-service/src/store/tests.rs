//! The store suite on SQLite and on PostgreSQL, and what is SQLite's own: group commit (each request of a batch
//! succeeds or fails alone, on the multi-row fast path too) and the audit chain on disk.

use std::sync::Arc;

use super::interface::*;
use super::suite::{Fresh, issue, seed, store_suite};
use super::*;
use crate::audit::AuditEvent;

async fn fresh_sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), 64)
        .await
        .unwrap();
    Fresh {
        store: Arc::new(store),
        _keep: Box::new(dir),
    }
}

store_suite!(sqlite, fresh_sqlite);

async fn fresh_postgres() -> Fresh {
    let db = super::postgres::scratch::Scratch::new().await;
    let store = PgStore::open_with(db.options(), 64).await.unwrap();
    Fresh {
        store: Arc::new(store),
        _keep: Box::new(db),
    }
}

store_suite!(postgres, fresh_postgres);

/// A seeded SQLite store (see `suite::seed`) and the number of audit events the seed took.
async fn store() -> (tempfile::TempDir, Arc<SqliteStore>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("t.db"), 64)
            .await
            .unwrap(),
    );
    let base = seed(&*store).await;
    (dir, store, base)
}

/// Fires `writes` together so that they land in one batch, and returns their results in order.
async fn together(
    store: &Arc<SqliteStore>,
    writes: Vec<IssuanceRecord>,
) -> Vec<Result<Recorded, StoreError>> {
    let handles: Vec<_> = writes
        .into_iter()
        .map(|w| {
            let s: Arc<dyn interface::Store> = store.clone();
            tokio::spawn(async move { s.record_issuance(w).await })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    results
}

// Current-thread runtime: the five writers all queue before the writer task runs, so they
// arrive as one batch and take the multi-row path.
#[tokio::test]
async fn concurrent_writes_fail_alone_and_keep_the_chain() {
    let (_dir, store, base) = store().await;
    // Fired together so that they land in one batch: a good one, a claim of the same new
    // device in another zone, a duplicate serial, and more good ones.
    let results = together(
        &store,
        vec![
            issue("aa01", "d-1", "field"),
            issue("aa02", "d-1", "it"),
            issue("aa01", "d-2", "field"),
            issue("aa03", "d-1", "field"),
            issue("aa04", "d-3", "field"),
        ],
    )
    .await;
    let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, [true, false, false, true, true], "{results:?}");
    assert!(matches!(results[1], Err(StoreError::DeviceConflict(_))));
    assert!(matches!(results[2], Err(StoreError::Duplicate(_))));
    assert!(results[0].as_ref().unwrap().device_registered);
    assert!(!results[3].as_ref().unwrap().device_registered);

    assert_eq!(store.count(CountedTable::Certificates).await.unwrap(), 3);
    // d-2 was only claimed by the refused duplicate: it must not be registered.
    assert!(store.device("d-2").await.unwrap().is_none());
    assert_eq!(store.device("d-1").await.unwrap().unwrap().zone, "field");
    // 2 device registrations + 3 issuances
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 5));
}

/// Writes that are not plain issuances break the fast path's run; each still stands alone,
/// and a composite (an issuance with its audit event) fails whole.
#[tokio::test]
async fn a_mixed_batch_fails_alone_and_composites_whole() {
    let (_dir, store, base) = store().await;
    let event = AuditEvent::new(1, "test", "admin.create", "d-2", serde_json::json!({}));
    let mut replacing = issue("aa04", "d-1", "field");
    replacing.rule = IssuanceRule::ReplaceActive;
    let results = together(
        &store,
        vec![
            issue("aa01", "d-1", "field"),
            issue("aa01", "d-2", "field").with_audit(event),
            issue("aa03", "d-3", "field"),
            replacing,
            issue("aa05", "d-4", "field"),
        ],
    )
    .await;
    let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, [true, false, true, true, true], "{results:?}");
    assert!(matches!(results[1], Err(StoreError::Duplicate(_))));
    let replaced: Vec<&str> = results[3]
        .as_ref()
        .unwrap()
        .changed
        .iter()
        .map(|c| c.serial.as_str())
        .collect();
    assert_eq!(replaced, ["aa01"]);
    assert!(store.device("d-2").await.unwrap().is_none());
    // 3 registrations, 4 issuances, 1 replacement
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 8));
}

/// No certificate of a revoked issuer is recorded from a batch either: the trigger fails the
/// fast path's run, and each request alone.
#[tokio::test]
async fn a_batch_records_nothing_of_a_revoked_issuer() {
    let (_dir, store, _) = store().await;
    let issuing_2 = IssuerRecord {
        id: "issuing-2".into(),
        kind: IssuerKind::Issuing,
        subject: "CN=issuing-2".into(),
        cert_der: vec![2],
        not_before: 0,
        not_after: 100,
        active: true,
        revoked_at: None,
        revocation_reason: None,
    };
    store
        .rotate_issuer(IssuerRotation {
            issuer: issuing_2,
            retire: "issuing-1".into(),
            root_crl: None,
            at: 3,
            actor: "test".into(),
        })
        .await
        .unwrap();
    let crl = RootCrlRecord {
        issuer_id: "root-1".into(),
        number: 1,
        this_update: 1,
        next_update: 50,
        entries: 1,
        der: vec![1],
        signed_at: 5,
        signed_by: "test".into(),
    };
    store
        .revoke_issuer(IssuerRevocation {
            id: "issuing-1".into(),
            reason: None,
            admin_profiles: Vec::new(),
            root_crl: RootCrlUpdate {
                crl,
                revoked_issuers: vec!["issuing-1".into()],
            },
            details: serde_json::json!({}),
            at: 5,
            actor: "test".into(),
        })
        .await
        .unwrap();
    let mut of_the_new_one = issue("aa02", "d-2", "field");
    of_the_new_one.cert.issuer_id = "issuing-2".into();
    let results = together(
        &store,
        vec![
            issue("aa01", "d-1", "field"),
            of_the_new_one,
            issue("aa03", "d-3", "field"),
        ],
    )
    .await;
    let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, [false, true, false], "{results:?}");
    assert!(
        matches!(&results[0], Err(StoreError::Conflict(m)) if m.contains("issuing-1 is revoked")),
        "{results:?}"
    );
    assert_eq!(store.count(CountedTable::Certificates).await.unwrap(), 1);
    assert!(store.device("d-1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_changed_audit_row_breaks_the_chain() {
    let (_dir, store, base) = store().await;
    for serial in ["bb01", "bb02"] {
        interface::Store::record_issuance(&*store, issue(serial, "d-1", "field"))
            .await
            .unwrap();
    }
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(base + 3));
    let forged = base as i64 + 1;
    sqlx::query("UPDATE audit_events SET target = 'forged' WHERE id = ?1")
        .bind(forged)
        .execute(&store.pool)
        .await
        .unwrap();
    assert_eq!(store.verify_audit_chain().await.unwrap(), Err(forged));
}

// A database URL is shown (logs, errors, Debug) without any password in it.
#[test]
fn database_urls_are_shown_without_passwords() {
    for (url, shown) in [
        (
            "postgres://ca:s3cret@db.example:5432/hallmark?sslmode=verify-full",
            "postgres://ca:redacted@db.example:5432/hallmark?sslmode=verify-full",
        ),
        (
            "postgres://db.example/hallmark?user=ca&password=s3cret&sslpassword=k3y",
            "postgres://db.example/hallmark?user=ca&password=redacted&sslpassword=redacted",
        ),
        (
            "postgres://ca@db.example/hallmark",
            "postgres://ca@db.example/hallmark",
        ),
        ("not a url s3cret", "<unparsable database URL>"),
    ] {
        let db = Database::Postgres(url.into());
        assert_eq!(db.to_string(), shown);
        assert!(!format!("{db:?}").contains("s3cret"), "{db:?}");
    }
}
