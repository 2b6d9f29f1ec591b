//! `hallmark-device-sim`: a simulated sensor on a serial line, speaking the station protocol
//! (`docs/serial-protocol.md`). It listens on a TCP address or opens a pty, prints where it can
//! be reached (`listening on ADDR` or `pty PATH`) and serves the station until killed. Its key
//! never leaves it.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hallmark_provisioner::serial::device::SimulatedDevice;

#[derive(Parser)]
#[command(
    name = "hallmark-device-sim",
    version,
    about = "Simulated sensor for the factory station"
)]
struct Args {
    /// Directory the device keeps its identity in.
    #[arg(long)]
    state: PathBuf,
    /// Manufacturer serial number it reports.
    #[arg(long)]
    serial_number: String,
    /// Model it reports.
    #[arg(long, default_value = "SIM-1")]
    model: String,
    /// Listen on this TCP address (e.g. 127.0.0.1:0).
    #[arg(long, conflicts_with = "pty")]
    listen: Option<String>,
    /// Open a pseudo-terminal and serve its other end.
    #[arg(long)]
    pty: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut device = SimulatedDevice::new(args.state, args.serial_number, args.model);
    let mut out = std::io::stdout();
    if args.pty {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).context("openpt")?;
        grantpt(&master).context("grantpt")?;
        unlockpt(&master).context("unlockpt")?;
        let name = ptsname(&master, Vec::new()).context("ptsname")?;
        let path = name.to_str().context("pty name")?.to_owned();
        // Keep the other end open ourselves: without it reads on the master fail between two
        // station connections. Raw mode so that frames pass unchanged.
        let keep = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .context("opening the pty")?;
        let mut t = rustix::termios::tcgetattr(&keep)?;
        t.make_raw();
        rustix::termios::tcsetattr(&keep, rustix::termios::OptionalActions::Now, &t)?;
        writeln!(out, "pty {path}")?;
        out.flush()?;
        let mut line = std::fs::File::from(master);
        device.serve(&mut line)?;
        return Ok(());
    }
    let address = args.listen.as_deref().unwrap_or("127.0.0.1:0");
    let listener = TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
    writeln!(out, "listening on {}", listener.local_addr()?)?;
    out.flush()?;
    for conn in listener.incoming() {
        let mut conn = conn?;
        if let Err(e) = device.serve(&mut conn) {
            eprintln!("line error: {e}");
        }
    }
    Ok(())
}
