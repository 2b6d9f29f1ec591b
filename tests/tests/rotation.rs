//! Rotation: `hallmark rotate` on a device bundle, as a daemon, under SIGKILL, and over a
//! thousand bundles; `Renew` refusals that store nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hallmark_ca::bundle::CredentialBundle;
use hallmark_ca::config::Config;
use hallmark_proto::v1 as pb;
use hallmark_tests::{
    CaProcess, TestCa, as_device, assert_bundle_verifies, assert_refused, bin, ok, openssl,
    p256_csr, s,
};
use tonic::Code;
use x509_parser::prelude::*;

/// Sensors may renew at any time; `blink` certificates live 30 s; `flash` ones 2 s.
const CONFIG: &str = r#"
[profiles.sensor]
min_renewal_interval = "0s"

[profiles.blink]
role = "device"
ekus = ["client-auth"]
default_lifetime = "30s"
max_lifetime = "60s"
min_renewal_interval = "2s"
requesters = ["admin"]

[profiles.flash]
role = "device"
ekus = ["client-auth"]
default_lifetime = "2s"
max_lifetime = "2s"
requesters = ["admin"]
"#;

fn cert_info(dir: &Path) -> (String, Vec<u8>) {
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, c) = X509Certificate::from_der(&p.contents).unwrap();
    (
        hex::encode(c.raw_serial()),
        c.public_key().subject_public_key.data.to_vec(),
    )
}

/// Whether key.pem is the key of cert.pem.
fn key_matches(dir: &Path) -> bool {
    let Ok(key) = std::fs::read_to_string(dir.join("key.pem")) else {
        return false;
    };
    let Ok(key) = rcgen::KeyPair::from_pem(&key) else {
        return false;
    };
    cert_info(dir).1 == key.public_key_raw()
}

#[test]
fn an_enrolled_device_rotates_its_bundle() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("ca.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &["--config", s(&cfg)]);
    ok(&ca.hallmark(&[
        "device",
        "register",
        "sensor-0500",
        "--zone",
        "field",
        "--profile",
        "sensor",
    ]));
    let token = ok(&ca.hallmark(&["token", "create", "--device", "sensor-0500"]));
    let endpoint = ca.var("HALLMARK_ENDPOINT").to_owned();
    let trust = ca.var("HALLMARK_CA").to_owned();
    let dir = work.path().join("identity");
    // The device has its endpoint; the trust bundle comes with its bundle after enrollment.
    let device = |args: &[&str]| {
        Command::new(bin("hallmark"))
            .args(args)
            .env_clear()
            .env("HALLMARK_ENDPOINT", &endpoint)
            .output()
            .unwrap()
    };
    ok(&Command::new(bin("hallmark"))
        .args(["enroll", "--token", token.trim(), "--out", s(&dir)])
        .env_clear()
        .env("HALLMARK_ENDPOINT", &endpoint)
        .env("HALLMARK_CA", &trust)
        .output()
        .unwrap());
    let (old_serial, old_key) = cert_info(&dir);
    let old_copy = work.path().join("old");
    std::fs::create_dir(&old_copy).unwrap();
    for f in ["cert.pem", "chain.pem", "ca.pem"] {
        std::fs::copy(dir.join(f), old_copy.join(f)).unwrap();
    }

    // Fresh: nothing to do, and it says why.
    let idle = ok(&device(&["rotate", "--bundle", s(&dir)]));
    assert!(
        idle.contains("not due") && idle.contains("--force"),
        "{idle}"
    );
    assert_eq!(cert_info(&dir).0, old_serial);

    let done = ok(&device(&["rotate", "--bundle", s(&dir), "--force"]));
    assert!(done.contains("renewed"), "{done}");
    let (new_serial, new_key) = cert_info(&dir);
    assert_ne!(new_serial, old_serial);
    assert_ne!(new_key, old_key, "renewal re-keys");
    assert!(key_matches(&dir));
    assert_bundle_verifies(&dir);
    assert_bundle_verifies(&old_copy);
    let subject = openssl(&[
        "x509",
        "-in",
        s(&dir.join("cert.pem")),
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
    ]);
    assert_eq!(subject.trim(), "subject=OU=field,O=Hallmark,CN=sensor-0500");

    let shown = ok(&ca.hallmark(&["cert", "show", &old_serial, "-o", "json"]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["superseded_by"], new_serial.as_str());
    let expiring = ok(&ca.hallmark(&[
        "cert",
        "list",
        "--expiring-within",
        "45d",
        "--device",
        "sensor-0500",
        "-o",
        "json",
    ]));
    let expiring: serde_json::Value = serde_json::from_str(&expiring).unwrap();
    assert_eq!(expiring.as_array().unwrap().len(), 2);
    let soon = ok(&ca.hallmark(&[
        "cert",
        "list",
        "--expiring-within",
        "1d",
        "--device",
        "sensor-0500",
        "-o",
        "json",
    ]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&soon)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn the_daemon_renews_on_its_own_and_stops_on_sigterm() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("ca.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &["--config", s(&cfg)]);
    let dir = work.path().join("b1");
    ca.issue_bundle("blinker", "blink", None, &dir);
    let endpoint = ca.var("HALLMARK_ENDPOINT").to_owned();
    let mut daemon = Command::new(bin("hallmark"))
        .args(["rotate", "--bundle", s(&dir), "--daemon"])
        .env_clear()
        .env("HALLMARK_ENDPOINT", &endpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = vec![cert_info(&dir).0];
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let serial = cert_info(&dir).0;
        if seen.last() != Some(&serial) {
            assert!(key_matches(&dir));
            seen.push(serial);
        }
    }
    assert!(seen.len() >= 3, "two renewals within 90 s, saw {seen:?}");
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let stop = Instant::now();
    let status = loop {
        if let Some(st) = daemon.try_wait().unwrap() {
            break st;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(10),
            "daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[test]
fn sigkill_at_any_moment_never_mixes_key_and_certificate() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("ca.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &["--config", s(&cfg)]);
    let dir = work.path().join("s1");
    ca.issue_bundle("s1", "sensor", None, &dir);
    let endpoint = ca.var("HALLMARK_ENDPOINT").to_owned();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    // Kill moments spread over one and a half uninterrupted runs, timed here: a fixed window
    // would miss the write entirely on a loaded machine.
    let timed = Instant::now();
    ok(&Command::new(bin("hallmark"))
        .args(["rotate", "--bundle", s(&dir), "--force"])
        .env_clear()
        .env("HALLMARK_ENDPOINT", &endpoint)
        .output()
        .unwrap());
    let window = (timed.elapsed().as_millis() as u64 * 3 / 2).max(120);
    let mut serials = std::collections::BTreeSet::new();
    serials.insert(cert_info(&dir).0);
    for round in 0..40 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis((seed >> 33) % window);
        let mut child = Command::new(bin("hallmark"))
            .args(["rotate", "--bundle", s(&dir), "--force"])
            .env_clear()
            .env("HALLMARK_ENDPOINT", &endpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            key_matches(&dir),
            "round {round} (killed after {delay:?}): key and certificate differ"
        );
        serials.insert(cert_info(&dir).0);
    }
    // Some rounds got through: the bundle really changed under the kills.
    assert!(
        serials.len() > 1,
        "no rotation completed in 40 rounds (window {window} ms)"
    );
    ok(&Command::new(bin("hallmark"))
        .args(["rotate", "--bundle", s(&dir), "--force"])
        .env_clear()
        .env("HALLMARK_ENDPOINT", &endpoint)
        .output()
        .unwrap());
    assert!(key_matches(&dir));
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".s1."))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging directories left: {leftovers:?}"
    );
}

async fn issue_bundle(
    ca: &TestCa,
    admin: &mut pb::certificate_authority_client::CertificateAuthorityClient<
        tonic::transport::Channel,
    >,
    device: &str,
    profile: &str,
    dir: &Path,
) {
    let (key_pem, csr) = p256_csr(device);
    let resp = admin
        .issue(pb::IssueRequest {
            device_id: device.into(),
            profile: profile.into(),
            zone: "field".into(),
            csr,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let _ = ca;
    CredentialBundle {
        key_pem,
        cert_pem: hallmark_ca::authority::ca::der_to_pem(&resp.certificate.unwrap().der),
        chain_pem: resp.chain_pem,
        ca_pem: resp.trust_bundle_pem,
    }
    .write(dir)
    .unwrap();
}

/// A renewal with `csr` and the profile's lifetime.
fn renewal(csr: Vec<u8>) -> pb::RenewRequest {
    pb::RenewRequest {
        csr,
        lifetime_seconds: 0,
        key_compromise: false,
    }
}

#[tokio::test]
async fn renewals_that_must_fail_store_nothing() {
    let ca = TestCa::start_with(Config::parse(CONFIG).unwrap()).await;
    let work = tempfile::tempdir().unwrap();
    let mut admin = ca.admin().await;
    let renew = |dir: &Path| {
        let b = CredentialBundle::read(dir).unwrap();
        (b.cert_pem.into_bytes(), b.key_pem.into_bytes())
    };

    // Inside the minimum interval (built-in gateway profile: a tenth of 30 days).
    let gw = work.path().join("gw");
    issue_bundle(&ca, &mut admin, "gw-1", "gateway", &gw).await;
    // Revoked.
    let revoked = work.path().join("revoked");
    issue_bundle(&ca, &mut admin, "s-revoked", "sensor", &revoked).await;
    let serial = cert_info(&revoked).0;
    ca.store()
        .set_certificate_status(hallmark_ca::store::CertificateStatusUpdate {
            serial,
            status: hallmark_ca::store::CertStatus::Revoked,
            reason: Some(1),
            at: 0,
            actor: "test".into(),
        })
        .await
        .unwrap();
    // Expired.
    let expired = work.path().join("expired");
    issue_bundle(&ca, &mut admin, "s-flash", "flash", &expired).await;
    // Same key.
    let same = work.path().join("same");
    issue_bundle(&ca, &mut admin, "s-same", "sensor", &same).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let before = ca.counts().await;
    let csr = || p256_csr("x").1;
    let mut c = ca.client(Some(renew(&gw))).await;
    assert_refused(
        "inside the minimum interval",
        c.renew(renewal(csr())).await,
        Code::ResourceExhausted,
        "allows one new certificate every",
    );
    let mut c = ca.client(Some(renew(&revoked))).await;
    assert_refused(
        "revoked",
        c.renew(renewal(csr())).await,
        Code::Unauthenticated,
        "is revoked",
    );
    let mut c = ca.client(Some(renew(&expired))).await;
    assert_refused(
        "expired",
        c.renew(renewal(csr())).await,
        Code::Unauthenticated,
        "not valid now",
    );
    let key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(same.join("key.pem")).unwrap()).unwrap();
    let same_key_csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let mut c = ca.client(Some(renew(&same))).await;
    assert_refused(
        "same key",
        c.renew(renewal(same_key_csr)).await,
        Code::InvalidArgument,
        "reuses the current key",
    );
    assert_eq!(
        ca.counts().await,
        before,
        "a refused renewal stored something"
    );

    // The same device renews fine with a new key: zone, profile and scope are kept.
    let resp = c.renew(renewal(csr())).await.unwrap().into_inner();
    let cert = resp.certificate.unwrap();
    assert_eq!(
        (
            cert.device_id.as_str(),
            cert.zone.as_str(),
            cert.profile.as_str()
        ),
        ("s-same", "field", "sensor")
    );
    ca.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all_over_a_thousand_bundles_reports_the_broken_ones() {
    let ca = TestCa::start_with(Config::parse(CONFIG).unwrap()).await;
    let root = tempfile::tempdir().unwrap();
    let mut admin = ca.admin().await;
    for i in 0..1000 {
        let dir = root
            .path()
            .join(format!("hall-{}", i / 100))
            .join(format!("sensor-{i:04}"));
        issue_bundle(&ca, &mut admin, &format!("sensor-{i:04}"), "sensor", &dir).await;
    }
    let broken = [
        ("hall-0/sensor-0007", "key.pem", "not a key"),
        (
            "hall-4/sensor-0450",
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
        ),
    ];
    for (dir, file, text) in broken {
        std::fs::write(root.path().join(dir).join(file), text).unwrap();
    }
    std::fs::remove_file(root.path().join("hall-9/sensor-0999/cert.pem")).unwrap();

    let out = tokio::process::Command::new(bin("hallmark"))
        .args(["rotate", "--all", s(root.path()), "--force", "--jobs", "8"])
        .env_clear()
        .env("HALLMARK_ENDPOINT", ca.endpoint())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "failures make the exit code non-zero"
    );
    assert!(
        stdout.contains("1000 bundles: 997 renewed, 0 not due, 3 failed"),
        "{stdout}\n{stderr}"
    );
    for dir in [
        "hall-0/sensor-0007",
        "hall-4/sensor-0450",
        "hall-9/sensor-0999",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("failed:") && l.contains(dir)),
            "{dir} not reported:\n{stderr}"
        );
    }
    let renewed = ca
        .store()
        .list_certificates(
            &hallmark_ca::store::CertFilter {
                profile: Some("sensor".into()),
                ..Default::default()
            },
            0,
            5000,
        )
        .await
        .unwrap();
    assert_eq!(renewed.items.len(), 1997);
    assert!(key_matches(&root.path().join("hall-5/sensor-0555")));
    ca.server.shutdown().await;
}

fn issuer_of(dir: &Path) -> String {
    openssl(&["x509", "-in", s(&dir.join("cert.pem")), "-noout", "-issuer"])
        .trim()
        .to_owned()
}

#[test]
fn issuing_ca_rolls_over_without_downtime() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let ca = CaProcess::start(&data, &[]);
    let before = work.path().join("before");
    ca.issue_bundle("s-before", "sensor", None, &before);

    // The rollover runs beside the serving CA, against the same data dir.
    let rotated = ok(&Command::new(bin("hallmark-ca"))
        .args(["issuer", "rotate", "--data-dir", s(&data)])
        .env_remove("HALLMARK_CA_PASSPHRASE")
        .output()
        .unwrap());
    assert!(rotated.contains("new issuing CA"), "{rotated}");

    // The running CA switches on its own within seconds; the old admin credential keeps working.
    let after = work.path().join("after");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        ca.issue_bundle(&format!("s-after-{n}"), "sensor", None, &after);
        if issuer_of(&after) != issuer_of(&before) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running CA did not switch to the new issuing CA"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Both generations verify against the trust bundle the CA serves now.
    let response = ca.http_get("/trust-bundle.pem");
    let served = work.path().join("served.pem");
    std::fs::write(&served, response.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(served_count(&served), 3, "root + old issuing + new issuing");
    for dir in [&before, &after] {
        let out = openssl(&[
            "verify",
            "-CAfile",
            s(&served),
            "-untrusted",
            s(&dir.join("chain.pem")),
            s(&dir.join("cert.pem")),
        ]);
        assert!(out.trim_end().ends_with(": OK"), "{out}");
    }
    // The retired issuer keeps publishing its CRL beside the new one, each at the CDP of its
    // certificates, each signed by its own issuer.
    for dir in [&before, &after] {
        let path = hallmark_tests::cdp_path(&dir.join("cert.pem"));
        // The new issuer's first CRL follows the rollover within moments.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (head, body) = loop {
            let (head, body) = ca.http_get_raw(&path.replace(".crl", ".pem"), "");
            if head.starts_with("HTTP/1.1 200") || Instant::now() > deadline {
                break (head, body);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        let crl = work.path().join("crl.pem");
        std::fs::write(&crl, body).unwrap();
        hallmark_tests::assert_crl_verifies(&crl, &served);
    }
    let list = ok(&Command::new(bin("hallmark-ca"))
        .args(["issuer", "list", "--data-dir", s(&data)])
        .output()
        .unwrap());
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("issuing") && l.contains("retired"))
            .count(),
        1,
        "{list}"
    );
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("issuing") && l.contains(" active "))
            .count(),
        1,
        "{list}"
    );
    drop(ca);

    // After a restart the new issuing CA is loaded from the data dir.
    let ca = CaProcess::start(&data, &[]);
    let restarted = work.path().join("restarted");
    ca.issue_bundle("s-restart", "sensor", None, &restarted);
    assert_eq!(issuer_of(&restarted), issuer_of(&after));
    assert_bundle_verifies(&restarted);
}

fn served_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .matches("BEGIN CERTIFICATE")
        .count()
}

fn refused(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a refusal, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["cert.pem", "key.pem", "chain.pem", "ca.pem"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// The documented response to an exposed key: `rotate --key-compromise` works inside the
/// minimum interval, revokes the old certificate as keyCompromise at once, and only once per
/// interval; a thief's copy of the old key can no longer renew.
#[test]
fn an_exposed_key_is_replaced_at_once_and_its_copies_cannot_renew() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("ca.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &["--config", s(&cfg)]);
    let endpoint = ca.var("HALLMARK_ENDPOINT").to_owned();
    // Built-in gateway profile: one renewal per 3 days.
    let gw = work.path().join("gw-5");
    ca.issue_bundle("gw-5", "gateway", Some("field"), &gw);
    let (old_serial, _) = cert_info(&gw);
    let stolen = work.path().join("stolen");
    copy_bundle(&gw, &stolen);

    // A plain forced renewal waits for the interval, and says how long in days and hours.
    let err = refused(&as_device(
        &endpoint,
        &["rotate", "--bundle", s(&gw), "--force"],
    ));
    assert!(
        err.contains("RESOURCE_EXHAUSTED")
            && err.contains("every 3 d")
            && (err.contains("retry in 3 d") || err.contains("retry in 2 d 23 h")),
        "{err}"
    );

    let done = ok(&as_device(
        &endpoint,
        &["rotate", "--bundle", s(&gw), "--key-compromise"],
    ));
    assert!(done.contains("renewed"), "{done}");
    let (new_serial, _) = cert_info(&gw);
    assert_ne!(new_serial, old_serial);
    assert_bundle_verifies(&gw);
    let shown = ok(&ca.hallmark(&["cert", "show", &old_serial, "-o", "json"]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["status"], "revoked", "{shown}");
    assert_eq!(shown["revocation_reason"], 1, "keyCompromise: {shown}");
    assert_eq!(shown["superseded_by"], new_serial.as_str());
    // On the CRL at once, as keyCompromise.
    let crls = work.path().join("crls.pem");
    ok(&ca.hallmark(&["crl", "fetch", "--out", s(&crls)]));
    let text = openssl(&["crl", "-in", s(&crls), "-noout", "-text"]);
    let entry = text
        .split("Serial Number: ")
        .find(|e| e.to_ascii_lowercase().starts_with(&old_serial))
        .unwrap_or_else(|| panic!("{old_serial} not on the CRL:\n{text}"));
    assert!(entry.contains("Key Compromise"), "{entry}");

    // The thief's copy of the old key is refused.
    let err = refused(&as_device(
        &endpoint,
        &["rotate", "--bundle", s(&stolen), "--key-compromise"],
    ));
    assert!(err.contains("revoked"), "{err}");
    // Exempt once: a second key-compromise renewal within the interval is refused.
    let err = refused(&as_device(
        &endpoint,
        &["rotate", "--bundle", s(&gw), "--key-compromise"],
    ));
    assert!(
        err.contains("RESOURCE_EXHAUSTED") && err.contains("already replaced a compromised key"),
        "{err}"
    );
    assert_eq!(
        cert_info(&gw).0,
        new_serial,
        "a refused renewal changed the bundle"
    );
}

/// A superseded certificate may renew again only while its successor was never used (the
/// device crashed before saving it); once the successor has authenticated, a copy of the old
/// key is refused.
#[tokio::test]
async fn a_superseded_certificate_cannot_renew_once_its_successor_is_in_use() {
    let ca = TestCa::start_with(Config::parse(CONFIG).unwrap()).await;
    let work = tempfile::tempdir().unwrap();
    let mut admin = ca.admin().await;
    let dir = work.path().join("s-9");
    issue_bundle(&ca, &mut admin, "s-9", "sensor", &dir).await;
    let old = CredentialBundle::read(&dir).unwrap();
    let old_identity = || {
        Some((
            old.cert_pem.clone().into_bytes(),
            old.key_pem.clone().into_bytes(),
        ))
    };

    // The answer to a renewal is lost (never saved, never used): the old one may renew again.
    let mut c = ca.client(old_identity()).await;
    let lost = c
        .renew(renewal(p256_csr("x").1))
        .await
        .unwrap()
        .into_inner();
    let retried = c
        .renew(renewal(p256_csr("x").1))
        .await
        .unwrap()
        .into_inner();
    let retried = retried.certificate.unwrap();
    let lost = lost.certificate.unwrap();
    assert_ne!(lost.serial, retried.serial);
    // The lost one is replaced too: no second line of certificates stays visible as active.
    let lost = admin
        .get_certificate(pb::GetCertificateRequest {
            serial: lost.serial,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lost.status, pb::CertificateStatus::Superseded as i32);
    assert_eq!(lost.superseded_by, retried.serial);

    // The device saves the successor and uses it once.
    let (new_key, csr) = p256_csr("s-9");
    let third = c.renew(renewal(csr)).await.unwrap().into_inner();
    let third_cert = third.certificate.unwrap();
    let mut moved_on = ca
        .client(Some((
            hallmark_ca::authority::ca::der_to_pem(&third_cert.der).into_bytes(),
            new_key.into_bytes(),
        )))
        .await;
    moved_on
        .get_certificate(pb::GetCertificateRequest {
            serial: third_cert.serial.clone(),
        })
        .await
        .unwrap();

    let before = ca.counts().await;
    let mut c = ca.client(old_identity()).await;
    assert_refused(
        "renewal with a superseded certificate whose successor is in use",
        c.renew(renewal(p256_csr("x").1)).await,
        Code::PermissionDenied,
        &format!("renew with {}", third_cert.serial),
    );
    assert_eq!(
        ca.counts().await,
        before,
        "a refused renewal stored something"
    );
    ca.server.shutdown().await;
}

/// `hallmark rotate` uses the renewed credential once, so the copy left behind is refused at once.
#[test]
fn after_rotate_the_old_copy_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("ca.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &["--config", s(&cfg)]);
    let endpoint = ca.var("HALLMARK_ENDPOINT").to_owned();
    let dir = work.path().join("s-10");
    ca.issue_bundle("s-10", "sensor", Some("field"), &dir);
    let copy = work.path().join("copy");
    copy_bundle(&dir, &copy);
    ok(&as_device(
        &endpoint,
        &["rotate", "--bundle", s(&dir), "--force"],
    ));
    let err = refused(&as_device(
        &endpoint,
        &["rotate", "--bundle", s(&copy), "--force"],
    ));
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("has been in use"),
        "{err}"
    );
}
