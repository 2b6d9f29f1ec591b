//! The root's CRL: issuing CAs carry its distribution point, the CA publishes it (signed by
//! itself when the root key is in the data dir, by `hallmark-ca` commands given the key when it
//! is kept offline), so `openssl verify -crl_check_all` passes with the root's and the issuing
//! CA's CRLs, and fails once the issuing CA is revoked; the agent and `crl fetch` carry it and
//! refuse one the root did not sign.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hallmark_ca::clock::{Clock, SystemClock};
use hallmark_tests::{
    CaProcess, as_device, assert_crl_verifies, bin, cdp_path, crl_number, http_get_raw, ok,
    openssl, openssl_output, refused, s, wait_until,
};

/// `hallmark-ca` with `args` (no passphrase: the test CAs keep their keys unencrypted).
fn hallmark_ca(args: &[&str]) -> Output {
    Command::new(bin("hallmark-ca"))
        .args(args)
        .env_remove("HALLMARK_CA_PASSPHRASE")
        .output()
        .unwrap()
}

/// `hallmark-ca issuer ARGS --data-dir DATA`.
fn issuer_cmd(data: &Path, args: &[&str]) -> Output {
    let mut all = vec!["issuer"];
    all.extend(args);
    all.extend(["--data-dir", s(data)]);
    hallmark_ca(&all)
}

/// The arguments of one `hallmark broker sync` run writing `crl_file` and `ca_file`.
fn sync_once<'a>(crl_file: &'a Path, ca_file: &'a Path) -> [&'a str; 9] {
    [
        "broker",
        "sync",
        "--once",
        "--crl-file",
        s(crl_file),
        "--ca-file",
        s(ca_file),
        "--reload-command",
        "true",
    ]
}

/// A break-glass admin credential `admin-2` from the active issuing CA, into `out`.
fn admin_create(data: &Path, out: &Path) {
    ok(&hallmark_ca(&[
        "admin",
        "create",
        "--data-dir",
        s(data),
        "--name",
        "admin-2",
        "--out",
        s(out),
    ]));
}

/// What a command said, stdout and stderr.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `openssl verify -crl_check_all` of the bundle in `dir` against the root alone, with `crls`.
fn verify_all(root: &Path, dir: &Path, crls: &[&Path]) -> Output {
    let (chain, cert) = (dir.join("chain.pem"), dir.join("cert.pem"));
    let mut args = vec![
        "verify",
        "-crl_check_all",
        "-CAfile",
        s(root),
        "-untrusted",
        s(&chain),
    ];
    for c in crls {
        args.extend(["-CRLfile", s(c)]);
    }
    args.push(s(&cert));
    openssl_output(&args)
}

fn assert_verifies(root: &Path, dir: &Path, crls: &[&Path]) {
    let out = verify_all(root, dir, crls);
    assert!(out.status.success(), "{}: {}", dir.display(), said(&out));
}

fn assert_revoked(root: &Path, dir: &Path, crls: &[&Path]) {
    let out = verify_all(root, dir, crls);
    assert!(
        !out.status.success() && said(&out).contains("certificate revoked"),
        "{}: {}",
        dir.display(),
        said(&out)
    );
}

/// The issuer id of the active issuing CA and the retired ones, from `issuer list`.
fn issuers(data: &Path) -> String {
    ok(&issuer_cmd(data, &["list"]))
}

/// The STATUS column of issuer `id` in `issuer list`.
fn status_of(data: &Path, id: &str) -> String {
    let list = issuers(data);
    list.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&id))
        .and_then(|cols| cols.get(2).map(|c| c.to_string()))
        .unwrap_or_else(|| panic!("no issuer {id}:\n{list}"))
}

fn issuer_with_status(data: &Path, status: &str) -> String {
    issuers(data)
        .lines()
        .find(|l| l.contains(" issuing ") && l.contains(&format!(" {status} ")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {status} issuing CA:\n{}", issuers(data)))
        .to_owned()
}

fn issuer_of(dir: &Path) -> String {
    openssl(&["x509", "-in", s(&dir.join("cert.pem")), "-noout", "-issuer"])
}

/// Issues bundles until the running CA signs with another issuing CA than `before`'s (it
/// follows a rollover within seconds); returns the bundle.
fn issue_after_rollover(ca: &CaProcess, work: &Path, before: &Path) -> PathBuf {
    let mut n = 0;
    let mut dir = PathBuf::new();
    wait_until(
        "the running CA signs with the new issuer",
        Duration::from_secs(20),
        || {
            n += 1;
            dir = work.join(format!("d-new-{n}"));
            ca.issue_bundle(&format!("d-new-{n}"), "sensor", None, &dir);
            issuer_of(&dir) != issuer_of(before)
        },
    );
    dir
}

/// Fetches the root's CRL (the CDP of the issuing CA) into `out` until its number passes
/// `above`; returns the number.
fn root_crl_above(ca: &CaProcess, path: &str, out: &Path, above: u64) -> u64 {
    ca.fetch_crl_until(path, out, |p| crl_number(p) > above);
    crl_number(out)
}

#[test]
fn crl_check_all_passes_with_the_roots_crl_and_fails_once_the_issuer_is_revoked() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = w.join("data");
    let ca = CaProcess::start(&data, &[]);
    let root = data.join("ca/root.crt");
    let old = w.join("d-old");
    ca.issue_bundle("d-old", "sensor", None, &old);

    // The issuing CA names the root's CRL, which the CA serves like the others.
    let root_path = cdp_path(&data.join("ca/issuing.crt"));
    assert!(
        root_path.starts_with("/crl/root-") && root_path.ends_with(".crl"),
        "{root_path}"
    );
    let root_crl = w.join("root-1.pem");
    let head = ca.fetch_crl(&root_path, &root_crl).unwrap();
    let root_id = root_path
        .trim_start_matches("/crl/")
        .trim_end_matches(".crl");
    assert!(head.contains(&format!("etag: \"{root_id}-")), "{head}");
    let (head, body) = ca.http_get_raw(&root_path.replace(".crl", ".pem"), "");
    assert!(
        head.starts_with("HTTP/1.1 200")
            && String::from_utf8_lossy(&body).contains("BEGIN X509 CRL")
    );
    let text = openssl(&["crl", "-in", s(&root_crl), "-noout", "-text"]);
    assert!(
        text.contains("Authority Key Identifier") && text.contains("No Revoked Certificates"),
        "{text}"
    );
    assert!(!text.contains("Issuing Distribution Point"), "{text}");
    assert_crl_verifies(&root_crl, &root);
    let n1 = crl_number(&root_crl);

    // With the root's and the issuing CA's CRLs the whole chain verifies; without the root's
    // it does not.
    let old_crl = w.join("issuing-old.pem");
    ca.fetch_crl(&cdp_path(&old.join("cert.pem")), &old_crl)
        .unwrap();
    assert_verifies(&root, &old, &[&root_crl, &old_crl]);
    let without = verify_all(&root, &old, &[&old_crl]);
    assert!(
        !without.status.success() && said(&without).contains("unable to get certificate CRL"),
        "{}",
        said(&without)
    );

    // The broker agent and `crl fetch` carry the root's CRL: the files they write verify the
    // whole chain.
    let agent = w.join("agent");
    ca.issue_bundle("agent-1", "broker-agent", None, &agent);
    let (crl_file, ca_file) = (w.join("broker-crl.pem"), w.join("broker-ca.pem"));
    ok(&ca.hallmark_as(&agent, &sync_once(&crl_file, &ca_file)));
    let fetched = w.join("fetched.pem");
    ok(&ca.hallmark(&["crl", "fetch", "--out", s(&fetched)]));
    for file in [&crl_file, &fetched] {
        let text = std::fs::read_to_string(file).unwrap();
        assert_eq!(text.matches("BEGIN X509 CRL").count(), 2, "{text}");
        let out = openssl_output(&[
            "verify",
            "-crl_check_all",
            "-CAfile",
            s(&ca_file),
            "-CRLfile",
            s(file),
            "-untrusted",
            s(&old.join("chain.pem")),
            s(&old.join("cert.pem")),
        ]);
        assert!(out.status.success(), "{}: {}", file.display(), said(&out));
    }

    // Roll over; the old issuing CA is retired, still trusted.
    ok(&issuer_cmd(&data, &["rotate"]));
    let new = issue_after_rollover(&ca, w, &old);
    let (old_id, new_id) = (
        issuer_with_status(&data, "retired"),
        issuer_with_status(&data, "active"),
    );
    let n2 = root_crl_above(&ca, &root_path, &root_crl, n1);

    // Refused, changing nothing: the active issuing CA, and the old one while every valid admin
    // credential comes from it.
    let err = refused(&issuer_cmd(&data, &["revoke", &new_id]));
    assert!(
        err.contains("the active one") && err.contains("issuer rotate"),
        "{err}"
    );
    let err = refused(&issuer_cmd(&data, &["revoke", &old_id]));
    assert!(
        err.contains("last valid admin credential") && err.contains("admin create"),
        "{err}"
    );
    let err = refused(&issuer_cmd(&data, &["revoke", "feedface"]));
    assert!(err.contains("no CA has id or serial"), "{err}");
    assert_eq!(status_of(&data, &old_id), "retired");
    ca.fetch_crl(&root_path, &root_crl).unwrap();
    assert_eq!(
        crl_number(&root_crl),
        n2,
        "a refused revocation signed nothing"
    );

    // An admin credential of the new issuer first, then the old issuer is revoked, named by
    // its serial.
    let admin2 = w.join("admin2");
    admin_create(&data, &admin2);
    let old_ca = data.join(format!("ca/{old_id}.crt"));
    let old_ca_serial = openssl(&["x509", "-in", s(&old_ca), "-noout", "-serial"]);
    let old_ca_serial = old_ca_serial
        .trim()
        .trim_start_matches("serial=")
        .to_owned();
    let done = ok(&issuer_cmd(
        &data,
        &["revoke", &old_ca_serial, "--reason", "ca-compromise"],
    ));
    assert!(
        done.contains(&format!("issuing CA {old_id}")) && done.contains("is revoked"),
        "{done}"
    );
    assert!(
        done.contains("restart hallmark-ca"),
        "the API certificate came from it: {done}"
    );
    assert_eq!(status_of(&data, &old_id), "revoked");

    // The running CA serves the new root CRL within seconds: it lists the old issuing CA.
    let n3 = root_crl_above(&ca, &root_path, &root_crl, n2);
    let text = openssl(&["crl", "-in", s(&root_crl), "-noout", "-text"]);
    assert!(
        text.contains(&old_ca_serial) && text.contains("CA Compromise"),
        "{text}"
    );

    // A device of the old issuer fails the whole-chain check (with the last CRL its issuer
    // published); one of the new passes.
    assert_revoked(&root, &old, &[&root_crl, &old_crl]);
    let new_crl = w.join("issuing-new.pem");
    ca.fetch_crl(&cdp_path(&new.join("cert.pem")), &new_crl)
        .unwrap();
    assert_verifies(&root, &new, &[&root_crl, &new_crl]);

    // The revoked issuer signs nothing more: its CRL is gone, it left the trust bundle.
    wait_until(
        "the old issuer's CRL withdrawn",
        Duration::from_secs(10),
        || {
            ca.fetch_crl(&cdp_path(&old.join("cert.pem")), &w.join("gone.pem"))
                .is_err()
        },
    );
    let bundle = ca.http_get("/trust-bundle.pem");
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        2,
        "root + new issuing CA"
    );
    let old_ca_pem = std::fs::read_to_string(&old_ca).unwrap();
    assert!(
        !bundle.contains(old_ca_pem.trim()),
        "the revoked issuer is in the trust bundle"
    );

    // Attacker side: the certificates it signed are refused by the CA, also to renew.
    let err = refused(&as_device(
        ca.var("HALLMARK_ENDPOINT"),
        &["rotate", "--bundle", s(&old), "--force"],
    ));
    assert!(err.contains("which is revoked"), "{err}");
    let err = refused(&ca.hallmark(&["cert", "list"]));
    assert!(
        err.contains("which is revoked"),
        "the old admin credential: {err}"
    );
    ok(&ca.hallmark_as(&admin2, &["cert", "list"]));
    let err = refused(&issuer_cmd(&data, &["revoke", &old_id]));
    assert!(err.contains("revoked already"), "{err}");

    // At restart the CA's API certificate comes from the active issuing CA, and the root CRL's
    // number stays where it was.
    drop(ca);
    let ca = CaProcess::start(&data, &[]);
    let server_chain = data.join("server/chain.pem");
    let server_issuer = openssl(&["x509", "-in", s(&server_chain), "-noout", "-issuer"]);
    assert_eq!(server_issuer, issuer_of(&new));
    ca.fetch_crl(&root_path, &root_crl).unwrap();
    assert_eq!(crl_number(&root_crl), n3);
    ok(&ca.hallmark_as(&admin2, &["cert", "list"]));
}

#[test]
fn a_root_kept_offline_signs_its_crl_only_with_its_key() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = w.join("data");
    let key = w.join("offline-root.key");
    ok(&hallmark_ca(&[
        "init",
        "--data-dir",
        s(&data),
        "--root-key-out",
        s(&key),
    ]));
    assert!(!data.join("ca/root.key").exists());
    let root = data.join("ca/root.crt");
    let ca = CaProcess::start(&data, &[]);
    let old = w.join("d-old");
    ca.issue_bundle("d-old", "sensor", None, &old);

    // `init` signed the first root CRL before the key left; the CA serves it.
    let root_path = cdp_path(&data.join("ca/issuing.crt"));
    let root_crl = w.join("root.pem");
    ca.fetch_crl(&root_path, &root_crl).unwrap();
    let n1 = crl_number(&root_crl);
    let old_crl = w.join("issuing-old.pem");
    ca.fetch_crl(&cdp_path(&old.join("cert.pem")), &old_crl)
        .unwrap();
    assert_verifies(&root, &old, &[&root_crl, &old_crl]);

    // A rollover with the key renews the root CRL too.
    let err = refused(&issuer_cmd(&data, &["rotate"]));
    assert!(err.contains("--root-key"), "{err}");
    ok(&issuer_cmd(&data, &["rotate", "--root-key", s(&key)]));
    let n2 = root_crl_above(&ca, &root_path, &root_crl, n1);
    let new = issue_after_rollover(&ca, w, &old);
    let old_id = issuer_with_status(&data, "retired");
    admin_create(&data, &w.join("admin2"));

    // Without the key, and with another key, the revocation is refused and nothing changes.
    let err = refused(&issuer_cmd(&data, &["revoke", &old_id]));
    assert!(
        err.contains("needs the root key") && err.contains("--root-key"),
        "{err}"
    );
    let wrong = w.join("wrong.key");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        s(&wrong),
    ]);
    let err = refused(&issuer_cmd(
        &data,
        &["revoke", &old_id, "--root-key", s(&wrong)],
    ));
    assert!(err.contains("is not the key of root CA"), "{err}");
    let err = refused(&issuer_cmd(&data, &["root-crl", "--root-key", s(&wrong)]));
    assert!(err.contains("is not the key of root CA"), "{err}");
    assert_eq!(status_of(&data, &old_id), "retired");
    std::thread::sleep(Duration::from_millis(2500));
    ca.fetch_crl(&root_path, &root_crl).unwrap();
    assert_eq!(
        crl_number(&root_crl),
        n2,
        "a refused revocation signed nothing"
    );

    // With the key: revoked, the running CA serves the new root CRL.
    ok(&issuer_cmd(
        &data,
        &["revoke", &old_id, "--root-key", s(&key)],
    ));
    let n3 = root_crl_above(&ca, &root_path, &root_crl, n2);
    assert_revoked(&root, &old, &[&root_crl, &old_crl]);
    let new_crl = w.join("issuing-new.pem");
    ca.fetch_crl(&cdp_path(&new.join("cert.pem")), &new_crl)
        .unwrap();
    assert_verifies(&root, &new, &[&root_crl, &new_crl]);

    // The CA cannot re-sign without the key: across restarts it serves the stored CRL, and
    // the numbers only grow, also for one signed while it was down.
    drop(ca);
    let ca = CaProcess::start(&data, &[]);
    ca.fetch_crl(&root_path, &root_crl).unwrap();
    assert_eq!(crl_number(&root_crl), n3);
    drop(ca);
    let err = refused(&issuer_cmd(&data, &["root-crl"]));
    assert!(err.contains("--root-key"), "{err}");
    let signed = ok(&issuer_cmd(&data, &["root-crl", "--root-key", s(&key)]));
    assert!(signed.contains("1 entries"), "{signed}");
    let ca = CaProcess::start(&data, &[]);
    ca.fetch_crl(&root_path, &root_crl).unwrap();
    let n4 = crl_number(&root_crl);
    assert!(
        n4 > n3 && n3 > n2 && n2 > n1,
        "root CRL numbers {n1}, {n2}, {n3}, {n4}"
    );
    assert_revoked(&root, &old, &[&root_crl, &old_crl]);
}

/// A clock that can be moved forward.
#[derive(Debug, Default)]
struct MovedClock(AtomicI64);

impl Clock for MovedClock {
    fn now(&self) -> i64 {
        SystemClock.now() + self.0.load(Ordering::SeqCst)
    }
}

/// With the root key in the data dir the CA re-signs the root's CRL at start once half of it
/// is used, with a higher number; without the key it keeps serving the stored one until it
/// expires and then serves none.
// Multi-threaded: the test's blocking HTTP GET must not stall the CA it asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_re_signs_the_roots_crl_when_half_used_and_serves_none_past_expiry() {
    use hallmark_ca::config::Config;
    use hallmark_ca::server::{self, ServeOptions};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = Arc::new(MovedClock::default());
    let start = async |clock: Arc<MovedClock>| {
        let config = Config {
            grpc_listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        server::start(ServeOptions {
            data_dir: data.clone(),
            config,
            passphrase: None,
            clock,
        })
        .await
        .expect("the CA starts")
    };
    let day = 86_400;
    let ca = start(clock.clone()).await;
    let issuers = ca.store().issuers().await.unwrap();
    let root_id = issuers[0].id.clone();
    let first = ca.store().root_crl(&root_id).await.unwrap().unwrap();
    assert_eq!(
        first.next_update - first.signed_at,
        90 * day,
        "the default validity"
    );

    // A third used: still fresh.
    clock.0.store(30 * day, Ordering::SeqCst);
    ca.shutdown().await;
    let ca = start(clock.clone()).await;
    let stored = ca.store().root_crl(&root_id).await.unwrap().unwrap();
    assert_eq!(stored.number, first.number);

    // Over half used: signed again at start.
    clock.0.store(46 * day, Ordering::SeqCst);
    ca.shutdown().await;
    let starting = clock.now();
    let ca = start(clock.clone()).await;
    let second = ca.store().root_crl(&root_id).await.unwrap().unwrap();
    assert!(
        second.number > first.number,
        "{} then {}",
        first.number,
        second.number
    );
    // Signed during that start (the moved clock still ticks with real time: a second may
    // pass while the CA starts).
    assert!(
        (starting..=clock.now()).contains(&second.signed_at),
        "signed at {}, the start ran {starting}..{}",
        second.signed_at,
        clock.now()
    );

    // The key goes offline: past half nothing is signed and the stored CRL is still served;
    // past its end it is no longer served.
    std::fs::remove_file(data.join("ca/root.key")).unwrap();
    clock.0.store((46 + 50) * day, Ordering::SeqCst);
    ca.shutdown().await;
    let ca = start(clock.clone()).await;
    let now = ca.store().root_crl(&root_id).await.unwrap().unwrap();
    assert_eq!(now.number, second.number, "signed without the key");
    let path = format!("/crl/{root_id}.crl");
    assert_eq!(http_status(ca.http_addr, &path), 200);
    clock.0.store((46 + 91) * day, Ordering::SeqCst);
    ca.shutdown().await;
    let ca = start(clock.clone()).await;
    let now = ca.store().root_crl(&root_id).await.unwrap().unwrap();
    assert_eq!(now.number, second.number, "signed without the key");
    assert_eq!(
        http_status(ca.http_addr, &path),
        404,
        "an expired root CRL is served"
    );
    ca.shutdown().await;
}

/// The status code of a plain HTTP GET of `path` at `addr`.
fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    let (head, _) = http_get_raw(&addr.to_string(), path, "");
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Attacker side: a CRL with the root's name and key identifier, signed by another key, sent
/// by a replica that holds the CA's server identity, is refused by `crl fetch` and by the
/// broker agent; the genuine root CRL stays in their files.
#[test]
fn a_root_crl_signed_by_another_key_is_refused_by_crl_fetch_and_the_agent() {
    use hallmark_ca::authority::IssuingCa;
    use hallmark_ca::authority::crl::{CrlRequest, build_crl};
    use hallmark_tests::fault::{Answer, FaultyReplica};

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = w.join("data");
    let ca = CaProcess::start(&data, &[]);
    let agent = w.join("agent");
    ca.issue_bundle("agent-1", "broker-agent", None, &agent);
    let (crl_file, ca_file, fetched) = (w.join("crl.pem"), w.join("ca.pem"), w.join("fetched.pem"));
    let sync = |endpoint: &str| {
        Command::new(bin("hallmark"))
            .args(sync_once(&crl_file, &ca_file))
            .env_clear()
            .env("HALLMARK_ENDPOINT", endpoint)
            .env("HALLMARK_CA", agent.join("ca.pem"))
            .env("HALLMARK_CERT", agent.join("cert.pem"))
            .env("HALLMARK_KEY", agent.join("key.pem"))
            .output()
            .unwrap()
    };
    let fetch = |endpoint: &str| {
        Command::new(bin("hallmark"))
            .args(["crl", "fetch", "--out", s(&fetched)])
            .envs(ca.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HALLMARK_ENDPOINT", endpoint)
            .output()
            .unwrap()
    };
    let real_endpoint = ca.var("HALLMARK_ENDPOINT").to_owned();
    ok(&sync(&real_endpoint));
    ok(&fetch(&real_endpoint));
    let good = (
        std::fs::read(&crl_file).unwrap(),
        std::fs::read(&fetched).unwrap(),
    );

    // The forgery: the root's certificate (name, key identifier) with another key, a higher
    // number, listing the active issuing CA.
    let root_pem = std::fs::read(data.join("ca/root.crt")).unwrap();
    let (_, root) = x509_parser::pem::parse_x509_pem(&root_pem).unwrap();
    let root_der = root.contents.clone();
    let issuing_pem = std::fs::read(data.join("ca/issuing.crt")).unwrap();
    let (_, issuing) = x509_parser::pem::parse_x509_pem(&issuing_pem).unwrap();
    let issuing_serial = hallmark_ca::authority::ca::serial_hex_of(&issuing.contents).unwrap();
    let now = SystemClock.now();
    let lookalike = IssuingCa::new(
        "root-x".into(),
        root_der,
        hallmark_ca::keys::CaKey::generate_p256().unwrap(),
    )
    .unwrap();
    let forged = build_crl(
        &lookalike,
        &CrlRequest {
            number: 1_000_000,
            now,
            validity: Duration::from_secs(3600),
            distribution_point: None,
            entries: &[hallmark_ca::authority::crl::RevokedEntry {
                serial: issuing_serial,
                revoked_at: now,
                reason: Some(2),
            }],
        },
    )
    .unwrap();

    let replica = FaultyReplica::start(&data);
    let real = replica.real_answer(&real_endpoint, &data);
    let root_subject = root.parse_x509().unwrap().subject().to_string();
    let mut crls: Vec<Vec<u8>> = real
        .crls
        .iter()
        .filter(|der| {
            use x509_parser::prelude::FromDer;
            let (_, crl) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(der).unwrap();
            crl.issuer().to_string() != root_subject
        })
        .cloned()
        .collect();
    assert_eq!(crls.len(), 1, "the issuing CA's CRL");
    crls.push(forged);
    replica.set(Answer {
        bundle: real.bundle,
        crls,
    });
    for (what, out) in [
        ("broker sync", sync(&replica.endpoint)),
        ("crl fetch", fetch(&replica.endpoint)),
    ] {
        let text = said(&out);
        assert!(
            text.contains("refused a CRL") && text.contains("bad signature"),
            "{what}: {text}"
        );
    }
    assert!(
        std::fs::read(&crl_file).unwrap() == good.0 && std::fs::read(&fetched).unwrap() == good.1,
        "a forged root CRL reached a file"
    );
    // The files still verify the whole chain of the active issuer's certificates.
    let device = w.join("d-1");
    ca.issue_bundle("d-1", "sensor", None, &device);
    let out = openssl_output(&[
        "verify",
        "-crl_check_all",
        "-CAfile",
        s(&ca_file),
        "-CRLfile",
        s(&crl_file),
        "-untrusted",
        s(&device.join("chain.pem")),
        s(&device.join("cert.pem")),
    ]);
    assert!(out.status.success(), "{}", said(&out));
}
