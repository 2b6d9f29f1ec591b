//! `hallmark revoke`, `hallmark suspend`, `hallmark resume`: one certificate or many at once
//! (a device, a lot, a zone, a profile), with a dry run. Lot, zone and profile selections
//! leave operator credentials out unless `--include-operators`.

use anyhow::Result;
use clap::{Args, ValueEnum};
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::revocation_client::RevocationClient;
use pb::revoke_request::Selector;

use crate::output::{self, Format};
use hallmark_core::client::{Connection, status_error};

/// Which certificates.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct SelectorArgs {
    /// One certificate by serial (hex).
    #[arg(long)]
    serial: Option<String>,
    /// Every certificate of a device.
    #[arg(long)]
    device: Option<String>,
    /// Every certificate of a production lot.
    #[arg(long)]
    lot: Option<String>,
    /// Every certificate of a zone (incident response: isolate a segment).
    #[arg(long)]
    zone: Option<String>,
    /// Every certificate of a profile.
    #[arg(long)]
    profile: Option<String>,
}

impl SelectorArgs {
    fn selector(&self) -> Selector {
        match (
            &self.serial,
            &self.device,
            &self.lot,
            &self.zone,
            &self.profile,
        ) {
            (Some(s), ..) => Selector::Serial(s.clone()),
            (_, Some(d), ..) => Selector::DeviceId(d.clone()),
            (_, _, Some(l), ..) => Selector::Lot(l.clone()),
            (_, _, _, Some(z), _) => Selector::Zone(z.clone()),
            (_, _, _, _, Some(p)) => Selector::Profile(p.clone()),
            _ => Selector::Serial(String::new()),
        }
    }
}

/// RFC 5280 reasons, by our names or as RFC 5280 and OpenSSL spell them (`keyCompromise`,
/// `CACompromise`), in any case.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReasonArg {
    /// No reason given.
    Unspecified,
    /// The private key is (suspected) compromised.
    #[value(alias = "keyCompromise")]
    KeyCompromise,
    /// The CA is compromised.
    #[value(alias = "CACompromise")]
    CaCompromise,
    /// The device changed owner or site.
    #[value(alias = "affiliationChanged")]
    AffiliationChanged,
    /// Replaced by a new certificate.
    Superseded,
    /// The device was taken out of service.
    #[value(alias = "cessationOfOperation")]
    CessationOfOperation,
    /// Rights withdrawn.
    #[value(alias = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
}

impl ReasonArg {
    fn proto(self) -> pb::RevocationReason {
        use pb::RevocationReason as R;
        match self {
            ReasonArg::Unspecified => R::Unspecified,
            ReasonArg::KeyCompromise => R::KeyCompromise,
            ReasonArg::CaCompromise => R::CaCompromise,
            ReasonArg::AffiliationChanged => R::AffiliationChanged,
            ReasonArg::Superseded => R::Superseded,
            ReasonArg::CessationOfOperation => R::CessationOfOperation,
            ReasonArg::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        }
    }
}

/// `hallmark revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    #[command(flatten)]
    which: SelectorArgs,
    /// Why (RFC 5280 reason; `keyCompromise` and the other RFC 5280 spellings work too).
    #[arg(long, value_enum, ignore_case = true)]
    reason: ReasonArg,
    /// Only show what would be revoked.
    #[arg(long)]
    dry_run: bool,
    /// With --lot, --zone or --profile: take operator credentials (admin, provisioner,
    /// broker-agent) too; they are left out otherwise. The last valid admin credential is
    /// never revoked.
    #[arg(long)]
    include_operators: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// `hallmark suspend` and `hallmark resume`.
#[derive(Args, Debug)]
pub struct HoldArgs {
    #[command(flatten)]
    which: SelectorArgs,
    /// Only show what would change.
    #[arg(long)]
    dry_run: bool,
    /// With --lot, --zone or --profile: take operator credentials (admin, provisioner,
    /// broker-agent) too; they are left out otherwise. The last valid admin credential is
    /// never suspended.
    #[arg(long)]
    include_operators: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// What to do.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Revoke for good.
    Revoke,
    /// Put on hold.
    Suspend,
    /// Take off hold.
    Resume,
}

fn print(resp: &pb::RevokeResponse, action: Action, format: Format) -> Result<()> {
    match format {
        Format::Json => {
            let v: Vec<_> = resp
                .certificates
                .iter()
                .map(|c| output::cert_json(c, false))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let rows: Vec<_> = resp.certificates.iter().map(output::cert_row).collect();
            if !rows.is_empty() {
                output::print_table(&output::CERT_HEADER, &rows);
            }
            let verb = match (action, resp.dry_run) {
                (Action::Revoke, false) => "revoked",
                (Action::Revoke, true) => "would revoke",
                (Action::Suspend, false) => "suspended",
                (Action::Suspend, true) => "would suspend",
                (Action::Resume, false) => "resumed",
                (Action::Resume, true) => "would resume",
            };
            println!(
                "{verb} {} certificates{}",
                resp.total,
                if resp.dry_run {
                    " (dry run: nothing changed)"
                } else {
                    ""
                }
            );
        }
    }
    // Beside JSON on stdout, the notes go to stderr.
    let note = |text: String| match format {
        Format::Table => println!("{text}"),
        Format::Json => eprintln!("{text}"),
    };
    let listed = resp.certificates.len() as u64;
    if resp.total > listed {
        note(format!(
            "listed the first {listed} of {}; `hallmark cert list` with the same filter lists \
             them all",
            resp.total
        ));
    }
    let plural = |n: u32| if n == 1 { "" } else { "s" };
    if resp.operators_left_out > 0 {
        let n = resp.operators_left_out;
        note(format!(
            "left out {n} operator credential{} (admin, provisioner, broker-agent); add \
             --include-operators to take them too",
            plural(n)
        ));
    }
    if resp.device_holds_left_out > 0 {
        let n = resp.device_holds_left_out;
        note(format!(
            "left {n} certificate{} on hold: the hold{} came from suspending the device in the \
             registry; release with `hallmark device resume ID`",
            plural(n),
            plural(n)
        ));
    }
    Ok(())
}

/// Runs `hallmark revoke`.
pub async fn revoke(conn: &Connection, a: RevokeArgs) -> Result<()> {
    let mut client = RevocationClient::new(conn.channel().await?);
    let resp = client
        .revoke(pb::RevokeRequest {
            selector: Some(a.which.selector()),
            reason: a.reason.proto() as i32,
            dry_run: a.dry_run,
            include_operators: a.include_operators,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print(&resp, Action::Revoke, a.format)
}

/// Runs `hallmark suspend` or `hallmark resume`.
pub async fn hold(conn: &Connection, a: HoldArgs, action: Action) -> Result<()> {
    let mut client = RevocationClient::new(conn.channel().await?);
    let req = pb::RevokeRequest {
        selector: Some(a.which.selector()),
        reason: 0,
        dry_run: a.dry_run,
        include_operators: a.include_operators,
    };
    let resp = match action {
        Action::Resume => client.resume(req).await,
        _ => client.suspend(req).await,
    }
    .map_err(status_error)?
    .into_inner();
    print(&resp, action, a.format)
}
