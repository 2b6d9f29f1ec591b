//! The factory station (`hallmark-provisioner run`) against a real CA process, with a
//! provisioner credential scoped to zones and profiles; OpenSSL checks what it injected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hallmark_tests::{CaProcess, assert_bundle_verifies, bin, ok, openssl_output, s};

/// A CA and a station credential scoped to `zones` and `profiles`.
struct Factory {
    _work: tempfile::TempDir,
    dir: PathBuf,
    ca: CaProcess,
}

impl Factory {
    fn new(zones: &str, profiles: &str) -> Self {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().to_owned();
        let ca = CaProcess::start(&dir.join("data"), &[]);
        ca.provisioner_credential("station-1", zones, profiles, &dir.join("station"));
        Self {
            _work: work,
            dir,
            ca,
        }
    }

    /// `hallmark-provisioner` with the station's credential.
    fn provisioner(&self) -> Command {
        let endpoint = self.ca.var("HALLMARK_ENDPOINT");
        let station = self.dir.join("station");
        let mut c = Command::new(bin("hallmark-provisioner"));
        c.env_clear()
            .env("HALLMARK_ENDPOINT", endpoint)
            .env("HALLMARK_CA", station.join("ca.pem"))
            .env("HALLMARK_CERT", station.join("cert.pem"))
            .env("HALLMARK_KEY", station.join("key.pem"));
        c
    }

    fn run(&self, manifest: &Path, target: &str, extra: &[&str]) -> Output {
        self.provisioner()
            .args(["run", "--lot", s(manifest), "--target", target])
            .args(extra)
            .output()
            .unwrap()
    }

    /// Active certificates per device, from the CA.
    fn active_per_device(&self) -> HashMap<String, Vec<String>> {
        let out = ok(&self
            .ca
            .hallmark(&["cert", "list", "--status", "active", "-o", "json"]));
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let mut per = HashMap::<String, Vec<String>>::new();
        for c in list {
            per.entry(c["device_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(c["serial"].as_str().unwrap().to_owned());
        }
        per
    }
}

fn manifest(path: &Path, rows: &[(String, &str, &str)], extra: &[(&str, Vec<String>)]) {
    let mut text = String::from("device_id,zone,profile,model,serial_number");
    for (col, _) in extra {
        text.push(',');
        text.push_str(col);
    }
    text.push('\n');
    for (i, (id, zone, profile)) in rows.iter().enumerate() {
        text.push_str(&format!("{id},{zone},{profile},TX-100,SN{i:05}"));
        for (_, values) in extra {
            text.push(',');
            text.push_str(&values[i]);
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn serial_of(cert: &Path) -> String {
    let pem = std::fs::read(cert).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let c = p.parse_x509().unwrap();
    hallmark_ca::api::auth::serial_hex(c.raw_serial())
}

#[test]
fn a_lot_of_500_into_a_file_system_image_verifies_with_openssl() {
    use std::os::unix::fs::PermissionsExt;
    let f = Factory::new("field", "sensor,gateway");
    let rows: Vec<(String, &str, &str)> = (0..500)
        .map(|i| {
            (
                format!("s-{i:04}"),
                "field",
                if i % 10 == 0 { "gateway" } else { "sensor" },
            )
        })
        .collect();
    let lot = f.dir.join("lot-2026-11-a.csv");
    manifest(&lot, &rows, &[]);
    let image = f.dir.join("image");
    let out = f.run(&lot, &format!("dir:{}", s(&image)), &["--workers", "8"]);
    let shown = text(&out);
    println!("{shown}");
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("500 devices: 500 ok, 0 failed, 0 skipped"),
        "{shown}"
    );
    assert!(shown.contains("devices/min"), "{shown}");
    let r = report(&f.dir.join("lot-2026-11-a.report.json"));
    assert_eq!(
        (r["total"].as_u64(), r["ok"].as_u64()),
        (Some(500), Some(500))
    );
    let active = f.active_per_device();
    for (id, _, _) in &rows {
        let d = image.join(id);
        assert_bundle_verifies(&d);
        let mode = std::fs::metadata(d.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{id}: key mode");
        assert_eq!(
            active[id],
            [serial_of(&d.join("cert.pem"))],
            "{id}: one active certificate, the injected one"
        );
    }
    // The key in each bundle is the certificate's (OpenSSL's view).
    for (id, _, _) in rows.iter().step_by(50) {
        let d = image.join(id);
        let from_key = ok(&openssl_output(&[
            "pkey",
            "-in",
            s(&d.join("key.pem")),
            "-pubout",
        ]));
        let from_cert = ok(&openssl_output(&[
            "x509",
            "-in",
            s(&d.join("cert.pem")),
            "-noout",
            "-pubkey",
        ]));
        assert_eq!(from_key, from_cert, "{id}");
    }
    // The registry knows the lot.
    let devices = ok(&f.ca.hallmark(&["device", "show", "s-0001", "-o", "json"]));
    assert!(devices.contains("lot-2026-11-a"), "{devices}");

    // Running the lot again skips every device and issues nothing.
    let again = f.run(&lot, &format!("dir:{}", s(&image)), &[]);
    assert!(
        text(&again).contains("500 devices: 0 ok, 0 failed, 500 skipped"),
        "{}",
        text(&again)
    );
    let after = f.active_per_device();
    assert!(
        rows.iter().all(|(id, _, _)| after[id] == active[id]),
        "nothing new was issued"
    );
}

#[test]
fn pkcs12_files_open_with_their_passwords() {
    let f = Factory::new("field", "sensor");
    let rows: Vec<(String, &str, &str)> = (0..6)
        .map(|i| (format!("p-{i}"), "field", "sensor"))
        .collect();
    // Five devices bring their own password; the sixth takes the lot's password file.
    let passwords: Vec<String> = (0..6)
        .map(|i| {
            if i < 5 {
                format!("device-pass-{i}")
            } else {
                String::new()
            }
        })
        .collect();
    let lot = f.dir.join("lot-p12.csv");
    manifest(&lot, &rows, &[("pkcs12_password", passwords.clone())]);
    let lot_pass = f.dir.join("lot.pass");
    std::fs::write(&lot_pass, "lot-password-1\n").unwrap();
    let out_dir = f.dir.join("p12");
    let out = f.run(
        &lot,
        &format!("pkcs12:{}?password-file={}", s(&out_dir), s(&lot_pass)),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    for (i, (id, _, _)) in rows.iter().enumerate() {
        let file = out_dir.join(format!("{id}.p12"));
        let pass = if i < 5 {
            passwords[i].clone()
        } else {
            "lot-password-1".into()
        };
        let info = openssl_output(&[
            "pkcs12",
            "-info",
            "-in",
            s(&file),
            "-passin",
            &format!("pass:{pass}"),
            "-nokeys",
        ]);
        assert!(
            info.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&info.stderr)
        );
        assert!(String::from_utf8_lossy(&info.stdout).contains(&format!("CN = {id}")));
        let wrong = openssl_output(&[
            "pkcs12",
            "-info",
            "-in",
            s(&file),
            "-passin",
            "pass:wrong-password",
            "-nokeys",
        ]);
        assert!(!wrong.status.success(), "{id}: a wrong password opened it");
    }
    // Without any password the device is refused before anything is issued.
    let lot2 = f.dir.join("lot-nopass.csv");
    std::fs::write(
        &lot2,
        "device_id,zone,profile,model,serial_number\np-9,field,sensor,TX-100,SN-P9\n",
    )
    .unwrap();
    let out = f.run(&lot2, &format!("pkcs12:{}", s(&out_dir)), &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no PKCS#12 password"), "{}", text(&out));
    assert!(!f.active_per_device().contains_key("p-9"));
}

#[test]
fn a_killed_run_resumes_and_every_device_ends_with_one_active_certificate() {
    let f = Factory::new("field", "sensor");
    let rows: Vec<(String, &str, &str)> = (0..300)
        .map(|i| (format!("k-{i:03}"), "field", "sensor"))
        .collect();
    let lot = f.dir.join("lot-k.csv");
    manifest(&lot, &rows, &[]);
    let image = f.dir.join("image");
    let target = format!("dir:{}", s(&image));
    let journal = f.dir.join("lot-k.journal");
    let mut child = f
        .provisioner()
        .args([
            "run",
            "--lot",
            s(&lot),
            "--target",
            &target,
            "--workers",
            "6",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it somewhere in the middle of the lot.
    let start = Instant::now();
    loop {
        let done = std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .matches("\"event\":\"done\"")
            .count();
        if done >= 60 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the run made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = std::fs::read_to_string(&journal)
        .unwrap()
        .matches("\"event\":\"done\"")
        .count();

    let out = f.run(&lot, &target, &["--workers", "6"]);
    let shown = text(&out);
    println!("{shown}");
    assert!(out.status.success(), "{shown}");
    let r = report(&f.dir.join("lot-k.report.json"));
    let (okc, skipped, failed) = (
        r["ok"].as_u64().unwrap(),
        r["skipped"].as_u64().unwrap(),
        r["failed"].as_u64().unwrap(),
    );
    assert_eq!(
        (okc + skipped, failed),
        (300, 0),
        "the report adds up: {shown}"
    );
    // Every device journaled as done was skipped (a line torn by the kill may not count).
    assert!(
        skipped as usize + 1 >= done_before,
        "{skipped} skipped, {done_before} done before"
    );
    let active = f.active_per_device();
    for (id, _, _) in &rows {
        let d = image.join(id);
        assert_eq!(
            active.get(id).map(Vec::as_slice),
            Some([serial_of(&d.join("cert.pem"))].as_slice()),
            "{id}: exactly one active certificate, the one in its bundle"
        );
    }
    for (id, _, _) in rows.iter().step_by(10) {
        assert_bundle_verifies(&image.join(id));
    }
}

#[test]
fn devices_outside_the_station_scope_fail_alone() {
    let f = Factory::new("field", "sensor");
    let rows: Vec<(String, &str, &str)> = vec![
        ("o-1".into(), "field", "sensor"),
        ("o-2".into(), "it", "sensor"),
        ("o-3".into(), "field", "sensor"),
        ("o-4".into(), "field", "gateway"),
        ("o-5".into(), "field", "sensor"),
    ];
    let lot = f.dir.join("lot-o.csv");
    manifest(&lot, &rows, &[]);
    let image = f.dir.join("image");
    let out = f.run(&lot, &format!("dir:{}", s(&image)), &[]);
    let shown = text(&out);
    assert!(!out.status.success(), "a lot with failures exits non-zero");
    assert!(shown.contains("5 devices: 3 ok, 2 failed"), "{shown}");
    for bad in ["o-2", "o-4"] {
        let line = shown
            .lines()
            .find(|l| l.starts_with(&format!("failed: {bad} ")))
            .unwrap_or_else(|| panic!("{bad} not reported:\n{shown}"));
        assert!(line.contains("PERMISSION_DENIED"), "{line}");
        assert!(!image.join(bad).exists(), "{bad}: nothing injected");
    }
    for good in ["o-1", "o-3", "o-5"] {
        assert_bundle_verifies(&image.join(good));
    }
    let active = f.active_per_device();
    assert!(!active.contains_key("o-2") && !active.contains_key("o-4"));

    // Another unit cannot take over a registered device's identity.
    let other = f.dir.join("lot-other.csv");
    std::fs::write(
        &other,
        "device_id,zone,profile,model,serial_number\no-1,field,sensor,TX-100,SN-OTHER\n",
    )
    .unwrap();
    let out = f.run(&other, &format!("dir:{}", s(&f.dir.join("image2"))), &[]);
    assert!(
        text(&out).contains("a different unit cannot take its identity"),
        "{}",
        text(&out)
    );
    assert_eq!(
        f.active_per_device()["o-1"],
        active["o-1"],
        "o-1 keeps its certificate"
    );

    // A bad manifest stops before anything happens.
    let bad = f.dir.join("lot-bad.csv");
    std::fs::write(
        &bad,
        "device_id,zone,profile,model,serial_number\nNOT VALID,field,sensor,,\n",
    )
    .unwrap();
    let out = f.run(&bad, &format!("dir:{}", s(&image)), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("line 2:"), "{}", text(&out));
    assert!(!f.dir.join("lot-bad.journal").exists());
}

/// `dir:PATH?owner=..&group=..&key-mode=..`: the bundles of a gateway image belong to the user
/// that will read them; an unknown user or an exposed key mode stops before anything happens.
#[test]
fn a_file_system_image_gets_the_owner_group_and_key_mode_asked_for() {
    use std::os::unix::fs::MetadataExt;
    let f = Factory::new("field", "sensor");
    let rows: Vec<(String, &str, &str)> = vec![
        ("w-1".into(), "field", "sensor"),
        ("w-2".into(), "field", "sensor"),
    ];
    let lot = f.dir.join("lot-w.csv");
    manifest(&lot, &rows, &[]);
    let image = f.dir.join("image");
    for (bad, says) in [
        (
            "owner=no-such-user-hallmark",
            "no user `no-such-user-hallmark`",
        ),
        ("key-mode=0644", "world"),
    ] {
        let out = f.run(&lot, &format!("dir:{}?{bad}", s(&image)), &[]);
        assert!(!out.status.success(), "{bad}");
        assert!(text(&out).contains(says), "{bad}: {}", text(&out));
        assert!(!image.exists(), "{bad}: nothing written");
    }
    let active = f.active_per_device();
    assert!(
        !active.contains_key("w-1") && !active.contains_key("w-2"),
        "nothing issued: {active:?}"
    );
    let target = format!("dir:{}?owner=nobody&group=nogroup&key-mode=0640", s(&image));
    let out = f.run(&lot, &target, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let id = |args: &[&str]| -> u32 {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        ok(&out)
            .split(':')
            .nth(2)
            .unwrap_or(ok(&out).trim())
            .trim()
            .parse()
            .unwrap()
    };
    let (uid, gid) = (
        id(&["id", "-u", "nobody"]),
        id(&["getent", "group", "nogroup"]),
    );
    for (dev, _, _) in &rows {
        let at = |name: &str| {
            let m = std::fs::metadata(image.join(dev).join(name)).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(at(""), (uid, gid, 0o750), "{dev}");
        assert_eq!(at("key.pem"), (uid, gid, 0o640), "{dev}");
        assert_eq!(at("cert.pem"), (uid, gid, 0o644), "{dev}");
        assert_bundle_verifies(&image.join(dev));
    }
}

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[test]
fn a_lot_of_20_into_pkcs11_tokens_keeps_every_key_inside_its_token() {
    let f = Factory::new("field", "sensor");
    // One SoftHSM token per device, standing in for each device's secure element.
    let tokens = f.dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = f.dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            s(&tokens)
        ),
    )
    .unwrap();
    let pin = "483920";
    let rows: Vec<(String, &str, &str)> = (0..20)
        .map(|i| (format!("se-{i:02}"), "field", "sensor"))
        .collect();
    for (id, _, _) in &rows {
        let init = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                id,
                "--pin",
                pin,
                "--so-pin",
                "11223344",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util is installed (scripts/test.sh installs softhsm2)");
        assert!(init.status.success(), "{}", text(&init));
    }
    let pin_file = f.dir.join("pin");
    std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
    let lot = f.dir.join("lot-se.csv");
    manifest(&lot, &rows, &[]);
    let target = format!("pkcs11:{SOFTHSM}?pin-file={}", s(&pin_file));
    let out = f
        .provisioner()
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "run",
            "--lot",
            s(&lot),
            "--target",
            &target,
            "--workers",
            "4",
        ])
        .output()
        .unwrap();
    let shown = text(&out);
    println!("{shown}");
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("20 devices: 20 ok"), "{shown}");
    let active = f.active_per_device();
    for (id, _, _) in &rows {
        let challenge: [u8; 32] = std::array::from_fn(|i| (i as u8) ^ id.len() as u8 ^ 0x5a);
        let probe = Command::new(bin("hallmark-p11probe"))
            .args([SOFTHSM, id, pin, id, &hex::encode(challenge)])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(probe.status.success(), "{id}: {}", text(&probe));
        let p: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
        assert_eq!(p["extractable"], false, "{id}: CKA_EXTRACTABLE");
        assert_eq!(p["sensitive"], true, "{id}: CKA_SENSITIVE");
        assert_eq!(
            p["never_extractable"], true,
            "{id}: generated inside the token"
        );
        assert_eq!(
            (p["private_keys"].as_u64(), p["certificates"].as_u64()),
            (Some(1), Some(1)),
            "{id}"
        );
        let cert_der = hex::decode(p["certificate"].as_str().unwrap()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        assert_eq!(
            active[id],
            [hallmark_ca::api::auth::serial_hex(cert.raw_serial())],
            "{id}: the token's certificate is the device's one active certificate"
        );
        // A signature made inside the token verifies with the issued certificate's key.
        let point = cert.public_key().subject_public_key.data.to_vec();
        let signature = hex::decode(p["signature_raw"].as_str().unwrap()).unwrap();
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            point,
        )
        .verify(&challenge, &signature)
        .unwrap_or_else(|_| panic!("{id}: the token's signature does not verify"));
    }

    // As if the station had died after the CA answered for se-03 but before it journaled the
    // device done: the next run finds the certificate in the token and issues nothing new.
    let journal = f.dir.join("lot-se.journal");
    let kept: String = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .filter(|l| !(l.contains("\"device\":\"se-03\"") && l.contains("\"event\":\"done\"")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&journal, kept).unwrap();
    let again = f
        .provisioner()
        .env("SOFTHSM2_CONF", &conf)
        .args(["run", "--lot", s(&lot), "--target", &target])
        .output()
        .unwrap();
    assert!(
        text(&again).contains("20 devices: 1 ok, 0 failed, 19 skipped"),
        "{}",
        text(&again)
    );
    assert_eq!(
        f.active_per_device()["se-03"],
        active["se-03"],
        "nothing new issued"
    );
}

/// A simulated sensor process; killed on drop.
struct Simulator {
    child: std::process::Child,
    address: String,
    state: PathBuf,
}

impl Simulator {
    fn start(dir: &Path, serial_number: &str, pty: bool) -> Self {
        use std::io::BufRead;
        let state = dir.join(format!("sim-{serial_number}"));
        let mut child = Command::new(bin("hallmark-device-sim"))
            .args(["--state", s(&state), "--serial-number", serial_number])
            .args(if pty {
                vec!["--pty"]
            } else {
                vec!["--listen", "127.0.0.1:0"]
            })
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .or_else(|| line.trim().strip_prefix("pty "))
            .unwrap_or_else(|| panic!("simulator said {line:?}"))
            .to_owned();
        Self {
            child,
            address,
            state,
        }
    }

    /// Asks the device to sign a fresh challenge and checks it against `cert_der`.
    fn proves_possession(&self, cert_der: &[u8]) -> bool {
        use hallmark_provisioner::serial::{link::Link, protocol};
        let challenge: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(7) ^ 0x33);
        let mut link = Link::open(&self.address, Duration::from_secs(5)).unwrap();
        let signature = protocol::request(&mut link, protocol::PROVE, &challenge).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            cert.public_key().subject_public_key.data.to_vec(),
        )
        .verify(&challenge, &signature)
        .is_ok()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file below `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

#[test]
fn ten_simulated_sensors_on_serial_lines_keep_their_keys() {
    let f = Factory::new("field", "sensor");
    // Nine sensors behind TCP fixtures and one on a pty, like a USB-serial adapter.
    let sims: Vec<Simulator> = (0..10)
        .map(|i| Simulator::start(&f.dir, &format!("SN-{i:03}"), i == 9))
        .collect();
    assert!(sims[9].address.starts_with("/dev/"), "{}", sims[9].address);
    let mut text_rows = String::from("device_id,zone,profile,model,serial_number,serial_address\n");
    for (i, sim) in sims.iter().enumerate() {
        text_rows.push_str(&format!(
            "ts-{i},field,sensor,SIM-1,SN-{i:03},{}\n",
            sim.address
        ));
    }
    let lot = f.dir.join("lot-serial.csv");
    std::fs::write(&lot, text_rows).unwrap();
    let out = f.run(&lot, "serial:", &["--workers", "4"]);
    let shown = text(&out);
    println!("{shown}");
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("10 devices: 10 ok"), "{shown}");
    let active = f.active_per_device();
    let ca_files = all_bytes(&f.dir.join("data"));
    let station_files: Vec<_> = all_bytes(&f.dir)
        .into_iter()
        .filter(|(p, _)| {
            !p.starts_with(f.dir.join("data")) && !p.to_string_lossy().contains("sim-")
        })
        .collect();
    for (i, sim) in sims.iter().enumerate() {
        let id = format!("ts-{i}");
        let bundle = CredentialBundleFiles::read(&sim.state);
        assert_eq!(
            active[&id],
            [serial_of(&sim.state.join("cert.pem"))],
            "{id}"
        );
        assert_bundle_verifies(&sim.state);
        assert!(
            sim.proves_possession(&bundle.cert_der),
            "{id}: proof of possession"
        );
        // The key never left the device: neither the CA nor the station has its bytes.
        for (path, bytes) in ca_files.iter().chain(station_files.iter()) {
            assert!(
                !bytes
                    .windows(bundle.key_der.len())
                    .any(|w| w == bundle.key_der.as_slice())
                    && !bytes
                        .windows(bundle.key_pem_body.len())
                        .any(|w| w == bundle.key_pem_body.as_bytes()),
                "{id}: its private key is in {}",
                path.display()
            );
        }
    }

    // A unit that is not the one the manifest names is refused before anything is generated.
    let wrong = f.dir.join("lot-wrong.csv");
    std::fs::write(
        &wrong,
        format!(
            "device_id,zone,profile,model,serial_number,serial_address\nts-x,field,sensor,SIM-1,SN-999,{}\n",
            sims[0].address
        ),
    )
    .unwrap();
    let out = f.run(&wrong, "serial:", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("has serial number SN-000, the manifest expects SN-999"),
        "{}",
        text(&out)
    );
    assert!(sims[0].proves_possession(&CredentialBundleFiles::read(&sims[0].state).cert_der));
}

/// A device's stored bundle, as bytes to look for elsewhere.
struct CredentialBundleFiles {
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    key_pem_body: String,
}

impl CredentialBundleFiles {
    fn read(dir: &Path) -> Self {
        let cert = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
        let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
        let key_der = pem_body(&key);
        Self {
            cert_der: pem_body(&cert),
            key_pem_body: key.lines().nth(1).unwrap().to_owned(),
            key_der,
        }
    }
}

fn pem_body(text: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(text.as_bytes()).unwrap();
    p.contents
}
