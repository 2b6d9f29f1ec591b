//! Bundle ownership: `--owner`, `--group` and `--key-mode` on bundle writes, and a rotation or
//! re-issue in place that keeps the owner, group and modes an admin gave the bundle (so the
//! broker running as `mosquitto` can still read its key after a renewal).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use hallmark_tests::{CaProcess, as_device, ok, refused, s};

/// The broker profile may renew at any time here, so one test can rotate twice.
const CONFIG: &str = r#"
[profiles.broker]
min_renewal_interval = "0s"
"#;

/// `(uid, gid, mode)` of a path.
fn access(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// `id -u NAME` / `getent group NAME`: the ids the system gives these names.
fn uid_of(name: &str) -> u32 {
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    ok(&out).trim().parse().unwrap()
}

fn gid_of(name: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", name])
        .output()
        .unwrap();
    ok(&out).split(':').nth(2).unwrap().trim().parse().unwrap()
}

fn serial(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("cert.pem")).unwrap()
}

fn start(work: &Path) -> CaProcess {
    let cfg = work.join("ca.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    CaProcess::start(&work.join("data"), &["--config", s(&cfg)])
}

fn issue(ca: &CaProcess, device: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "cert",
        "issue",
        "--device",
        device,
        "--profile",
        "broker",
        "--generate-key",
        "--out",
        s(out),
    ];
    args.extend(extra);
    ca.hallmark(&args)
}

#[test]
fn a_broker_bundle_is_issued_for_the_broker_user() {
    let work = tempfile::tempdir().unwrap();
    let ca = start(work.path());
    let (uid, gid) = (uid_of("mosquitto"), gid_of("mosquitto"));
    let dir = work.path().join("broker");
    ok(&issue(
        &ca,
        "mqtt-1.plant.example",
        &dir,
        &[
            "--owner",
            "mosquitto",
            "--group",
            "mosquitto",
            "--key-mode",
            "0640",
        ],
    ));
    assert_eq!(access(&dir), (uid, gid, 0o750), "directory");
    assert_eq!(access(&dir.join("key.pem")), (uid, gid, 0o640), "key");
    for f in ["cert.pem", "chain.pem", "ca.pem"] {
        assert_eq!(access(&dir.join(f)), (uid, gid, 0o644), "{f}");
    }
    // Numeric ids work as well; without flags a new bundle keeps the defaults.
    let numeric = work.path().join("numeric");
    ok(&issue(
        &ca,
        "mqtt-2.plant.example",
        &numeric,
        &["--owner", &uid.to_string(), "--group", &gid.to_string()],
    ));
    assert_eq!(access(&numeric), (uid, gid, 0o700));
    assert_eq!(access(&numeric.join("key.pem")), (uid, gid, 0o600));
    // An operator credential too (here the broker agent's, read by its service user).
    let agent = work.path().join("agent");
    ok(&ca.hallmark(&[
        "credential",
        "create",
        "--role",
        "broker-agent",
        "--name",
        "agent-1",
        "--out",
        s(&agent),
        "--owner",
        "nobody",
        "--group",
        "nogroup",
        "--key-mode",
        "0640",
    ]));
    let (nobody, nogroup) = (uid_of("nobody"), gid_of("nogroup"));
    assert_eq!(access(&agent), (nobody, nogroup, 0o750));
    assert_eq!(access(&agent.join("key.pem")), (nobody, nogroup, 0o640));
    let plain = work.path().join("plain");
    ok(&issue(&ca, "mqtt-3.plant.example", &plain, &[]));
    assert_eq!(access(&plain), (0, 0, 0o700));
    assert_eq!(access(&plain.join("key.pem")), (0, 0, 0o600));
    assert_eq!(access(&plain.join("cert.pem")), (0, 0, 0o644));
}

#[test]
fn rotation_and_reissue_keep_what_the_admin_set() {
    let work = tempfile::tempdir().unwrap();
    let ca = start(work.path());
    let endpoint = ca.var("HALLMARK_ENDPOINT").to_owned();
    let (uid, gid) = (uid_of("mosquitto"), gid_of("mosquitto"));
    let bundles = work.path().join("bundles");
    let dir = bundles.join("broker");
    ok(&issue(&ca, "mqtt-1.plant.example", &dir, &[]));
    // What an admin does by hand so that Mosquitto (user mosquitto) can read its key.
    for cmd in [
        vec!["chown", "-R", "mosquitto:mosquitto", s(&dir)],
        vec!["chmod", "0640", s(&dir.join("key.pem"))],
        vec!["chmod", "0750", s(&dir)],
        vec!["chmod", "0604", s(&dir.join("ca.pem"))],
    ] {
        assert!(
            Command::new(cmd[0])
                .args(&cmd[1..])
                .status()
                .unwrap()
                .success()
        );
    }
    let expect = |when: &str| {
        assert_eq!(access(&dir), (uid, gid, 0o750), "directory after {when}");
        assert_eq!(
            access(&dir.join("key.pem")),
            (uid, gid, 0o640),
            "key after {when}"
        );
        assert_eq!(
            access(&dir.join("cert.pem")),
            (uid, gid, 0o644),
            "cert after {when}"
        );
        assert_eq!(
            access(&dir.join("ca.pem")),
            (uid, gid, 0o604),
            "ca after {when}"
        );
    };
    for round in ["first rotation", "second rotation"] {
        let before = serial(&dir);
        ok(&as_device(
            &endpoint,
            &["rotate", "--bundle", s(&dir), "--force"],
        ));
        assert_ne!(serial(&dir), before, "{round} renewed");
        expect(round);
    }
    let before = serial(&dir);
    ok(&as_device(
        &endpoint,
        &["rotate", "--all", s(&bundles), "--force"],
    ));
    assert_ne!(serial(&dir), before, "rotate --all renewed");
    expect("rotate --all");
    let before = serial(&dir);
    ok(&issue(&ca, "mqtt-1.plant.example", &dir, &[]));
    assert_ne!(serial(&dir), before, "re-issued");
    expect("re-issue");

    // Flags on a rotation override, explicitly: back to root and a private key.
    ok(&as_device(
        &endpoint,
        &[
            "rotate",
            "--bundle",
            s(&dir),
            "--force",
            "--owner",
            "root",
            "--group",
            "root",
            "--key-mode",
            "0600",
        ],
    ));
    assert_eq!(access(&dir), (0, 0, 0o700));
    assert_eq!(access(&dir.join("key.pem")), (0, 0, 0o600));
    assert_eq!(
        access(&dir.join("ca.pem")),
        (0, 0, 0o604),
        "modes not asked for stay"
    );
}

#[test]
fn an_unknown_user_or_a_world_readable_key_is_refused_before_anything_is_written() {
    let work = tempfile::tempdir().unwrap();
    let ca = start(work.path());
    let endpoint = ca.var("HALLMARK_ENDPOINT").to_owned();
    let fresh = work.path().join("fresh");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--owner", "no-such-user-hallmark"],
            "no-such-user-hallmark",
        ),
        (
            &["--group", "no-such-group-hallmark"],
            "no-such-group-hallmark",
        ),
        (&["--key-mode", "0644"], "world"),
        (&["--key-mode", "rw-r"], "octal"),
    ];
    for (flags, says) in cases {
        let err = refused(&issue(&ca, "mqtt-1.plant.example", &fresh, flags));
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(!fresh.exists(), "{flags:?} wrote nothing");
    }
    let certs = ok(&ca.hallmark(&["cert", "list", "--device", "mqtt-1.plant.example"]));
    assert!(
        !certs.contains("mqtt-1.plant.example"),
        "no certificate was issued: {certs}"
    );

    // On a rotation: the bundle stays as it was, byte for byte and mode for mode.
    let dir = work.path().join("broker");
    ok(&issue(&ca, "mqtt-2.plant.example", &dir, &[]));
    let before = (serial(&dir), access(&dir.join("key.pem")));
    for flags in [["--owner", "no-such-user-hallmark"], ["--key-mode", "0604"]] {
        let mut args = vec!["rotate", "--bundle", s(&dir), "--force"];
        args.extend(flags);
        refused(&as_device(&endpoint, &args));
        assert_eq!(
            (serial(&dir), access(&dir.join("key.pem"))),
            before,
            "{flags:?}"
        );
    }
}
