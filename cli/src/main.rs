//! `hallmark`: the command line of operators, technicians, devices and broker hosts.

mod cert;
mod client;
mod output;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hallmark", version, about = "Hallmark device identity CLI")]
struct Cli {
    #[command(flatten)]
    conn: client::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Issue, list and show certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Create operator credentials (admin, provisioner, broker-agent).
    #[command(subcommand)]
    Credential(cert::CredentialCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cert(c) => cert::run(&cli.conn, c).await,
        Command::Credential(c) => cert::run_credential(&cli.conn, c).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
