//! `hallmark device ...`, `hallmark token ...` and `hallmark manufacturer ...`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use hallmark_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{self, Format};
use hallmark_core::client::{Connection, status_error};

/// Rows per `Import` call.
const IMPORT_CHUNK: usize = 500;

/// `hallmark device`.
#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Register one device.
    Register(RegisterArgs),
    /// Register devices from a CSV file (header: id,zone,profile[,lot,model,serial_number,manufacturer]).
    Import(ImportArgs),
    /// List devices.
    List(ListArgs),
    /// Show one device.
    Show(IdArgs),
    /// Suspend a device: its certificates go on hold (certificateHold, on the CRL, so brokers
    /// refuse them) and it cannot enroll or obtain certificates until resumed.
    Suspend(IdArgs),
    /// Resume a suspended device: releases the holds its suspension made (holds made with
    /// `hallmark suspend` stay until `hallmark resume`).
    Resume(IdArgs),
    /// Decommission a device: revokes its certificates (cessationOfOperation). Final unless
    /// re-admitted.
    Decommission(IdArgs),
    /// Re-admit a device: a decommissioned one becomes active, and a device whose certificates
    /// were revoked may enroll with its IDevID again (refused until then). Audited.
    Readmit(IdArgs),
}

/// `hallmark device register`.
#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Device id.
    id: String,
    /// Zone (network segment).
    #[arg(long)]
    zone: String,
    /// Certificate profile (sensor, gateway, broker, ...).
    #[arg(long)]
    profile: String,
    /// Production lot.
    #[arg(long)]
    lot: Option<String>,
    /// Manufacturer serial number (as in its IDevID subject).
    #[arg(long)]
    serial_number: Option<String>,
    /// Device model.
    #[arg(long)]
    model: Option<String>,
    /// Manufacturer (its `hallmark manufacturer` name) the serial number belongs to; without
    /// it, the first manufacturer whose IDevID presents the serial number is bound.
    #[arg(long)]
    manufacturer: Option<String>,
}

/// `hallmark device import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// CSV file.
    file: PathBuf,
}

/// `hallmark device list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this zone.
    #[arg(long)]
    zone: Option<String>,
    /// Only this profile.
    #[arg(long)]
    profile: Option<String>,
    /// Only this lot.
    #[arg(long)]
    lot: Option<String>,
    /// Only this status.
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// Device status values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    /// May enroll.
    Active,
    /// Barred for now.
    Suspended,
    /// Retired.
    Decommissioned,
}

/// A device id argument.
#[derive(Args, Debug)]
pub struct IdArgs {
    /// Device id.
    id: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

fn status_text(s: i32) -> &'static str {
    match pb::DeviceStatus::try_from(s) {
        Ok(pb::DeviceStatus::Active) => "active",
        Ok(pb::DeviceStatus::Suspended) => "suspended",
        Ok(pb::DeviceStatus::Decommissioned) => "decommissioned",
        _ => "unknown",
    }
}

fn device_json(d: &pb::Device) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "zone": d.zone,
        "profile": d.profile,
        "lot": d.lot,
        "model": d.model,
        "serial_number": d.serial_number,
        "manufacturer": d.manufacturer,
        "status": status_text(d.status),
        "created_at": output::time_text(d.created_at),
        "updated_at": output::time_text(d.updated_at),
    })
}

fn print_devices(devices: &[pb::Device], format: Format) -> Result<()> {
    match format {
        Format::Json => {
            let v: Vec<_> = devices.iter().map(device_json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = devices
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.zone.clone(),
                        d.profile.clone(),
                        d.lot.clone(),
                        d.serial_number.clone(),
                        status_text(d.status).to_owned(),
                    ]
                })
                .collect();
            output::print_table(
                &["ID", "ZONE", "PROFILE", "LOT", "SERIAL_NUMBER", "STATUS"],
                &rows,
            );
        }
    }
    Ok(())
}

/// A CSV row and the line it came from.
struct CsvRow {
    line: u64,
    row: pb::RegisterDeviceRequest,
}

/// A refused row: its line number in the file and why.
type RowError = (u64, String);

/// Reads the CSV file. Rows that cannot be read become [`RowError`]s.
fn read_csv(path: &PathBuf) -> Result<(Vec<CsvRow>, Vec<RowError>)> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("reading the header line of {}", path.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(id), Some(zone), Some(profile)) = (col("id"), col("zone"), col("profile")) else {
        bail!(
            "{}: the first line must name the columns, at least id,zone,profile \
             (optional: lot,model,serial_number); found `{}`",
            path.display(),
            headers.iter().collect::<Vec<_>>().join(",")
        );
    };
    let (lot, model, serial) = (col("lot"), col("model"), col("serial_number"));
    let manufacturer = col("manufacturer");
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line());
                if r.iter().all(str::is_empty) {
                    continue;
                }
                // Missing trailing optional fields are fine; extra ones mean a shifted row.
                if r.len() > headers.len() {
                    errors.push((
                        line,
                        format!("{} fields, the header has {}", r.len(), headers.len()),
                    ));
                    continue;
                }
                let get = |i: Option<usize>| i.and_then(|i| r.get(i)).unwrap_or("").to_owned();
                rows.push(CsvRow {
                    line,
                    row: pb::RegisterDeviceRequest {
                        id: get(Some(id)),
                        zone: get(Some(zone)),
                        profile: get(Some(profile)),
                        lot: get(lot),
                        model: get(model),
                        serial_number: get(serial),
                        manufacturer: get(manufacturer),
                    },
                });
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push((line, format!("unreadable row: {e}")));
            }
        }
    }
    Ok((rows, errors))
}

fn status_arg(s: Option<StatusArg>) -> pb::DeviceStatus {
    match s {
        None => pb::DeviceStatus::Unspecified,
        Some(StatusArg::Active) => pb::DeviceStatus::Active,
        Some(StatusArg::Suspended) => pb::DeviceStatus::Suspended,
        Some(StatusArg::Decommissioned) => pb::DeviceStatus::Decommissioned,
    }
}

/// Runs `hallmark device ...`.
pub async fn run(conn: &Connection, cmd: DeviceCommand) -> Result<()> {
    let mut client = conn.devices().await?;
    match cmd {
        DeviceCommand::Register(a) => {
            let d = client
                .register(pb::RegisterDeviceRequest {
                    id: a.id,
                    zone: a.zone,
                    profile: a.profile,
                    lot: a.lot.unwrap_or_default(),
                    model: a.model.unwrap_or_default(),
                    serial_number: a.serial_number.unwrap_or_default(),
                    manufacturer: a.manufacturer.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "registered {} (zone {}, profile {})",
                d.id, d.zone, d.profile
            );
        }
        DeviceCommand::Import(a) => {
            let (rows, mut errors) = read_csv(&a.file)?;
            let bar = ProgressBar::new(rows.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} rows {elapsed} ({eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let mut imported = 0u64;
            for chunk in rows.chunks(IMPORT_CHUNK) {
                let resp = client
                    .import(pb::ImportDevicesRequest {
                        devices: chunk.iter().map(|r| r.row.clone()).collect(),
                    })
                    .await
                    .map_err(|s| {
                        bar.abandon();
                        status_error(s)
                    })?
                    .into_inner();
                imported += u64::from(resp.imported);
                for e in resp.errors {
                    let line = chunk.get(e.index as usize).map_or(0, |r| r.line);
                    errors.push((line, e.message));
                }
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            errors.sort();
            for (line, message) in &errors {
                eprintln!("{}: line {line}: {message}", a.file.display());
            }
            println!("imported {imported} devices; {} rows refused", errors.len());
            if !errors.is_empty() {
                bail!(
                    "{} rows refused (the valid rows were imported)",
                    errors.len()
                );
            }
        }
        DeviceCommand::List(a) => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list(pb::ListDevicesRequest {
                        zone: a.zone.clone().unwrap_or_default(),
                        profile: a.profile.clone().unwrap_or_default(),
                        lot: a.lot.clone().unwrap_or_default(),
                        status: status_arg(a.status) as i32,
                        page_size: 1000,
                        page_token: token.clone(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                all.extend(page.devices);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            print_devices(&all, a.format)?;
        }
        DeviceCommand::Show(a) => {
            let d = client
                .get(pb::GetDeviceRequest { id: a.id })
                .await
                .map_err(status_error)?
                .into_inner();
            print_devices(&[d], a.format)?;
        }
        DeviceCommand::Suspend(a) => {
            set_status(&mut client, a, pb::DeviceStatus::Suspended).await?
        }
        DeviceCommand::Resume(a) => set_status(&mut client, a, pb::DeviceStatus::Active).await?,
        DeviceCommand::Decommission(a) => {
            set_status(&mut client, a, pb::DeviceStatus::Decommissioned).await?
        }
        DeviceCommand::Readmit(a) => {
            let d = client
                .readmit(pb::ReadmitDeviceRequest { id: a.id })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "device {} is re-admitted ({}); it may enroll with its IDevID again",
                d.id,
                status_text(d.status)
            );
        }
    }
    Ok(())
}

async fn set_status(
    client: &mut pb::devices_client::DevicesClient<tonic::transport::Channel>,
    a: IdArgs,
    status: pb::DeviceStatus,
) -> Result<()> {
    let d = client
        .set_status(pb::SetDeviceStatusRequest {
            id: a.id,
            status: status as i32,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let what = match status {
        pb::DeviceStatus::Suspended => "its certificates are on hold until it is resumed",
        pb::DeviceStatus::Active => "the holds its suspension made are released",
        _ => "its certificates are revoked (cessationOfOperation)",
    };
    println!("device {} is {}; {what}", d.id, status_text(d.status));
    Ok(())
}

/// `hallmark token`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a one-time enrollment token for a registered device (printed once).
    Create(TokenCreateArgs),
    /// Revoke every unused token of a device.
    Revoke(TokenRevokeArgs),
}

/// `hallmark token create`.
#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// Device id.
    #[arg(long)]
    device: String,
    /// Lifetime, e.g. 24h or 7d (at most 30d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

/// `hallmark token revoke`.
#[derive(Args, Debug)]
pub struct TokenRevokeArgs {
    /// Device id.
    #[arg(long)]
    device: String,
}

/// Runs `hallmark token ...`.
pub async fn run_token(conn: &Connection, cmd: TokenCommand) -> Result<()> {
    let mut client = conn.enrollment().await?;
    match cmd {
        TokenCommand::Create(a) => {
            let t = client
                .create_token(pb::CreateTokenRequest {
                    device_id: a.device,
                    ttl_seconds: a.ttl.as_secs(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            // The token alone on stdout (for scripts); the rest on stderr.
            println!("{}", t.token);
            eprintln!(
                "one-time enrollment token for {} (profile {}), valid until {}; it is shown only now",
                t.device_id,
                t.profile,
                output::time_text(t.expires_at)
            );
        }
        TokenCommand::Revoke(a) => {
            let r = client
                .revoke_tokens(pb::RevokeTokensRequest {
                    device_id: a.device.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("revoked {} unused tokens of {}", r.revoked, a.device);
        }
    }
    Ok(())
}

/// `hallmark manufacturer`.
#[derive(Subcommand, Debug)]
pub enum ManufacturerCommand {
    /// Register a manufacturer CA whose IDevIDs may enroll.
    Add(ManufacturerAddArgs),
    /// List manufacturer CAs.
    List(ManufacturerListArgs),
}

/// `hallmark manufacturer add`.
#[derive(Args, Debug)]
pub struct ManufacturerAddArgs {
    /// Short name (prefixes the ids of self-registered devices).
    #[arg(long)]
    name: String,
    /// The manufacturer CA certificate (PEM or DER).
    #[arg(long)]
    ca: PathBuf,
    /// Zone its devices get.
    #[arg(long)]
    zone: String,
    /// Profile its devices get.
    #[arg(long)]
    profile: String,
    /// Let devices with unknown serial numbers register themselves on first enrollment.
    #[arg(long)]
    auto_register: bool,
}

/// `hallmark manufacturer list`.
#[derive(Args, Debug)]
pub struct ManufacturerListArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// Runs `hallmark manufacturer ...`.
pub async fn run_manufacturer(conn: &Connection, cmd: ManufacturerCommand) -> Result<()> {
    let mut client = conn.enrollment().await?;
    match cmd {
        ManufacturerCommand::Add(a) => {
            let ca = std::fs::read(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
            let m = client
                .register_manufacturer_ca(pb::RegisterManufacturerCaRequest {
                    name: a.name,
                    ca_cert: ca,
                    zone: a.zone,
                    profile: a.profile,
                    auto_register: a.auto_register,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "registered manufacturer {} ({}): devices get zone {}, profile {}{}",
                m.name,
                m.subject,
                m.zone,
                m.profile,
                if m.auto_register {
                    ", unknown serial numbers self-register"
                } else {
                    ""
                }
            );
        }
        ManufacturerCommand::List(a) => {
            let list = client
                .list_manufacturer_cas(pb::ListManufacturerCasRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .manufacturer_cas;
            match a.format {
                Format::Json => {
                    let v: Vec<_> = list
                        .iter()
                        .map(|m| {
                            serde_json::json!({"id": m.id, "name": m.name, "subject": m.subject, "zone": m.zone,
                                "profile": m.profile, "auto_register": m.auto_register, "not_after": output::time_text(m.not_after)})
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|m| {
                            vec![
                                m.name.clone(),
                                m.zone.clone(),
                                m.profile.clone(),
                                m.auto_register.to_string(),
                                m.subject.clone(),
                            ]
                        })
                        .collect();
                    output::print_table(
                        &["NAME", "ZONE", "PROFILE", "AUTO_REGISTER", "SUBJECT"],
                        &rows,
                    );
                }
            }
        }
    }
    Ok(())
}
