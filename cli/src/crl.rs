//! `hallmark crl show` and `hallmark crl fetch`: the CRLs the CA publishes right now.
//! `fetch` writes its file only with a valid, current CRL for every issuing CA of the CA's trust
//! bundle (a broker reloading an empty or incomplete CRL file would let revoked devices in or
//! refuse whole issuers), never below the CRL numbers the file already holds. The root's CRL
//! goes along when the CA publishes one and it verifies (see [`crlset`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::output::{self, Format};
use hallmark_cli::broker::{crlset, current_crls, trust_bundle_bounded};
use hallmark_core::client::Connection;

/// `hallmark crl`.
#[derive(Subcommand, Debug)]
pub enum CrlCommand {
    /// Show the CRL of every valid issuing CA and of the root (when it publishes one): issuer,
    /// number, dates, entries.
    Show(ShowArgs),
    /// Write the CRLs of every valid issuing CA (and the root's, when it publishes one) into one
    /// PEM file (atomically), only when there is a valid, current CRL for each issuing CA;
    /// otherwise the file stays as it was.
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
    match cmd {
        CrlCommand::Show(a) => show(conn, a).await,
        CrlCommand::Fetch(a) => fetch(conn, &a).await,
    }
}

/// `hallmark crl show`.
async fn show(conn: &Connection, a: ShowArgs) -> Result<()> {
    let set = current_crls(conn).await?;
    match a.format {
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
    }
    Ok(())
}

/// `hallmark crl fetch`: checks the CA's CRLs against its trust bundle and writes them.
async fn fetch(conn: &Connection, a: &FetchArgs) -> Result<()> {
    let bundle = trust_bundle_bounded(conn).await?;
    let set = current_crls(conn).await?;
    let ders: Vec<Vec<u8>> = set.crls.into_iter().map(|c| c.der).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // What the file holds already counts: a CRL is never replaced by an older one.
    let held = crlset::load(&a.out, &bundle);
    let merged = crlset::merge(&held, &ders, &bundle, false, now);
    for line in &merged.refused {
        eprintln!("{line}");
    }
    crlset::complete(&merged.crls, &bundle, now).map_err(|e| {
        anyhow::anyhow!(
            "{e}; {} was left as it was (a broker reloading an incomplete CRL file refuses \
             whole issuers, an empty one turns revocation off)",
            a.out.display()
        )
    })?;
    hallmark_core::fsutil::write_atomic(&a.out, crlset::to_pem(&merged.crls).as_bytes(), 0o644)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {} CRLs to {}", merged.crls.len(), a.out.display());
    Ok(())
}
