//! `hallmark-provbench`: factory provisioning rate. Starts a CA as its own process, makes a
//! station credential, writes a lot of `--devices` devices and runs the station exactly as a
//! factory engineer would (`hallmark-provisioner run --lot LOT --target TARGET --workers N`),
//! into a `dir` image or into SoftHSM2 tokens (one per device, as each device's secure element).
//! Prints devices per minute, the CA's CPU per device and the machine; asserts nothing but
//! that every device was provisioned.
//!
//! ```sh
//! target/release/hallmark-provbench --target dir --devices 5000
//! target/release/hallmark-provbench --target pkcs11 --devices 200
//! ```

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use hallmark_tests::bench::{machine, process_usage};
use hallmark_tests::{CaProcess, bin, ok, s};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// A file-system image: one directory per device (key, certificate, chain, trust bundle).
    Dir,
    /// One SoftHSM2 token per device: the key is generated inside it and never leaves.
    Pkcs11,
}

#[derive(Parser)]
#[command(about = "Factory provisioning figures")]
struct Args {
    /// Where the identities go.
    #[arg(long, value_enum, default_value_t = Kind::Dir)]
    target: Kind,
    /// Devices in the lot.
    #[arg(long, default_value_t = 5000)]
    devices: usize,
    /// Devices the station provisions at once (`--workers`).
    #[arg(long, default_value_t = 16)]
    workers: usize,
}

fn main() {
    let args = Args::parse();
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    let ca = CaProcess::start(&dir.join("data"), &[]);
    let station = dir.join("station");
    ca.provisioner_credential("station-1", "field", "sensor", &station);

    let lot = dir.join("lot-bench.csv");
    let mut manifest = String::from("device_id,zone,profile,model,serial_number\n");
    for i in 0..args.devices {
        manifest.push_str(&format!("dev-{i:07},field,sensor,TX-100,SN{i:07}\n"));
    }
    std::fs::write(&lot, manifest).expect("write the lot");

    let mut run = Command::new(bin("hallmark-provisioner"));
    run.env_clear()
        .env("HALLMARK_ENDPOINT", ca.var("HALLMARK_ENDPOINT"))
        .env("HALLMARK_CA", station.join("ca.pem"))
        .env("HALLMARK_CERT", station.join("cert.pem"))
        .env("HALLMARK_KEY", station.join("key.pem"));
    let target = match args.target {
        Kind::Dir => format!("dir:{}", s(&dir.join("image"))),
        Kind::Pkcs11 => {
            let conf = softhsm_tokens(dir, args.devices);
            run.env("SOFTHSM2_CONF", conf);
            format!("pkcs11:{SOFTHSM}?pin-file={}", s(&dir.join("pin")))
        }
    };
    run.args(["run", "--lot", s(&lot), "--target", &target])
        .args(["--workers", &args.workers.to_string()]);

    let (ca_cpu0, _) = process_usage(ca.pid());
    let start = Instant::now();
    let out = run.output().expect("run hallmark-provisioner");
    let elapsed = start.elapsed().as_secs_f64();
    let (ca_cpu1, ca_rss) = process_usage(ca.pid());
    let shown = ok(&out);
    let summary = format!("{} devices: {} ok", args.devices, args.devices);
    assert!(
        shown.contains(&summary),
        "not every device was provisioned:\n{shown}"
    );

    println!("machine: {}", machine());
    println!(
        "target {}: {} devices with {} workers in {elapsed:.2} s: {:.0} devices/min \
         (the station's own line: {})",
        match args.target {
            Kind::Dir => "dir",
            Kind::Pkcs11 => "pkcs11 (SoftHSM2, one token per device)",
        },
        args.devices,
        args.workers,
        args.devices as f64 * 60.0 / elapsed,
        shown
            .lines()
            .find(|l| l.contains("devices/min"))
            .unwrap_or("none")
            .trim()
    );
    println!(
        "CA process: {:.2} CPU-ms per device; peak RSS {ca_rss:.0} MiB",
        (ca_cpu1 - ca_cpu0) * 1e3 / args.devices as f64
    );
}

/// One initialised SoftHSM2 token per device (labels `dev-NNNNNNN`, user PIN in `dir/pin`);
/// the SoftHSM2 configuration file naming their directory.
fn softhsm_tokens(dir: &Path, devices: usize) -> std::path::PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).expect("token dir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            s(&tokens)
        ),
    )
    .expect("write softhsm2.conf");
    let pin = "483920";
    std::fs::write(dir.join("pin"), format!("{pin}\n")).expect("write the PIN file");
    for i in 0..devices {
        let label = format!("dev-{i:07}");
        let init = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", &label])
            .args(["--pin", pin, "--so-pin", "11223344"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util (Debian package softhsm2)");
        assert!(
            init.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    conf
}
