//! The README's path with the real binaries: `hallmark-ca serve` on an empty data dir, the
//! printed admin credential, `hallmark cert issue`, and OpenSSL as the judge.

use std::path::Path;
use std::process::Command;

use hallmark_tests::{
    CaProcess, assert_bundle_verifies, bin, ok, openssl, openssl_output, openssl_p256_csr,
    openssl_root_ca, openssl_sign, s,
};
use x509_parser::prelude::*;

fn read_cert(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    p.contents
}

#[test]
fn serve_issue_and_openssl_verifies() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("hallmark-data");
    let ca = CaProcess::start(&data, &[]);
    let keys: Vec<&str> = ca.env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "HALLMARK_ENDPOINT",
            "HALLMARK_CERT",
            "HALLMARK_KEY",
            "HALLMARK_CA"
        ]
    );
    assert!(ca.http_get("/healthz").ends_with("ok\n"));
    assert!(
        ca.http_get("/trust-bundle.pem")
            .contains("BEGIN CERTIFICATE")
    );

    let out = work.path().join("sensor-0001");
    let printed = ca.issue_bundle("sensor-0001", "sensor", None, &out);
    assert!(printed.contains("issued"), "{printed}");
    for f in ["key.pem", "cert.pem", "chain.pem", "ca.pem"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    assert_bundle_verifies(&out);
    // The key in the bundle belongs to the certificate.
    let pubkey_cert = openssl(&["x509", "-in", s(&out.join("cert.pem")), "-noout", "-pubkey"]);
    let pubkey_key = openssl(&["pkey", "-in", s(&out.join("key.pem")), "-pubout"]);
    assert_eq!(pubkey_cert, pubkey_key);

    let der = read_cert(&out.join("cert.pem"));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cn, ["sensor-0001"]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let serial = cert.raw_serial();
    assert!(
        serial.len() >= 8 && serial[0] & 0x80 == 0,
        "serial {serial:02x?}"
    );
    assert!(
        cert.get_extension_unique(&oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            .unwrap()
            .is_some(),
        "no SKI"
    );
    assert!(
        cert.get_extension_unique(&oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .unwrap()
            .is_some(),
        "no AKI"
    );
    let v = cert.validity();
    let life = v.not_after.timestamp() - v.not_before.timestamp();
    assert_eq!(
        life,
        30 * 24 * 3600 + 300,
        "sensor default 30 days plus the 5-minute backdate"
    );

    // The certificate is recorded: listing and show find it, byte for byte.
    let list = ok(&ca.hallmark(&["cert", "list", "--device", "sensor-0001", "-o", "json"]));
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let serial_hex = rows[0]["serial"].as_str().unwrap().to_owned();
    assert_eq!(serial_hex, hex::encode(serial));
    let shown = ok(&ca.hallmark(&["cert", "show", &serial_hex, "-o", "pem"]));
    assert_eq!(
        shown,
        std::fs::read_to_string(out.join("cert.pem")).unwrap()
    );

    // A provisioner credential made with the CLI can issue within its scope only.
    let prov = work.path().join("station");
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
        s(&prov),
    ]));
    let as_prov = |args: &[&str]| {
        Command::new(bin("hallmark"))
            .args(args)
            .envs(ca.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HALLMARK_CERT", prov.join("cert.pem"))
            .env("HALLMARK_KEY", prov.join("key.pem"))
            .output()
            .unwrap()
    };
    ok(&as_prov(&[
        "cert",
        "issue",
        "--device",
        "sensor-0002",
        "--profile",
        "sensor",
        "--zone",
        "field",
        "--generate-key",
        "--out",
        s(&work.path().join("s2")),
    ]));
    let refused = as_prov(&[
        "cert",
        "issue",
        "--device",
        "gw-1",
        "--profile",
        "gateway",
        "--zone",
        "field",
        "--generate-key",
        "--out",
        s(&work.path().join("g1")),
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("not profile gateway"),
        "{err}"
    );
    assert!(
        !work.path().join("g1").exists(),
        "a refused issuance wrote files"
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn imported_issuing_ca_with_passphrase_caps_leaf_lifetimes() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    // A corporate root and a 10-day issuing CA, made by OpenSSL.
    let (ik, ireq, ic) = (d.join("iss.key"), d.join("iss.csr"), d.join("iss.crt"));
    let root = openssl_root_ca(d, "root", "Corp Root", 3650);
    let rc = root.1.clone();
    openssl_p256_csr(&ik, &ireq, "/CN=Plant Issuing CA", &[]);
    openssl_sign(
        &ireq,
        &root,
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        10,
        &ic,
    );

    let pass = d.join("pass");
    write(&pass, "correct horse battery\n");
    let data = d.join("data");
    let init = Command::new(bin("hallmark-ca"))
        .args([
            "init",
            "--data-dir",
            s(&data),
            "--passphrase-file",
            s(&pass),
            "--import-issuing-cert",
            s(&ic),
            "--import-issuing-key",
            s(&ik),
            "--import-root-cert",
            s(&rc),
        ])
        .env_remove("HALLMARK_CA_PASSPHRASE")
        .output()
        .unwrap();
    ok(&init);
    let key_text = std::fs::read_to_string(data.join("ca/issuing.key")).unwrap();
    assert!(
        key_text.contains("ENCRYPTED PRIVATE KEY"),
        "CA key not encrypted at rest"
    );
    assert!(
        !data.join("ca/root.key").exists(),
        "an imported CA has no root key here"
    );
    // OpenSSL reads our encrypted PKCS#8.
    openssl(&[
        "pkey",
        "-in",
        s(&data.join("ca/issuing.key")),
        "-passin",
        &format!("file:{}", s(&pass)),
        "-noout",
    ]);

    // Without the passphrase the CA refuses to start, and says how to fix it.
    let no_pass = Command::new(bin("hallmark-ca"))
        .args([
            "serve",
            "--data-dir",
            s(&data),
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env_remove("HALLMARK_CA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(!no_pass.status.success());
    let err = String::from_utf8_lossy(&no_pass.stderr);
    assert!(
        err.contains("is encrypted") && err.contains("--passphrase-file"),
        "{err}"
    );

    let ca = CaProcess::start(&data, &["--passphrase-file", s(&pass)]);
    let out = d.join("s1");
    ca.issue_bundle("sensor-0001", "sensor", None, &out);
    // Verified against the corporate root alone.
    let verify = openssl(&[
        "verify",
        "-CAfile",
        s(&rc),
        "-untrusted",
        s(&out.join("chain.pem")),
        s(&out.join("cert.pem")),
    ]);
    assert!(verify.trim_end().ends_with(": OK"), "{verify}");
    let leaf = read_cert(&out.join("cert.pem"));
    let issuing = read_cert(&ic);
    let (_, leaf) = X509Certificate::from_der(&leaf).unwrap();
    let (_, issuing) = X509Certificate::from_der(&issuing).unwrap();
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        issuing.validity().not_after.timestamp(),
        "a 30-day sensor certificate is capped by the 10-day issuing CA"
    );
    // The corporate root publishes its own CRL, not through Hallmark: only the issuing CA's is
    // served, and that set is complete for `crl fetch`.
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&ca.hallmark(&["crl", "show", "-o", "json"]))).unwrap();
    let shown = shown.as_array().unwrap();
    assert!(
        shown.len() == 1
            && shown[0]["issuer_id"]
                .as_str()
                .unwrap()
                .starts_with("issuing-"),
        "{shown:?}"
    );
    let crls = d.join("crls.pem");
    ok(&ca.hallmark(&["crl", "fetch", "--out", s(&crls)]));
}

#[test]
fn init_can_keep_the_root_key_out_of_the_data_dir_and_refuses_a_second_init() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let offline = work.path().join("offline-root.key");
    ok(&Command::new(bin("hallmark-ca"))
        .args([
            "init",
            "--data-dir",
            s(&data),
            "--root-key-out",
            s(&offline),
        ])
        .env_remove("HALLMARK_CA_PASSPHRASE")
        .output()
        .unwrap());
    assert!(offline.exists());
    assert!(!data.join("ca/root.key").exists());
    // The offline key is the root's key.
    let from_key = openssl(&["pkey", "-in", s(&offline), "-pubout"]);
    let from_cert = openssl(&[
        "x509",
        "-in",
        s(&data.join("ca/root.crt")),
        "-noout",
        "-pubkey",
    ]);
    assert_eq!(from_key, from_cert);
    // The issuing CA has pathlen 0 and chains to the root.
    let text = openssl(&[
        "x509",
        "-in",
        s(&data.join("ca/issuing.crt")),
        "-noout",
        "-text",
    ]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    openssl(&[
        "verify",
        "-CAfile",
        s(&data.join("ca/root.crt")),
        s(&data.join("ca/issuing.crt")),
    ]);

    let again = Command::new(bin("hallmark-ca"))
        .args(["init", "--data-dir", s(&data)])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));
    let _ = openssl_output(&["version"]);
}
