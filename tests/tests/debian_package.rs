//! The Debian package of the client side (issue 11): built with cargo-deb from the `hallmark`
//! binary the test suite already built (no release build), then inspected as an admin would
//! get it: what `dpkg-deb --contents` and `--info` show, the extracted binary running, the
//! systemd units naming flags the binary has, and `systemd-analyze verify` clean on the units.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hallmark_tests::debian;

const UNIT_DIR: &str = "./usr/lib/systemd/system/";
const UNITS: [&str; 3] = [
    "hallmark-broker-sync.service",
    "hallmark-broker-rotate.service",
    "hallmark-rotate@.service",
];
/// What the package ships from the repository, byte for byte: (source, path in the package).
const SHIPPED: [(&str, &str); 7] = [
    (
        "deploy/mosquitto/hallmark.conf",
        "./usr/share/hallmark/mosquitto/hallmark.conf",
    ),
    ("deploy/mosquitto/acl", "./usr/share/hallmark/mosquitto/acl"),
    (
        "deploy/mosquitto/dynamic-security.json",
        "./usr/share/hallmark/mosquitto/dynamic-security.json",
    ),
    (
        "deploy/mosquitto/README.md",
        "./usr/share/doc/hallmark/mosquitto.md",
    ),
    (
        "deploy/systemd/hallmark-broker-sync.service",
        "./usr/lib/systemd/system/hallmark-broker-sync.service",
    ),
    (
        "deploy/systemd/hallmark-broker-rotate.service",
        "./usr/lib/systemd/system/hallmark-broker-rotate.service",
    ),
    (
        "deploy/systemd/hallmark-rotate@.service",
        "./usr/lib/systemd/system/hallmark-rotate@.service",
    ),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line of `dpkg-deb --contents`: mode string, owner/group, path.
struct Entry {
    mode: String,
    owner: String,
}

fn contents(deb: &Path) -> BTreeMap<String, Entry> {
    let listing = ok(Command::new("dpkg-deb").arg("--contents").arg(deb));
    listing
        .lines()
        .map(|line| {
            // drwxr-xr-x 0/0  0 2026-01-01 00:00 ./usr/
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 6, "unexpected dpkg-deb line: {line}");
            let path = f[5..].join(" ");
            let path = path.split(" -> ").next().unwrap_or(&path).to_owned();
            (
                path,
                Entry {
                    mode: f[0].to_owned(),
                    owner: f[1].to_owned(),
                },
            )
        })
        .collect()
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .map(str::to_owned)
}

/// The `ExecStart=` lines of a unit, each split into words.
fn exec_starts(unit: &str) -> Vec<Vec<String>> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn debian_package_ships_binary_units_drop_in_and_docs() {
    let work = tempfile::tempdir().expect("temp dir");
    let deb = debian::package(&work.path().join("out"));

    // Control fields: the name the guide installs, only libc as a dependency.
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert_eq!(info_field(&info, "Package").as_deref(), Some("hallmark"));
    let depends = info_field(&info, "Depends").expect("a Depends field");
    assert!(
        depends.split(',').all(|d| d.trim().starts_with("libc6")),
        "the package should depend on libc only: Depends: {depends}"
    );
    assert_eq!(
        info_field(&info, "Recommends").as_deref(),
        Some("mosquitto")
    );

    // Contents: every file root's, nothing writable by others, nothing set-id.
    let files = contents(&deb);
    for (path, e) in &files {
        assert_eq!(e.owner, "0/0", "{path} should belong to root:root");
        let m = e.mode.as_bytes();
        assert!(
            m.len() == 10 && m[8] != b'w' && !e.mode.contains('s') && !e.mode.contains('S'),
            "{path} has mode {}",
            e.mode
        );
        // Nothing into /etc: the drop-in in conf.d would stop Mosquitto from starting before
        // the certificates it names exist; the guide installs it.
        assert!(!path.starts_with("./etc/"), "{path} should not be shipped");
    }
    let mode_of = |path: &str| -> &str {
        &files
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the package"))
            .mode
    };
    assert_eq!(mode_of("./usr/bin/hallmark"), "-rwxr-xr-x");
    for unit in UNITS {
        assert_eq!(mode_of(&format!("{UNIT_DIR}{unit}")), "-rw-r--r--");
    }
    for (_, path) in SHIPPED {
        assert_eq!(mode_of(path), "-rw-r--r--");
    }
    assert_eq!(mode_of("./usr/share/doc/hallmark/copyright"), "-rw-r--r--");
    // One manual page per committed page (cli/man, kept current by a test of hallmark-cli).
    let pages: Vec<String> = std::fs::read_dir(workspace().join("cli/man"))
        .expect("cli/man")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".1"))
        .collect();
    assert!(pages.iter().any(|p| p == "hallmark-broker-sync.1"));
    for page in &pages {
        assert_eq!(
            mode_of(&format!("./usr/share/man/man1/{page}.gz")),
            "-rw-r--r--"
        );
    }

    // Extracted: the binary runs, the shipped files are the repository's, and every
    // ExecStart names the packaged binary with flags it has.
    let root = work.path().join("root");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let hallmark = root.join("usr/bin/hallmark");
    let version = ok(Command::new(&hallmark).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("hallmark {}", env!("CARGO_PKG_VERSION"))
    );
    for (source, path) in SHIPPED {
        assert_eq!(
            std::fs::read(root.join(path)).expect("packaged file"),
            std::fs::read(workspace().join(source)).expect("source file"),
            "{path} differs from {source}"
        );
    }
    // Reported after the systemd checks, so that one run shows every problem.
    let mut refused = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(root.join(UNIT_DIR).join(unit)).expect("unit");
        let starts = exec_starts(&text);
        assert_eq!(starts.len(), 1, "{unit}: one ExecStart expected");
        let argv = &starts[0];
        assert_eq!(argv[0], "/usr/bin/hallmark", "{unit}");
        assert!(root.join(argv[0].trim_start_matches('/')).is_file());
        // With `--help` appended, clap checks every flag and value and prints the help
        // instead of running: an unknown flag fails here, not at the admin's first start.
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| {
                a.replace("${HALLMARK_BROKER_NAME}", "mqtt-1.plant.example")
                    .replace("%f", "/etc/hallmark/identity")
            })
            .collect();
        let out = run(Command::new(&hallmark)
            .args(&args)
            .arg("--help")
            .env_remove("HALLMARK_ENDPOINT"));
        if !out.status.success() {
            refused.push(format!(
                "{unit}: the packaged hallmark refuses its ExecStart arguments: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }

    // systemd-analyze verify on the packaged units, as systemd would load them. The container
    // runs no systemd and /usr/bin/hallmark need not be installed: the units are verified from
    // a copy whose ExecStart points at the extracted binary, with the extracted manual pages
    // on MANPATH (verify checks the man: pages of Documentation=). mosquitto.service is only
    // an ordering dependency: verify does not need it installed.
    let units = work.path().join("units");
    std::fs::create_dir(&units).expect("units dir");
    for unit in UNITS {
        let text = std::fs::read_to_string(root.join(UNIT_DIR).join(unit)).expect("unit");
        let text = text.replace("/usr/bin/hallmark", &hallmark.to_string_lossy());
        std::fs::write(units.join(unit), text).expect("writing a unit copy");
    }
    let out = run(Command::new("systemd-analyze")
        .current_dir(&units)
        .env("MANPATH", root.join("usr/share/man"))
        .args([
            "verify",
            "./hallmark-broker-sync.service",
            "./hallmark-broker-rotate.service",
            // The template, as an instance for a bundle in /etc/hallmark/identity.
            "./hallmark-rotate@etc-hallmark-identity.service",
        ]));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}) complained:\n{said}",
        out.status
    );
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn systemd_analyze_verify_reports_a_broken_unit() {
    // The check above is only worth something if verify speaks up: a misspelt key, a bad
    // value and a missing binary must each be reported.
    let work = tempfile::tempdir().expect("temp dir");
    let source =
        std::fs::read_to_string(workspace().join("deploy/systemd/hallmark-broker-sync.service"))
            .expect("unit");
    let broken = source
        .replace("RestartSec=10s", "RestartSec=ten seconds\nRestartSecs=10s")
        .replace("/usr/bin/hallmark", "/nonexistent/hallmark");
    assert_ne!(broken, source);
    std::fs::write(work.path().join("hallmark-broken.service"), broken).expect("unit copy");
    let out = run(Command::new("systemd-analyze")
        .current_dir(work.path())
        .args(["verify", "--man=no", "./hallmark-broken.service"]));
    let said = String::from_utf8_lossy(&out.stderr);
    for complaint in ["RestartSecs", "ten seconds", "/nonexistent/hallmark"] {
        assert!(
            said.contains(complaint),
            "verify did not report {complaint}:\n{said}"
        );
    }
}
