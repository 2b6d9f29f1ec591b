//! `hallmark-provisioner`: the factory station's command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hallmark_core::client::Connection;
use hallmark_provisioner::journal::Journal;
use hallmark_provisioner::manifest::Manifest;
use hallmark_provisioner::report::Outcome;
use hallmark_provisioner::station::Station;
use hallmark_provisioner::target;

#[derive(Parser)]
#[command(
    name = "hallmark-provisioner",
    version,
    about = "Hallmark factory station"
)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision a lot: every device of the manifest into the target.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The lot manifest: CSV with header device_id,zone,profile,model,serial_number (plus
    /// target-specific columns), or the same as JSON (`.json`).
    #[arg(long = "lot", value_name = "MANIFEST")]
    manifest: PathBuf,
    /// Where identities go: dir:PATH[?owner=USER&group=GROUP&key-mode=0640],
    /// pkcs12:PATH[?password-file=FILE],
    /// pkcs11:MODULE[?token=LABEL&pin-file=FILE] or serial:[ADDR] (see the README).
    #[arg(long)]
    target: String,
    /// Devices provisioned at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// The lot's journal (default: the manifest's path with `.journal`).
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Lot id (default: the manifest's file name without extension).
    #[arg(long)]
    lot_id: Option<String>,
    /// Where the JSON lot report goes (default: the manifest's path with `.report.json`).
    #[arg(long)]
    report: Option<PathBuf>,
}

async fn run(conn: &Connection, a: RunArgs) -> anyhow::Result<bool> {
    let manifest = Manifest::read(&a.manifest, a.lot_id.as_deref())?;
    let target = target::parse(&a.target)?;
    let journal_path = a
        .journal
        .unwrap_or_else(|| a.manifest.with_extension("journal"));
    let journal = Journal::open(&journal_path, &manifest.lot_id)?;
    let report_path = a
        .report
        .unwrap_or_else(|| a.manifest.with_extension("report.json"));
    let bar = indicatif::ProgressBar::new(manifest.devices.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} lot {prefix}: {pos}/{len} [{bar:30}] {per_sec} eta {eta} {msg}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    bar.set_prefix(manifest.lot_id.clone());
    let station = Station {
        manifest,
        target: Arc::from(target),
        journal: Arc::new(journal),
        workers: a.workers,
    };
    let report = station
        .run(conn, |d| {
            if d.outcome == Outcome::Failed {
                bar.println(format!(
                    "failed: {}: {}",
                    d.device_id,
                    d.error.as_deref().unwrap_or("")
                ));
            }
            bar.inc(1);
        })
        .await?;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&report)?;
    hallmark_core::fsutil::write_atomic(&report_path, json.as_bytes(), 0o644)
        .with_context(|| format!("writing the report {}", report_path.display()))?;
    print!("{}", report.summary());
    println!("report: {}", report_path.display());
    Ok(report.failed == 0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run(&cli.conn, a).await,
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
