//! CRLs: signed per issuer, fetched from the HTTP distribution point named in every
//! certificate, judged by OpenSSL; the CRL number grows with every rebuild and across restarts.

use std::path::Path;
use std::time::{Duration, Instant};

use hallmark_tests::{CaProcess, cdp_path, crl_number, ok, openssl, openssl_output, s};

#[test]
fn crls_are_signed_published_and_understood_by_openssl() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let ca = CaProcess::start(&data, &[]);
    let (s1, s2) = (work.path().join("s1"), work.path().join("s2"));
    ca.issue_bundle("s1", "sensor", None, &s1);
    ca.issue_bundle("s2", "sensor", None, &s2);
    let path = cdp_path(&s1.join("cert.pem"));
    assert!(
        path.starts_with("/crl/issuing-") && path.ends_with(".crl"),
        "{path}"
    );
    let trust = data.join("trust-bundle.pem");

    let first = work.path().join("first.pem");
    ca.fetch_crl_until(&path, &first, |_| true);
    let n0 = crl_number(&first);

    ok(&ca.hallmark(&["revoke", "--device", "s1", "--reason", "key-compromise"]));
    let revoked = work.path().join("revoked.pem");
    ca.fetch_crl_until(&path, &revoked, |p| crl_number(p) > n0);
    let n1 = crl_number(&revoked);

    // Signed by the issuer, verified against the trust bundle.
    hallmark_tests::assert_crl_verifies(&revoked, &trust);
    // The IDP of the CRL is the CDP of the certificates.
    let text = openssl(&["crl", "-in", s(&revoked), "-noout", "-text"]);
    assert!(
        text.contains("Issuing Distribution Point: critical"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}{path}",
            ca.http.replace("127.0.0.1", "http://127.0.0.1")
        )),
        "{text}"
    );
    assert!(text.contains("Key Compromise"), "{text}");

    // OpenSSL refuses the revoked leaf and accepts the other.
    let check = |dir: &Path| {
        openssl_output(&[
            "verify",
            "-crl_check",
            "-CAfile",
            s(&trust),
            "-CRLfile",
            s(&revoked),
            "-untrusted",
            s(&dir.join("chain.pem")),
            s(&dir.join("cert.pem")),
        ])
    };
    let bad = check(&s1);
    assert!(!bad.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(said.contains("certificate revoked"), "{said}");
    assert!(check(&s2).status.success(), "{:?}", check(&s2));

    // Conditional GET: same CRL, 304.
    let etag = {
        let (head, _) = ca.http_get_raw(&path, "");
        head.lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .unwrap()
            .to_owned()
    };
    let (head, _) = ca.http_get_raw(&path, &format!("If-None-Match: {etag}\r\n"));
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    let (head, body) = ca.http_get_raw(&path.replace(".crl", ".pem"), "");
    assert!(
        head.starts_with("HTTP/1.1 200")
            && String::from_utf8_lossy(&body).contains("BEGIN X509 CRL")
    );

    // The number keeps growing across a restart of the CA.
    drop(ca);
    let ca = CaProcess::start(&data, &[]);
    let after = work.path().join("after.pem");
    ca.fetch_crl_until(&path, &after, |_| true);
    let n2 = crl_number(&after);
    assert!(n2 > n1 && n1 > n0, "CRL numbers {n0}, {n1}, {n2}");
    assert!(
        openssl(&["crl", "-in", s(&after), "-noout", "-text"]).contains("Key Compromise"),
        "the entry survives the restart"
    );
}

/// A header's value in a response head (case-insensitive name).
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Item 8 of issue 10: the CRL changes within ~50 ms of a revocation, so a cache may keep it at
/// most a minute, then revalidates with its ETag: 304 while unchanged, the new CRL after.
#[test]
fn crl_cache_lifetime_is_short_and_revalidated_by_etag() {
    let work = tempfile::tempdir().unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &[]);
    let s1 = work.path().join("s1");
    ca.issue_bundle("s1", "sensor", None, &s1);
    let path = cdp_path(&s1.join("cert.pem"));

    let (head, body) = ca.http_get_raw(&path, "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let cache = header(&head, "cache-control").expect("Cache-Control");
    let etag = header(&head, "etag").expect("ETag");
    let max_age: u64 = cache
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("max-age in `{cache}`"));
    println!("GET {path}: Cache-Control: {cache}; ETag: {etag}");
    assert!(
        (1..=60).contains(&max_age),
        "a CRL that changes within 50 ms of a revocation is cached for {max_age} s"
    );

    // Unchanged: 304 without a body, with the same validator and lifetime.
    for if_none_match in [etag.clone(), format!("\"other\", W/{etag}")] {
        let (head, body) = ca.http_get_raw(&path, &format!("If-None-Match: {if_none_match}\r\n"));
        assert!(head.starts_with("HTTP/1.1 304"), "{if_none_match}: {head}");
        assert!(body.is_empty(), "a 304 has no body");
        assert_eq!(header(&head, "etag").as_deref(), Some(etag.as_str()));
        assert!(header(&head, "cache-control").is_some(), "{head}");
    }

    // Revoked: the same validator now gets the new CRL, with a new ETag.
    let revoked_at = Instant::now();
    ok(&ca.hallmark(&["revoke", "--device", "s1", "--reason", "key-compromise"]));
    let (new_head, new_body) = loop {
        let (head, body) = ca.http_get_raw(&path, &format!("If-None-Match: {etag}\r\n"));
        if head.starts_with("HTTP/1.1 200") {
            break (head, body);
        }
        assert!(head.starts_with("HTTP/1.1 304"), "{head}");
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "the CRL did not change within 10 s of the revocation"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let new_etag = header(&new_head, "etag").expect("ETag");
    println!(
        "revalidation after the revocation: 200 with ETag {new_etag} after {:?}",
        revoked_at.elapsed()
    );
    assert_ne!(new_etag, etag);
    assert_ne!(new_body, body);
    let der = work.path().join("new.der");
    std::fs::write(&der, &new_body).unwrap();
    assert!(
        openssl(&["crl", "-inform", "DER", "-in", s(&der), "-noout", "-text"])
            .contains("Key Compromise")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_every_new_crl_and_lose_the_stream_when_revoked() {
    use hallmark_proto::v1 as pb;
    use hallmark_proto::v1::revocation_client::RevocationClient;
    use pb::revoke_request::Selector;

    let ca = hallmark_tests::TestCa::start().await;
    let mut admin = ca.admin().await;
    let issue = |device: &str, profile: &str| pb::IssueRequest {
        device_id: device.into(),
        profile: profile.into(),
        ..Default::default()
    };
    let (agent_key, csr) = hallmark_tests::p256_csr("broker-a");
    let agent = admin
        .issue(pb::IssueRequest {
            csr,
            ..issue("broker-a", "broker-agent")
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let agent_id = (
        hallmark_ca::authority::ca::der_to_pem(&agent.der).into_bytes(),
        agent_key.into_bytes(),
    );
    let (_, csr) = hallmark_tests::p256_csr("s-9");
    admin
        .issue(pb::IssueRequest {
            csr,
            ..issue("s-9", "sensor")
        })
        .await
        .unwrap();

    let mut watcher = RevocationClient::new(ca.channel(Some(agent_id)).await);
    let mut stream = watcher
        .watch_crl(pb::WatchCrlRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream
        .message()
        .await
        .unwrap()
        .expect("the current CRLs on connect");
    // The issuing CA's CRL and the root's.
    assert_eq!(first.crls.len(), 2, "{first:?}");
    let issuing = |set: &pb::CrlSet| {
        set.crls
            .iter()
            .find(|c| c.issuer_id.starts_with("issuing-"))
            .cloned()
            .expect("the issuing CA's CRL")
    };
    let n0 = issuing(&first).number;

    let mut revocation = RevocationClient::new(ca.channel(Some(ca.admin_identity())).await);
    let started = Instant::now();
    let req = |sel| pb::RevokeRequest {
        selector: Some(sel),
        reason: 1,
        dry_run: false,
        ..Default::default()
    };
    revocation
        .revoke(req(Selector::DeviceId("s-9".into())))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = stream.message().await.unwrap().unwrap();
            if !m.heartbeat {
                return m;
            }
        }
    })
    .await
    .expect("a new CRL in time");
    println!("revocation to pushed CRL: {:?}", started.elapsed());
    assert!(issuing(&next).number > n0);
    assert_eq!(issuing(&next).entries, 1);

    // While nothing changes the CA sends heartbeats (no CRLs), so a dead stream can be told
    // from a quiet CA.
    let quiet = Instant::now();
    let beat = tokio::time::timeout(
        hallmark_ca::api::revocation::WATCH_HEARTBEAT + Duration::from_secs(2),
        stream.message(),
    )
    .await
    .expect("a heartbeat in time")
    .unwrap()
    .unwrap();
    println!("heartbeat after {:?} of quiet", quiet.elapsed());
    assert!(beat.heartbeat && beat.crls.is_empty(), "{beat:?}");

    // The watcher's own credential revoked: the next message is the refusal, then the end.
    revocation
        .revoke(req(Selector::Serial(agent.serial.clone())))
        .await
        .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an answer in time")
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    ca.server.shutdown().await;
}

#[test]
fn the_cli_shows_and_fetches_the_crls() {
    let work = tempfile::tempdir().unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &[]);
    ca.issue_bundle("s1", "sensor", None, &work.path().join("s1"));
    ok(&ca.hallmark(&[
        "revoke",
        "--device",
        "s1",
        "--reason",
        "cessation-of-operation",
    ]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let shown: serde_json::Value =
            serde_json::from_str(&ok(&ca.hallmark(&["crl", "show", "-o", "json"]))).unwrap();
        if shown[0]["entries"].as_array().unwrap().len() == 1 || Instant::now() > deadline {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        shown[0]["entries"][0]["reason"], "CessationOfOperation",
        "{shown}"
    );
    let out = work.path().join("crls.pem");
    ok(&ca.hallmark(&["crl", "fetch", "--out", s(&out)]));
    let text = openssl(&["crl", "-in", s(&out), "-noout", "-text"]);
    assert!(text.contains("Cessation Of Operation"), "{text}");
}

/// Whether OpenSSL verifies the bundle in `dir` against the trust bundle with the CRL `crl`.
fn passes_crl_check(trust: &Path, crl: &Path, dir: &Path) -> bool {
    let out = openssl_output(&[
        "verify",
        "-crl_check",
        "-CAfile",
        s(trust),
        "-CRLfile",
        s(crl),
        "-untrusted",
        s(&dir.join("chain.pem")),
        s(&dir.join("cert.pem")),
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || said.contains("certificate revoked"),
        "{said}"
    );
    out.status.success()
}

#[test]
fn device_suspend_resume_and_decommission_follow_in_the_crl() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let ca = CaProcess::start(&data, &[]);
    let (s1, s2) = (work.path().join("s1"), work.path().join("s2"));
    ca.issue_bundle("s1", "sensor", None, &s1);
    ca.issue_bundle("s2", "sensor", None, &s2);
    let path = cdp_path(&s1.join("cert.pem"));
    let trust = data.join("trust-bundle.pem");
    let crl = work.path().join("crl.pem");
    ca.fetch_crl_until(&path, &crl, |_| true);
    assert!(passes_crl_check(&trust, &crl, &s1));
    let mut n = crl_number(&crl);
    // Fetches the CRL until it is newer than the last one seen.
    let mut next = || {
        ca.fetch_crl_until(&path, &crl, |p| crl_number(p) > n);
        n = crl_number(&crl);
        openssl(&["crl", "-in", s(&crl), "-noout", "-text"])
    };

    // Suspending the device in the registry puts its certificate on hold.
    let said = ok(&ca.hallmark(&["device", "suspend", "s1"]));
    assert!(said.contains("device s1 is suspended"), "{said}");
    let text = next();
    assert!(text.contains("Certificate Hold"), "{text}");
    assert!(!passes_crl_check(&trust, &crl, &s1));
    assert!(passes_crl_check(&trust, &crl, &s2));

    // An operator's own hold on s2 outlasts a suspension and resumption of the device.
    ok(&ca.hallmark(&["suspend", "--device", "s2"]));
    next();
    ok(&ca.hallmark(&["device", "suspend", "s2"]));
    ok(&ca.hallmark(&["device", "resume", "s2"]));
    // Resuming the device releases only the holds its suspension made.
    let said = ok(&ca.hallmark(&["device", "resume", "s1"]));
    assert!(said.contains("device s1 is active"), "{said}");
    next();
    assert!(passes_crl_check(&trust, &crl, &s1), "s1 is released");
    assert!(
        !passes_crl_check(&trust, &crl, &s2),
        "the operator's hold stays"
    );
    // While a device is suspended, `hallmark resume` does not release what its suspension held.
    ok(&ca.hallmark(&["device", "suspend", "s1"]));
    next();
    let kept = ok(&ca.hallmark(&["resume", "--device", "s1"]));
    assert!(
        kept.contains("resumed 0 certificates") && kept.contains("hallmark device resume"),
        "{kept}"
    );
    ok(&ca.hallmark(&["resume", "--device", "s2"]));
    next();
    assert!(passes_crl_check(&trust, &crl, &s2));
    assert!(!passes_crl_check(&trust, &crl, &s1));

    // Decommissioning revokes for good, held certificates too: cessationOfOperation.
    ok(&ca.hallmark(&["device", "decommission", "s1"]));
    let text = next();
    assert!(text.contains("Cessation Of Operation"), "{text}");
    assert!(!text.contains("Certificate Hold"), "{text}");
    assert!(!passes_crl_check(&trust, &crl, &s1));
    let listed = ok(&ca.hallmark(&["cert", "list", "--device", "s1", "-o", "json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["status"], "revoked", "{listed}");
    let none = ok(&ca.hallmark(&["resume", "--device", "s1"]));
    assert!(none.contains("resumed 0 certificates"), "{none}");
}
