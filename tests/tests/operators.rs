//! Operators are not devices: a bulk revocation (zone, lot, profile) leaves the admin,
//! provisioner and broker-agent credentials out unless asked for, the last valid admin
//! credential can be neither revoked nor suspended, and `hallmark-ca admin create` makes a new
//! admin credential on the CA host, also while the CA runs, recorded and audited like any
//! issuance.

use std::path::Path;
use std::process::Command;

use hallmark_tests::{CaProcess, bin, ok, refused, s};

/// Serial of the only certificate of `device`, as the admin lists it.
fn serial_of(ca: &CaProcess, device: &str) -> String {
    let listed = ok(&ca.hallmark(&["cert", "list", "--device", device, "-o", "json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let all = listed.as_array().unwrap();
    assert_eq!(all.len(), 1, "{listed}");
    all[0]["serial"].as_str().unwrap().to_owned()
}

/// The operator credentials of a CA whose default zone is `field`, where the devices are too.
fn field_plant(work: &Path) -> CaProcess {
    let conf = work.join("ca.toml");
    std::fs::write(&conf, "default_zone = \"field\"\n").unwrap();
    let ca = CaProcess::start(&work.join("data"), &["--config", s(&conf)]);
    for id in ["s-1", "s-2"] {
        ca.issue_bundle(id, "sensor", Some("field"), &work.join(id));
    }
    ok(&ca.hallmark(&[
        "credential",
        "create",
        "--role",
        "broker-agent",
        "--name",
        "agent-1",
        "--out",
        s(&work.join("agent")),
    ]));
    ok(&ca.hallmark(&[
        "credential",
        "create",
        "--role",
        "provisioner",
        "--name",
        "station-1",
        "--zones",
        "field",
        "--profiles",
        "sensor",
        "--out",
        s(&work.join("station")),
    ]));
    ca
}

#[test]
fn a_zone_revocation_spares_the_operators_and_never_takes_the_last_admin() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ca = field_plant(w);
    let agent = w.join("agent");
    let revoke_zone = |extra: &[&str]| {
        let mut args = vec!["revoke", "--zone", "field", "--reason", "key-compromise"];
        args.extend(extra);
        ca.hallmark(&args)
    };

    // The dry run and the revocation take the two sensors, not the three operators.
    let dry = ok(&revoke_zone(&["--dry-run"]));
    assert!(dry.contains("would revoke 2 certificates"), "{dry}");
    assert!(
        dry.contains("left out 3 operator credentials") && dry.contains("--include-operators"),
        "{dry}"
    );
    let done = ok(&revoke_zone(&[]));
    assert!(done.contains("revoked 2 certificates"), "{done}");
    assert!(done.contains("left out 3 operator credentials"), "{done}");
    // The admin and the broker agent still work.
    ok(&ca.hallmark(&["cert", "list"]));
    ok(&ca.hallmark_as(&agent, &["cert", "list"]));

    // Asked for explicitly, the operators are selected...
    let dry = ok(&revoke_zone(&["--include-operators", "--dry-run"]));
    assert!(dry.contains("would revoke 3 certificates"), "{dry}");
    for name in ["admin", "agent-1", "station-1"] {
        assert!(dry.contains(name), "{name} is in the dry run: {dry}");
    }
    // ...but taking the last valid admin is refused, and nothing changes.
    let why = refused(&revoke_zone(&["--include-operators"]));
    assert!(
        why.contains("last valid admin credential") && why.contains("hallmark-ca admin create"),
        "{why}"
    );
    ok(&ca.hallmark(&["cert", "list"]));
    ok(&ca.hallmark_as(&agent, &["cert", "list"]));

    // Neither a hold nor the registry can take it either.
    let admin_serial = serial_of(&ca, "admin");
    let why = refused(&ca.hallmark(&["suspend", "--serial", &admin_serial]));
    assert!(why.contains("last valid admin credential"), "{why}");
    let why = refused(&ca.hallmark(&[
        "revoke",
        "--profile",
        "admin",
        "--reason",
        "unspecified",
        "--include-operators",
    ]));
    assert!(why.contains("last valid admin credential"), "{why}");
    for verb in ["suspend", "decommission"] {
        let why = refused(&ca.hallmark(&["device", verb, "admin"]));
        assert!(why.contains("last valid admin credential"), "{verb}: {why}");
    }
    ok(&ca.hallmark(&["cert", "list"]));

    // A lot or profile selection spares operators the same way.
    let dry = ok(&ca.hallmark(&["suspend", "--profile", "broker-agent", "--dry-run"]));
    assert!(
        dry.contains("would suspend 0 certificates") && dry.contains("left out 1 operator"),
        "{dry}"
    );
    // The broker agent is taken when named, and by a bulk selection that asks for operators.
    ok(&ca.hallmark(&[
        "suspend",
        "--profile",
        "broker-agent",
        "--include-operators",
    ]));
    refused(&ca.hallmark_as(&agent, &["cert", "list"]));
}

#[test]
fn a_break_glass_admin_is_made_on_the_ca_host_while_the_ca_runs() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = w.join("data");
    let ca = CaProcess::start(&data, &[]);
    ca.issue_bundle("s-1", "sensor", None, &w.join("s-1"));
    let admin_create = |args: &[&str]| {
        Command::new(bin("hallmark-ca"))
            .args(["admin", "create"])
            .args(args)
            .env_remove("HALLMARK_CA_PASSPHRASE")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let rescue = w.join("rescue");
    let made = ok(&admin_create(&[
        "--data-dir",
        s(&data),
        "--name",
        "rescue",
        "--out",
        s(&rescue),
    ]));
    assert!(made.contains("rescue"), "{made}");

    // It works at once against the running CA, as an admin.
    let listed = ok(&ca.hallmark_as(
        &rescue,
        &["cert", "list", "--device", "rescue", "-o", "json"],
    ));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["profile"], "admin", "{listed}");
    let serial = listed[0]["serial"].as_str().unwrap().to_owned();
    assert!(made.contains(&serial), "{made}");
    // With two admins, the first one can go.
    ok(&ca.hallmark_as(
        &rescue,
        &["revoke", "--device", "admin", "--reason", "key-compromise"],
    ));
    refused(&ca.hallmark(&["cert", "list"]));
    ok(&ca.hallmark_as(&rescue, &["device", "show", "rescue"]));

    // Bad requests are refused and change nothing.
    let db = data.join("hallmark.db");
    let count_before = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = hallmark_ca::store::open_sqlite(&db, 1).await.unwrap();
            let n = store
                .count(hallmark_ca::store::CountedTable::AuditEvents)
                .await
                .unwrap();
            store.close().await;
            n
        })
    };
    let (x, y, z, nothing) = (w.join("x"), w.join("y"), w.join("z"), w.join("nothing"));
    let cases: [(&str, Vec<&str>, &str); 4] = [
        (
            "an --out that holds a credential",
            vec![
                "--data-dir",
                s(&data),
                "--name",
                "rescue-2",
                "--out",
                s(&rescue),
            ],
            "holds a credential",
        ),
        (
            "the name of a device",
            vec!["--data-dir", s(&data), "--name", "s-1", "--out", s(&x)],
            "s-1 is registered",
        ),
        (
            "a bad name",
            vec!["--data-dir", s(&data), "--name", "Bad Name", "--out", s(&y)],
            "name",
        ),
        (
            "a data dir without a CA",
            vec!["--data-dir", s(&nothing), "--name", "r", "--out", s(&z)],
            "not initialised",
        ),
    ];
    for (case, args, needle) in cases {
        let why = refused(&admin_create(&args));
        assert!(why.contains(needle), "{case}: {why}");
    }
    for d in ["x", "y", "z", "nothing"] {
        assert!(!w.join(d).exists(), "{d} was created");
    }

    // Recorded and audited in the chain like any issuance.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = hallmark_ca::store::open_sqlite(&db, 1).await.unwrap();
        let n = store
            .count(hallmark_ca::store::CountedTable::AuditEvents)
            .await
            .unwrap();
        assert_eq!(n, count_before, "a refused admin create wrote audit events");
        let events = store.audit_events(0, 10_000).await.unwrap();
        let issue = events
            .iter()
            .find(|(_, e, _, _)| e.action == "certificate.issue" && e.target == serial)
            .expect("the issuance is audited");
        assert_eq!(issue.1.actor, "system:admin-create");
        let made = events
            .iter()
            .find(|(_, e, _, _)| e.action == "admin.create" && e.target == "rescue")
            .expect("the break-glass admin is audited");
        assert!(made.1.details.contains(&serial), "{:?}", made.1);
        let device = store.device("rescue").await.unwrap().expect("registered");
        assert_eq!(device.profile, "admin");
        assert!(store.verify_audit_chain().await.unwrap().is_ok());
        store.close().await;
    });
}
