//! The agent's watch of the CA: a task that keeps a `WatchCrl` stream open, reconnecting with
//! backoff, and reports to the agent. A watchdog drops the stream when no message (CRLs or the
//! CA's heartbeat) came within the bound, so a connection that dies silently (nothing
//! forwarded, nothing closed) is noticed instead of waited on for ever.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hallmark_proto::v1 as pb;
use hallmark_proto::v1::revocation_client::RevocationClient;
use tokio::sync::mpsc;

use super::fetch::{MAX_CRL_SET_BYTES, RPC_TIMEOUT};
use super::trust_bundle;
use hallmark_core::client::{Connection, status_error};

/// Reconnect delays of the watch stream.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the watch reports.
pub enum Event {
    /// The stream is open.
    Up,
    /// A CRL set from the CA, with the trust bundle asked for right after it.
    Crls {
        /// The CRLs, DER.
        crls: Vec<Vec<u8>>,
        /// The trust bundle, PEM.
        bundle: String,
    },
    /// The stream failed or went silent; the watch reconnects after a backoff.
    Down(String),
}

/// Watches until the receiver of `events` is gone; `silence` is the watchdog's bound.
pub async fn run(conn: Connection, silence: Duration, events: mpsc::Sender<Event>) {
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        let mut up = false;
        let why = match follow(&conn, silence, &events, &mut up).await {
            Ok(()) => return, // the agent stopped listening
            Err(e) => format!("{e:#}"),
        };
        if events.send(Event::Down(why)).await.is_err() {
            return;
        }
        if up && started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_START;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Follows one stream; `Ok` only when the agent is gone.
async fn follow(
    conn: &Connection,
    silence: Duration,
    events: &mpsc::Sender<Event>,
    up: &mut bool,
) -> Result<()> {
    let channel = tokio::time::timeout(RPC_TIMEOUT, conn.channel())
        .await
        .with_context(|| format!("no connection to the CA within {RPC_TIMEOUT:?}"))??;
    let mut client = RevocationClient::new(channel).max_decoding_message_size(MAX_CRL_SET_BYTES);
    let mut stream = tokio::time::timeout(RPC_TIMEOUT, client.watch_crl(pb::WatchCrlRequest {}))
        .await
        .with_context(|| format!("the CA did not open the watch stream within {RPC_TIMEOUT:?}"))?
        .map_err(status_error)?
        .into_inner();
    *up = true;
    if events.send(Event::Up).await.is_err() {
        return Ok(());
    }
    loop {
        let message = tokio::time::timeout(silence, stream.message())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no message from the CA within {} (it sends a heartbeat every {}s): the \
                     connection is dead or stalled",
                    humantime::format_duration(silence),
                    hallmark_core::crl::WATCH_HEARTBEAT.as_secs()
                )
            })?
            .map_err(status_error)?;
        let Some(set) = message else {
            bail!("the CA closed the watch stream");
        };
        if set.heartbeat {
            continue;
        }
        let bundle = tokio::time::timeout(RPC_TIMEOUT, trust_bundle(conn))
            .await
            .with_context(|| format!("no trust bundle from the CA within {RPC_TIMEOUT:?}"))??;
        let crls = set.crls.into_iter().map(|c| c.der).collect();
        if events.send(Event::Crls { crls, bundle }).await.is_err() {
            return Ok(());
        }
    }
}
