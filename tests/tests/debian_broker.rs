//! A broker host as Debian runs it, set up only with the commands of
//! `deploy/mosquitto/README.md`: Debian's `mosquitto` package installed with its stock
//! `mosquitto.conf`, Hallmark's package installed with apt, `hallmark.conf` in `conf.d/`,
//! Mosquitto started as its systemd unit starts it (dropping to the `mosquitto` user), and the
//! agent and renewal services started from the package's units.
//!
//! The host is a throwaway copy of this machine: a private mount namespace with `/etc`, `/usr`
//! and `/var` as overlays (so installing packages and writing `/etc` change nothing outside)
//! and a fresh `/run`, and a private network namespace whose loopback carries the guide's
//! addresses (`ca.plant.example:9443`, `mqtt-1.plant.example:8883`, through `/etc/hosts`).
//! There is no systemd in it: [`Services`] starts units as systemd does (their
//! `EnvironmentFile`, `ExecStartPre`, `ExecStart`, `Type=notify` readiness through
//! `NOTIFY_SOCKET`, and the order their `Before`/`After` give), and the guide's `systemctl`
//! lines are run through it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hallmark_tests::{CaProcess, Kill, bin, ok, s, wait_until};

/// The guide.
fn guide() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/README.md"),
    )
    .unwrap()
}

/// The guide's shell blocks, in order, each with the heading it stands under.
fn guide_blocks() -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let (mut heading, mut block): (String, Option<String>) = (String::new(), None);
    for line in guide().lines() {
        match &mut block {
            Some(b) if line.trim_end() == "```" => {
                blocks.push((heading.clone(), std::mem::take(b)));
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None if line.trim_end() == "```sh" => block = Some(String::new()),
            None if line.starts_with('#') => heading = line.trim_start_matches('#').trim().into(),
            None => {}
        }
    }
    blocks
}

/// The throwaway broker host: the namespaces of a `sleep` process that holds them.
struct Host {
    holder: Kill,
    work: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test builds a throwaway Debian host with namespaces and must run as root \
             (scripts/test.sh does, as CI does)"
        );
        let work = tempfile::tempdir().unwrap();
        let holder = Kill(
            Command::new("unshare")
                .args(["--mount", "--net", "--propagation", "private"])
                .args(["sleep", "3600"])
                .spawn()
                .expect("unshare (util-linux) runs"),
        );
        let pid = holder.0.id();
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        wait_until("the host's namespaces", Duration::from_secs(5), || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns != ours)
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.ends_with("sleep"))
        });
        let host = Self { holder, work };
        let layers = host.work.path().join("layers");
        let mut script = String::from("set -e\n");
        for dir in ["etc", "usr", "var"] {
            let (up, wk) = (
                layers.join(format!("{dir}.up")),
                layers.join(format!("{dir}.work")),
            );
            std::fs::create_dir_all(&up).unwrap();
            std::fs::create_dir_all(&wk).unwrap();
            script += &format!(
                "mount -t overlay overlay -o lowerdir=/{dir},upperdir={},workdir={} /{dir}\n",
                s(&up),
                s(&wk)
            );
        }
        script += "mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/lock\n\
                   ip link set lo up\n\
                   printf '127.0.0.1 localhost ca.plant.example mqtt-1.plant.example\\n' > /etc/hosts\n";
        ok(&host.sh(&script));
        host
    }

    fn pid(&self) -> u32 {
        self.holder.0.id()
    }

    /// `program` run inside the host.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid().to_string(), "-m", "-n", "--"])
            .arg(program);
        c
    }

    /// `program` run inside the host in the directory `wd` (entering a mount namespace resets
    /// the working directory to its root).
    fn command_in(&self, wd: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid().to_string(), "-m", "-n"])
            .arg(format!("--wd={}", s(wd)))
            .arg("--")
            .arg(program);
        c
    }

    fn sh(&self, script: &str) -> Output {
        self.command("sh").args(["-c", script]).output().unwrap()
    }

    /// A path of the host, as this process reaches it.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.pid()))
    }

    fn read(&self, inside: &str) -> String {
        std::fs::read_to_string(self.path(inside)).unwrap_or_default()
    }

    /// Debian's `mosquitto` package, installed afresh from the very `.deb` this machine has
    /// installed: the stock configuration files exactly as the package ships them. The
    /// package's start of the service is held off (policy-rc.d), as on a host without systemd.
    fn install_debian_mosquitto(&self) {
        let deb = mosquitto_deb();
        ok(&self.sh(&format!(
            "set -e; rm -rf /etc/mosquitto; printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; \
             chmod 0755 /usr/sbin/policy-rc.d; \
             DEBIAN_FRONTEND=noninteractive dpkg -i --force-confmiss {} >/dev/null",
            s(&deb)
        )));
        let stock = Command::new("dpkg-query")
            .args(["-W", "-f", "${Conffiles}", "mosquitto"])
            .output()
            .unwrap();
        let md5 = String::from_utf8_lossy(&stock.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("/etc/mosquitto/mosquitto.conf "))
            .expect("dpkg records mosquitto.conf as a conffile")
            .trim()
            .to_owned();
        let ours = ok(&self
            .command("md5sum")
            .arg("/etc/mosquitto/mosquitto.conf")
            .output()
            .unwrap());
        assert!(
            ours.starts_with(&md5),
            "mosquitto.conf is the package's stock file ({md5}): {ours}"
        );
    }
}

/// The `.deb` of the installed `mosquitto` version, which scripts/test.sh downloads.
fn mosquitto_deb() -> PathBuf {
    let version = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "mosquitto"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian-cache");
    std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mosquitto_") && n.ends_with(".deb"))
                && Command::new("dpkg-deb")
                    .args(["-f", s(p), "Version"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == version)
        })
        .unwrap_or_else(|| {
            panic!(
                "no mosquitto_{version}_*.deb in {}: scripts/test.sh downloads it \
                 (apt-get download mosquitto={version})",
                cache.display()
            )
        })
}

/// A unit file's `[Unit]` and `[Service]` settings (a key may repeat).
struct Unit {
    name: String,
    keys: Vec<(String, String)>,
}

impl Unit {
    fn load(host: &Host, name: &str) -> Self {
        // An instance of a template (`name@instance.service`) reads `name@.service`, with
        // `%i` the instance and `%f` the path it escapes (`systemd-escape --path`).
        let (file, instance) = match name.split_once('@') {
            Some((base, rest)) => {
                let (instance, suffix) = rest.rsplit_once('.').expect("a unit suffix");
                (format!("{base}@.{suffix}"), Some(instance.to_owned()))
            }
            None => (name.to_owned(), None),
        };
        let mut text = ["/etc/systemd/system", "/lib/systemd/system"]
            .iter()
            .map(|d| host.read(&format!("{d}/{file}")))
            .find(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("unit {file} is installed"));
        if let Some(i) = instance {
            let out = Command::new("systemd-escape")
                .args(["--unescape", "--path", &i])
                .output()
                .unwrap();
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            text = text.replace("%f", &path).replace("%i", &i);
        }
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Self {
            name: name.to_owned(),
            keys,
        }
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.all(key).last().copied()
    }

    /// Unit names listed under `key` (Before, After).
    fn names(&self, key: &str) -> Vec<String> {
        self.all(key)
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(str::to_owned)
            .collect()
    }
}

/// What systemd would do with the units of the host, for the lines of the guide: start (in
/// the order of `Before`/`After`), stop and restart services.
struct Services<'h> {
    host: &'h Host,
    running: BTreeMap<String, Kill>,
    /// Units enabled (started at boot); Debian's package enables mosquitto.service.
    enabled: Vec<String>,
    logs: PathBuf,
}

impl<'h> Services<'h> {
    fn new(host: &'h Host) -> Self {
        let logs = host.work.path().join("journal");
        std::fs::create_dir_all(&logs).unwrap();
        Self {
            host,
            running: BTreeMap::new(),
            enabled: vec!["mosquitto.service".to_owned()],
            logs,
        }
    }

    /// The unit's output so far (its journal).
    fn journal(&self, unit: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{unit}.log"))).unwrap_or_default()
    }

    fn main_pid(&self, unit: &str) -> u32 {
        self.running[unit].0.id()
    }

    /// Runs one `systemctl` line of the guide.
    fn systemctl(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "systemctl", "{line}");
        let units: Vec<String> = words[2..]
            .iter()
            .filter(|w| !w.starts_with("--"))
            .map(|w| {
                if w.contains('.') {
                    w.to_string()
                } else {
                    format!("{w}.service")
                }
            })
            .collect();
        if words[1] == "enable" {
            for u in &units {
                if !self.enabled.contains(u) {
                    self.enabled.push(u.clone());
                }
            }
        }
        match (words[1], words.contains(&"--now")) {
            ("enable", true) | ("start", _) => self.start(&units),
            ("enable", false) => {}
            ("restart", _) => {
                for u in &units {
                    self.stop(u);
                }
                self.start(&units);
            }
            ("stop", _) => units.iter().for_each(|u| self.stop(u)),
            _ => panic!("the test does not know `{line}`"),
        }
    }

    /// Starts `units` in systemd's order: a unit that is `Before` another, or that another is
    /// `After`, starts (and, `Type=notify`, reports ready) first.
    fn start(&mut self, units: &[String]) {
        let loaded: Vec<Unit> = units.iter().map(|u| Unit::load(self.host, u)).collect();
        let mut order: Vec<&Unit> = Vec::new();
        let mut left: Vec<&Unit> = loaded.iter().collect();
        while !left.is_empty() {
            let i = (0..left.len())
                .find(|&i| {
                    let u = left[i];
                    !left.iter().any(|o| {
                        o.name != u.name
                            && (o.names("Before").contains(&u.name)
                                || u.names("After").contains(&o.name))
                    })
                })
                .expect("no ordering cycle");
            order.push(left.remove(i));
        }
        for unit in order {
            if !self.running.contains_key(&unit.name) {
                self.start_one(unit);
            }
        }
    }

    fn environment(&self, unit: &Unit) -> Vec<(String, String)> {
        let mut env = vec![(
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        )];
        for file in unit.all("EnvironmentFile") {
            let (optional, file) = match file.strip_prefix('-') {
                Some(f) => (true, f),
                None => (false, file),
            };
            let text = self.host.read(file);
            assert!(optional || !text.is_empty(), "{}: {file} exists", unit.name);
            for line in text.lines().map(str::trim) {
                if let Some((k, v)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
                    env.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
                }
            }
        }
        for assignment in unit.all("Environment") {
            for a in assignment.split_whitespace() {
                let (k, v) = a.trim_matches('"').split_once('=').unwrap();
                env.push((k.to_owned(), v.to_owned()));
            }
        }
        for names in unit.all("UnsetEnvironment") {
            for name in names.split_whitespace() {
                env.retain(|(k, _)| k != name);
            }
        }
        env
    }

    /// An `Exec*` line as systemd runs it: `${VAR}`/`$VAR` replaced, split into words.
    fn command(&self, unit: &Unit, line: &str, env: &[(String, String)]) -> (bool, Command) {
        let (ignore_failure, line) = match line.strip_prefix('-') {
            Some(l) => (true, l),
            None => (false, line),
        };
        let mut words = Vec::new();
        for word in line.split_whitespace() {
            assert!(
                !word.contains(['"', '\'']),
                "{}: quoting in {line}",
                unit.name
            );
            let mut w = word.to_owned();
            for (k, v) in env {
                w = w.replace(&format!("${{{k}}}"), v);
                if w == format!("${k}") {
                    w = v.clone();
                }
            }
            assert!(!w.contains('$'), "{}: {w} is not set", unit.name);
            words.push(w);
        }
        let mut c = self.host.command("unshare");
        // The unit's file-system sandbox, in a mount namespace of the service's own.
        c.args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
            .arg(Self::sandbox(unit))
            .arg("sh")
            .args(&words)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        (ignore_failure, c)
    }

    /// A shell script that applies the unit's `ProtectSystem=strict`, `ReadWritePaths=` and
    /// `PrivateTmp=` as systemd does, then runs its arguments.
    fn sandbox(unit: &Unit) -> String {
        let mut script = String::new();
        if unit.one("PrivateTmp") == Some("yes") {
            script += "mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /var/tmp\n";
        }
        match unit.one("ProtectSystem") {
            Some("strict") => {
                // Everything read-only but the API file systems, then the writable paths.
                script += "findmnt -rno TARGET | grep -Ev '^/(proc|sys|dev)(/|$)' | \
                           while read -r m; do mount -o remount,bind,ro \"$m\" 2>/dev/null || true; done\n";
                for path in unit
                    .all("ReadWritePaths")
                    .iter()
                    .flat_map(|v| v.split_whitespace())
                {
                    let (optional, path) = match path.strip_prefix('-') {
                        Some(p) => (true, p),
                        None => (false, path),
                    };
                    let bind =
                        format!("mount --bind {path} {path} && mount -o remount,bind,rw {path}");
                    script += &if optional {
                        format!("if [ -e {path} ]; then {bind}; fi\n")
                    } else {
                        format!("{bind}\n")
                    };
                }
            }
            None | Some("no") => {}
            Some(other) => panic!("{}: ProtectSystem={other} is not emulated", unit.name),
        }
        script + "exec \"$@\"\n"
    }

    fn start_one(&mut self, unit: &Unit) {
        assert!(
            unit.one("User").is_none(),
            "{}: User= is not emulated",
            unit.name
        );
        let env = self.environment(unit);
        for pre in unit.all("ExecStartPre") {
            let (ignore, mut c) = self.command(unit, pre, &env);
            let out = c.output().unwrap();
            assert!(
                ignore || out.status.success(),
                "{}: ExecStartPre={pre} failed: {}",
                unit.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}.log", unit.name)))
            .unwrap();
        let start = unit.one("ExecStart").expect("ExecStart");
        let (_, mut c) = self.command(unit, start, &env);
        let notify = unit.one("Type") == Some("notify");
        // Where systemd's own notify socket is: under /run, which PrivateTmp does not hide.
        let inside = format!("/run/test-systemd/{}.notify", unit.name);
        let socket_path = self.host.path(&inside);
        std::fs::create_dir_all(socket_path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&socket_path);
        let socket = notify.then(|| {
            let sock = UnixDatagram::bind(&socket_path).unwrap();
            // Like systemd's socket: a service that dropped its privileges still reports.
            std::fs::set_permissions(
                &socket_path,
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )
            .unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            c.env("NOTIFY_SOCKET", &inside);
            sock
        });
        let child = c
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut service = Kill(child);
        if let Some(sock) = socket {
            // systemd waits for READY=1 before it starts the units ordered after this one.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 4096];
            loop {
                let ready = sock.recv(&mut buf).is_ok_and(|n| {
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1")
                });
                if ready {
                    break;
                }
                if let Ok(Some(status)) = service.0.try_wait() {
                    panic!(
                        "{} exited before it was ready ({status}): {}",
                        unit.name,
                        self.journal(&unit.name)
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not report READY=1: {}",
                    unit.name,
                    self.journal(&unit.name)
                );
            }
        } else {
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                service.0.try_wait().unwrap().is_none(),
                "{} exited at start: {}",
                unit.name,
                self.journal(&unit.name)
            );
        }
        self.running.insert(unit.name.clone(), service);
    }

    fn stop(&mut self, unit: &str) {
        self.running.remove(unit);
    }

    /// A reboot: every service stopped, the journals and Mosquitto's log emptied, the enabled
    /// units started in systemd's order (whatever order they were enabled in). The units.
    fn boot(&mut self) -> Vec<String> {
        self.running.clear();
        std::fs::remove_dir_all(&self.logs).unwrap();
        std::fs::create_dir_all(&self.logs).unwrap();
        std::fs::write(self.host.path("/var/log/mosquitto/mosquitto.log"), "").unwrap();
        let mut units = self.enabled.clone();
        units.sort();
        self.start(&units);
        units
    }
}

/// Whether `device` (a bundle directory named after the device) can connect to the broker by
/// its name, verifying its certificate, and publish on its telemetry topic.
fn publish(host: &Host, device: &Path) -> bool {
    let id = device.file_name().unwrap().to_str().unwrap();
    host.command("mosquitto_pub")
        .args(["-h", "mqtt-1.plant.example", "-p", "8883"])
        .args(["--cafile", s(&device.join("ca.pem"))])
        .args(["--cert", s(&device.join("cert.pem"))])
        .args(["--key", s(&device.join("key.pem"))])
        .args([
            "-t",
            &format!("plant/{id}/telemetry/t"),
            "-m",
            "hello",
            "-q",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub is installed (scripts/test.sh installs mosquitto-clients)")
        .success()
}

/// A device that stays subscribed; its debug output has one line per packet.
fn subscribe(host: &Host, device: &Path) -> (Kill, PathBuf) {
    let id = device.file_name().unwrap().to_str().unwrap();
    let log = device.with_extension("sub.log");
    let process = host
        .command("stdbuf")
        .args(["-oL", "mosquitto_sub", "-d"])
        .args(["-h", "mqtt-1.plant.example", "-p", "8883"])
        .args(["--cafile", s(&device.join("ca.pem"))])
        .args(["--cert", s(&device.join("cert.pem"))])
        .args(["--key", s(&device.join("key.pem"))])
        .args(["-t", &format!("plant/{id}/commands/#")])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Kill(process), log)
}

/// The serial of the first certificate in a PEM file.
fn serial_of(file: &Path) -> String {
    hallmark_tests::openssl(&["x509", "-in", s(file), "-noout", "-serial"])
        .trim()
        .to_lowercase()
}

/// The serial of the certificate the broker presents now.
fn served_serial(host: &Host, device: &Path) -> String {
    let out = host
        .command("openssl")
        .args(["s_client", "-connect", "mqtt-1.plant.example:8883"])
        .args(["-servername", "mqtt-1.plant.example"])
        .args(["-CAfile", s(&device.join("ca.pem"))])
        .args(["-cert", s(&device.join("cert.pem"))])
        .args(["-key", s(&device.join("key.pem"))])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let pem_start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a server certificate");
    let pem_end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
    let file = device.with_extension("served.pem");
    std::fs::write(&file, &text[pem_start..pem_end]).unwrap();
    serial_of(&file)
}

/// Lines of `log` that report an error.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("error") || l.contains("not applied") || l.contains("not reloading")
        })
        .collect()
}

/// The uid and gid (effective) of process `pid`.
fn ids_of(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| -> u32 {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("Uid:"), field("Gid:"))
}

#[test]
fn the_guide_sets_up_debians_mosquitto_and_the_broker_survives_renewals_and_revocations() {
    let host = Host::new();
    host.install_debian_mosquitto();
    let work = host.work.path().to_owned();

    // The CA, somewhere on the plant network: here on the host's loopback under its name.
    std::fs::write(
        work.join("ca.toml"),
        // Renewals back to back, as the test makes them, allowed for the broker.
        "server_names = [\"ca.plant.example\"]\ncrl_base_url = \"http://ca.plant.example:9080\"\n\
         [profiles.broker]\nmin_renewal_interval = \"0s\"\n",
    )
    .unwrap();
    let mut ca_command = host.command(bin("hallmark-ca"));
    ca_command.stdin(Stdio::null());
    let ca = CaProcess::start_through(
        ca_command,
        &work.join("ca-data"),
        ("127.0.0.1:9443", "127.0.0.1:9080"),
        &["--config", s(&work.join("ca.toml"))],
    );
    let admin = |args: &[&str]| -> Output {
        host.command(bin("hallmark"))
            .args(args)
            .envs(ca.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    };

    // The admin's working directory holds Hallmark's package, as the guide's apt line expects.
    let admin_dir = work.join("admin");
    std::fs::create_dir_all(&admin_dir).unwrap();
    let package = hallmark_tests::debian::package(&work.join("package"));
    std::fs::copy(&package, admin_dir.join(package.file_name().unwrap())).unwrap();

    // Every command of the guide, in order, as root on the broker host with the admin's
    // variables set; the systemctl lines go to the emulated systemd.
    let mut services = Services::new(&host);
    let blocks = guide_blocks();
    assert!(blocks.len() >= 5, "the guide's shell blocks: {blocks:?}");
    let mut renewal = None;
    for (heading, block) in &blocks {
        if heading.starts_with("Renewing") {
            renewal = Some(block.clone());
            continue;
        }
        let systemctl = block
            .lines()
            .any(|l| l.trim_start().starts_with("systemctl"));
        if systemctl {
            assert!(
                block
                    .lines()
                    .all(|l| l.trim_start().starts_with("systemctl")),
                "a block with systemctl lines holds only those: {block}"
            );
            block.lines().for_each(|l| services.systemctl(l.trim()));
            continue;
        }
        let out = host
            .command_in(&admin_dir, "sh")
            .args(["-ec", block])
            .envs(ca.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "guide block under {heading:?} failed:\n{block}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let renewal = renewal.expect("the guide shows how to renew the broker's certificate now");

    // Mosquitto runs as Debian's service runs it: started as root, serving as `mosquitto`.
    let broker_pid = services.main_pid("mosquitto.service");
    let mosquitto = nix::unistd::User::from_name("mosquitto").unwrap().unwrap();
    assert_eq!(
        ids_of(broker_pid).0,
        mosquitto.uid.as_raw(),
        "Mosquitto dropped to mosquitto"
    );
    let key = "/etc/mosquitto/hallmark/broker/key.pem";
    let meta = std::fs::metadata(host.path(key)).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, mosquitto.gid.as_raw(), 0o640),
        "the broker's key as the guide issues it"
    );

    // Devices connect over mutual TLS, verifying the broker by its name.
    let devices = work.join("devices");
    for d in ["sensor-1", "sensor-2", "sensor-3"] {
        ok(&admin(&[
            "cert",
            "issue",
            "--device",
            d,
            "--profile",
            "sensor",
            "--zone",
            "field",
            "--generate-key",
            "--out",
            s(&devices.join(d)),
        ]));
    }
    let dev = |d: &str| devices.join(d);
    for d in ["sensor-1", "sensor-2", "sensor-3"] {
        assert!(publish(&host, &dev(d)), "{d} connects");
    }
    let agent = "hallmark-broker-sync.service";
    assert!(
        error_lines(&services.journal(agent)).is_empty()
            && error_lines(&host.read("/var/log/mosquitto/mosquitto.log")).is_empty(),
        "set-up logged errors: agent:\n{}\nmosquitto:\n{}",
        services.journal(agent),
        host.read("/var/log/mosquitto/mosquitto.log")
    );

    // The broker's certificate renewed in place twice, with the guide's command: each time
    // the broker serves the new certificate and keeps accepting devices.
    let chain = host.path("/etc/mosquitto/hallmark/broker/chain.pem");
    let mut serials = vec![serial_of(&chain)];
    assert_eq!(served_serial(&host, &dev("sensor-1")), serials[0]);
    for round in 1..=2 {
        let out = host.command("sh").args(["-ec", &renewal]).output().unwrap();
        let said = ok(&out);
        assert!(said.contains("reloaded"), "renewal {round}: {said}");
        serials.push(serial_of(&chain));
        assert_ne!(
            serials[round],
            serials[round - 1],
            "renewal {round} wrote a new certificate"
        );
        let meta = std::fs::metadata(host.path(key)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (0, mosquitto.gid.as_raw(), 0o640),
            "renewal {round} kept the key's owner, group and mode"
        );
        wait_until(
            &format!("the broker serves renewal {round}'s certificate"),
            Duration::from_secs(5),
            || served_serial(&host, &dev("sensor-1")) == serials[round],
        );
        assert!(publish(&host, &dev("sensor-1")), "after renewal {round}");
    }

    // A device revoked: refused at its next connection, its open session cut; the others stay.
    let (_sub, sub_log) = subscribe(&host, &dev("sensor-2"));
    wait_until("sensor-2 subscribed", Duration::from_secs(5), || {
        std::fs::read_to_string(&sub_log)
            .unwrap_or_default()
            .contains("SUBACK")
    });
    let revoked_at = Instant::now();
    ok(&admin(&[
        "revoke",
        "--device",
        "sensor-2",
        "--reason",
        "key-compromise",
    ]));
    let refused = wait_until("sensor-2 refused", Duration::from_secs(5), || {
        !publish(&host, &dev("sensor-2"))
    });
    wait_until("sensor-2's session cut", Duration::from_secs(5), || {
        std::fs::read_to_string(&sub_log)
            .unwrap_or_default()
            .matches("sending CONNECT")
            .count()
            > 1
            || std::fs::read_to_string(&sub_log)
                .unwrap_or_default()
                .contains("Connection Refused")
    });
    println!(
        "sensor-2 refused {refused:?} after the revocation, session cut {:?} after",
        revoked_at.elapsed()
    );
    assert!(publish(&host, &dev("sensor-1")) && publish(&host, &dev("sensor-3")));
    assert!(
        error_lines(&services.journal(agent)).is_empty(),
        "{}",
        services.journal(agent)
    );

    // The admin slips: the broker's key readable by root only. The next revocation must not
    // reload a broker that would then fail to load its key.
    host.command("chmod").args(["0600", key]).status().unwrap();
    ok(&admin(&[
        "revoke",
        "--device",
        "sensor-3",
        "--reason",
        "key-compromise",
    ]));
    wait_until(
        "the agent refuses to reload",
        Duration::from_secs(10),
        || services.journal(agent).contains("NOT RELOADING"),
    );
    let journal = services.journal(agent);
    assert!(
        journal.contains(&format!(
            "mosquitto cannot read {key} (owner root, group mosquitto, mode 0600)"
        )),
        "the agent says why: {journal}"
    );
    // The broker keeps serving with what it loaded: valid devices connect.
    assert!(publish(&host, &dev("sensor-1")), "the broker keeps serving");
    assert!(
        host.read("/var/log/mosquitto/mosquitto.log")
            .lines()
            .all(|l| !l.contains("Unable to load")),
        "{}",
        host.read("/var/log/mosquitto/mosquitto.log")
    );
    // A renewal in that state is written (the old certificate is on its way out) but does not
    // reload either, and says why.
    let out = host.command("sh").args(["-ec", &renewal]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("renewed, but not reloaded")
            && said.contains("mosquitto cannot read"),
        "{said}"
    );
    assert!(publish(&host, &dev("sensor-1")), "the broker keeps serving");
    // Fixed: the agent reloads on its next round, the revoked device is refused.
    host.command("chmod").args(["0640", key]).status().unwrap();
    wait_until(
        "sensor-3 refused once the key is readable",
        Duration::from_secs(20),
        || !publish(&host, &dev("sensor-3")),
    );
    wait_until(
        "the broker serves the renewal made while it could not reload",
        Duration::from_secs(5),
        || served_serial(&host, &dev("sensor-1")) == serial_of(&chain),
    );
    assert!(publish(&host, &dev("sensor-1")));

    // A boot: everything stopped, then started as systemd orders it. The agent comes first and
    // is ready once the files are in place; nothing logs an error.
    let enabled = services.boot();
    assert!(enabled.len() >= 4, "booted {enabled:?}");
    wait_until(
        "devices connect after the boot",
        Duration::from_secs(10),
        || publish(&host, &dev("sensor-1")),
    );
    for unit in &enabled {
        let journal = if unit == "mosquitto.service" {
            host.read("/var/log/mosquitto/mosquitto.log")
        } else {
            services.journal(unit)
        };
        assert!(
            error_lines(&journal).is_empty(),
            "{unit} at boot:\n{journal}"
        );
    }
    assert!(!publish(&host, &dev("sensor-2")) && !publish(&host, &dev("sensor-3")));
    drop(services);
    drop(ca);
}
