//! `hallmark crl show` and `hallmark crl fetch`: the CRLs the CA publishes right now.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::revocation_client::RevocationClient;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::client::{Connection, status_error};
use crate::output::{self, Format};

/// `hallmark crl`.
#[derive(Subcommand, Debug)]
pub enum CrlCommand {
    /// Show the CRL of every valid issuing CA: issuer, number, dates, entries.
    Show(ShowArgs),
    /// Write the CRLs of every valid issuing CA into one PEM file (atomically).
    Fetch(FetchArgs),
}

/// `hallmark crl show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Output format (JSON lists every entry).
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// `hallmark crl fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The PEM file to write.
    #[arg(long)]
    out: PathBuf,
}

async fn get(conn: &Connection) -> Result<pb::CrlSet> {
    let mut client = RevocationClient::new(conn.channel().await?);
    Ok(client
        .get_crl(pb::GetCrlRequest {})
        .await
        .map_err(status_error)?
        .into_inner())
}

fn entries(der: &[u8]) -> Vec<serde_json::Value> {
    let Ok((_, crl)) = CertificateRevocationList::from_der(der) else {
        return Vec::new();
    };
    crl.iter_revoked_certificates()
        .map(|r| {
            serde_json::json!({
                "serial": hex::encode(r.raw_serial()),
                "revoked_at": output::time_text(r.revocation_date.timestamp()),
                "reason": r.reason_code().map(|(_, c)| c.to_string()),
            })
        })
        .collect()
}

/// Runs `hallmark crl ...`.
pub async fn run(conn: &Connection, cmd: CrlCommand) -> Result<()> {
    let set = get(conn).await?;
    match cmd {
        CrlCommand::Show(a) => match a.format {
            Format::Json => {
                let v: Vec<_> = set
                    .crls
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "issuer_id": c.issuer_id,
                            "number": c.number,
                            "this_update": output::time_text(c.this_update),
                            "next_update": output::time_text(c.next_update),
                            "entries": entries(&c.der),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = set
                    .crls
                    .iter()
                    .map(|c| {
                        vec![
                            c.issuer_id.clone(),
                            c.number.to_string(),
                            output::time_text(c.this_update),
                            output::time_text(c.next_update),
                            c.entries.to_string(),
                        ]
                    })
                    .collect();
                output::print_table(
                    &["ISSUER", "NUMBER", "THIS_UPDATE", "NEXT_UPDATE", "ENTRIES"],
                    &rows,
                );
            }
        },
        CrlCommand::Fetch(a) => {
            let pem: String = set
                .crls
                .iter()
                .map(|c| {
                    pem::encode_config(
                        &pem::Pem::new("X509 CRL", c.der.clone()),
                        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                    )
                })
                .collect();
            hallmark_ca::fsutil::write_atomic(&a.out, pem.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", a.out.display()))?;
            println!("wrote {} CRLs to {}", set.crls.len(), a.out.display());
        }
    }
    Ok(())
}
