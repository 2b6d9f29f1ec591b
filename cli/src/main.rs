//! `hallmark`: the command line of operators, technicians, devices and broker hosts.

mod cert;
mod crl;
mod device;
mod enroll;
#[cfg(test)]
mod man_pages;
mod output;
mod revoke;
mod rotate;

use clap::{Parser, Subcommand};
use hallmark_cli::broker;
use hallmark_core::client;

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
    /// The device registry: register, import, list, suspend, resume, decommission, readmit.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// One-time enrollment tokens.
    #[command(subcommand)]
    Token(device::TokenCommand),
    /// Manufacturer CAs whose birth certificates (IDevID) may enroll.
    #[command(subcommand)]
    Manufacturer(device::ManufacturerCommand),
    /// On a device: obtain its operational certificate with a token or its IDevID.
    Enroll(enroll::EnrollArgs),
    /// Renew credential bundles with a new key: once, as a daemon, or all under a directory.
    Rotate(rotate::RotateArgs),
    /// Revoke certificates for good: by serial, device, lot, zone or profile (lot, zone and
    /// profile leave operator credentials out unless --include-operators).
    Revoke(revoke::RevokeArgs),
    /// Put certificates on hold (certificateHold), selected like `revoke`.
    Suspend(revoke::HoldArgs),
    /// Take certificates off hold (not holds made by `hallmark device suspend`).
    Resume(revoke::HoldArgs),
    /// The CRLs the CA publishes.
    #[command(subcommand)]
    Crl(crl::CrlCommand),
    /// On a broker host: keep the broker's CRL and CA files current.
    #[command(subcommand)]
    Broker(broker::BrokerCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cert(c) => cert::run(&cli.conn, c).await,
        Command::Credential(c) => cert::run_credential(&cli.conn, c).await,
        Command::Device(c) => device::run(&cli.conn, c).await,
        Command::Token(c) => device::run_token(&cli.conn, c).await,
        Command::Manufacturer(c) => device::run_manufacturer(&cli.conn, c).await,
        Command::Enroll(a) => enroll::run(&cli.conn, a).await,
        Command::Rotate(a) => rotate::run(&cli.conn, a).await,
        Command::Revoke(a) => revoke::revoke(&cli.conn, a).await,
        Command::Suspend(a) => revoke::hold(&cli.conn, a, revoke::Action::Suspend).await,
        Command::Resume(a) => revoke::hold(&cli.conn, a, revoke::Action::Resume).await,
        Command::Crl(c) => crl::run(&cli.conn, c).await,
        Command::Broker(c) => broker::run(&cli.conn, c).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_is_well_formed() {
        // Catches clashing flags (e.g. a subcommand's --ca against a global one) in every
        // subcommand, not only the ones a test happens to run.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
