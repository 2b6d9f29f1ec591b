//! CRLs: signed per issuer, fetched from the HTTP distribution point named in every
//! certificate, judged by OpenSSL; the CRL number grows with every rebuild and across restarts.

use std::path::Path;
use std::time::{Duration, Instant};

use hallmark_tests::{CaProcess, ok, openssl, openssl_output, s};

fn crl_number(pem: &Path) -> u64 {
    let text = openssl(&["crl", "-in", s(pem), "-noout", "-crlnumber"]);
    let hex = text
        .trim()
        .trim_start_matches("crlNumber=")
        .trim_start_matches("0x");
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("crl number in `{text}`"))
}

/// The CDP URL path of a certificate (`/crl/<issuer>.crl`).
fn cdp_path(cert: &Path) -> String {
    let text = openssl(&[
        "x509",
        "-in",
        s(cert),
        "-noout",
        "-ext",
        "crlDistributionPoints",
    ]);
    let uri = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("URI:"))
        .expect("a CDP URI")
        .to_owned();
    let path = uri.split_once("://").unwrap().1;
    format!("/{}", path.split_once('/').unwrap().1)
}

/// Fetches the CRL as PEM into `out` until `done` holds for it (bounded).
fn fetch_until(ca: &CaProcess, path: &str, out: &Path, done: impl Fn(&Path) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, body) = ca.http_get_raw(path, "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/pkix-crl"),
            "{head}"
        );
        let der = out.with_extension("der");
        std::fs::write(&der, body).unwrap();
        openssl(&["crl", "-inform", "DER", "-in", s(&der), "-out", s(out)]);
        if done(out) {
            return;
        }
        assert!(Instant::now() < deadline, "the CRL did not change in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn crls_are_signed_published_and_understood_by_openssl() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let ca = CaProcess::start(&data, &[]);
    let (s1, s2) = (work.path().join("s1"), work.path().join("s2"));
    ok(&ca.hallmark(&[
        "cert",
        "issue",
        "--device",
        "s1",
        "--profile",
        "sensor",
        "--generate-key",
        "--out",
        s(&s1),
    ]));
    ok(&ca.hallmark(&[
        "cert",
        "issue",
        "--device",
        "s2",
        "--profile",
        "sensor",
        "--generate-key",
        "--out",
        s(&s2),
    ]));
    let path = cdp_path(&s1.join("cert.pem"));
    assert!(
        path.starts_with("/crl/issuing-") && path.ends_with(".crl"),
        "{path}"
    );
    let trust = data.join("trust-bundle.pem");

    let first = work.path().join("first.pem");
    fetch_until(&ca, &path, &first, |_| true);
    let n0 = crl_number(&first);

    ok(&ca.hallmark(&["revoke", "--device", "s1", "--reason", "key-compromise"]));
    let revoked = work.path().join("revoked.pem");
    fetch_until(&ca, &path, &revoked, |p| crl_number(p) > n0);
    let n1 = crl_number(&revoked);

    // Signed by the issuer, verified against the trust bundle.
    let v = openssl_output(&[
        "crl",
        "-in",
        s(&revoked),
        "-CAfile",
        s(&trust),
        "-noout",
        "-verify",
    ]);
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("verify OK"),
        "{v:?}"
    );
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
    fetch_until(&ca, &path, &after, |_| true);
    let n2 = crl_number(&after);
    assert!(n2 > n1 && n1 > n0, "CRL numbers {n0}, {n1}, {n2}");
    assert!(
        openssl(&["crl", "-in", s(&after), "-noout", "-text"]).contains("Key Compromise"),
        "the entry survives the restart"
    );
}
