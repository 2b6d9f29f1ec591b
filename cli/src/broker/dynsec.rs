//! Cutting sessions that are already open on Mosquitto, through its dynamic-security plugin.
//!
//! A CRL reload makes Mosquitto refuse new connections of a revoked device but leaves its open
//! session alone. The plugin's `disableClient` and `deleteClient` commands disconnect every
//! session of a username (with `use_identity_as_username`, the certificate's CN: the device
//! id). The agent speaks to the plugin over MQTT with its own Hallmark credential:
//!
//! - a username the plugin does not know is created and deleted again at once (the delete
//!   disconnects it), so the plugin keeps no entry and the device's permissions still come
//!   from the broker's `acl_file` when it comes back with a new certificate;
//! - a username the operator manages in the plugin is disabled (which disconnects it) and, if it
//!   was enabled, enabled again: its entry ends as it was.
//!
//! The certificate check at the next connection is what keeps the device out; these commands
//! only end what is already open. Every session of the username is cut, including one opened
//! with another, still valid certificate of the same device: that one reconnects.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The plugin's command and response topics (Mosquitto 2.0).
const COMMAND_TOPIC: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// Commands per control message: keeps each message and its response small.
const COMMANDS_PER_MESSAGE: usize = 100;
/// Largest MQTT packet accepted from the broker.
const MAX_PACKET: usize = 1 << 20;
/// How long one exchange (connect, or a message and its responses) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Text the agent puts on the entries it creates, so an operator reading the plugin's
/// configuration in between knows what they are.
const TEXTNAME: &str = "hallmark broker agent: cutting the session of a revoked device";

/// Where the broker's dynamic-security plugin is reached, and how.
pub struct DynsecTarget {
    /// `host:port` of a TLS listener of the broker.
    pub address: String,
    /// The name the broker's certificate must carry.
    pub server_name: ServerName<'static>,
    /// TLS client configuration: the trust bundle and the agent's credential.
    pub tls: Arc<rustls::ClientConfig>,
}

impl DynsecTarget {
    /// Builds a target from `address` (`host:port`), the name to check on the broker's
    /// certificate (by default the host) and the agent's credential (PEM files).
    pub fn new(
        address: &str,
        server_name: Option<&str>,
        cert: &Path,
        key: &Path,
        ca_pem: &str,
    ) -> Result<Self> {
        let host = address
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .with_context(|| format!("--dynsec `{address}` is not host:port"))?;
        let name = server_name.unwrap_or(host).to_owned();
        let server_name = ServerName::try_from(name.clone())
            .with_context(|| format!("`{name}` is not a host name or IP address"))?;
        let tls = client_config(cert, key, ca_pem)?;
        Ok(Self {
            address: address.to_owned(),
            server_name,
            tls,
        })
    }
}

fn client_config(cert: &Path, key: &Path, ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.context("the trust bundle holds a bad certificate")?)
            .context("the trust bundle holds a certificate rustls cannot use")?;
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let config = rustls::ClientConfig::builder_with_provider(hallmark_core::crypto::provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the agent's certificate and key do not go together")?;
    Ok(Arc::new(config))
}

/// What happened to each username.
#[derive(Debug, Default)]
pub struct CutReport {
    /// Usernames whose sessions were cut.
    pub cut: Vec<String>,
    /// Usernames the plugin refused, with its error.
    pub failed: Vec<(String, String)>,
}

/// Cuts every open session of `usernames`.
pub async fn cut_sessions(target: &DynsecTarget, usernames: &[String]) -> Result<CutReport> {
    let mut report = CutReport::default();
    if usernames.is_empty() {
        return Ok(report);
    }
    let mut session = Session::connect(target).await?;
    for chunk in usernames.chunks(COMMANDS_PER_MESSAGE) {
        // Round 1: which usernames does the plugin manage, and are they enabled?
        let gets = chunk
            .iter()
            .map(|u| json!({"command": "getClient", "username": u, "correlationData": u}))
            .collect();
        let found = session.run(gets).await?;
        // Sort: unknown to the plugin (created and deleted), or managed by the operator.
        let mut unknown = Vec::new();
        let mut managed: Vec<(&String, bool)> = Vec::new();
        for u in chunk {
            let r = found.get(u.as_str());
            let error = r.and_then(|r| r.get("error")).and_then(Value::as_str);
            let disabled = r
                .and_then(|r| r.pointer("/data/client/disabled"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match error {
                Some(e) if e.contains("not found") => unknown.push(u),
                Some(e) => report.failed.push((u.clone(), e.to_owned())),
                None if r.is_none() => report
                    .failed
                    .push((u.clone(), "no answer from the plugin".into())),
                None => managed.push((u, disabled)),
            }
        }
        // Round 2: create the unknown ones. Only an entry this agent created is deleted later,
        // even if an operator creates one with the same name in between.
        let mut commands = Vec::new();
        if !unknown.is_empty() {
            let creates = unknown
                .iter()
                .map(|u| {
                    json!({"command": "createClient", "username": u, "textname": TEXTNAME,
                        "correlationData": format!("create:{u}")})
                })
                .collect();
            let created = session.run(creates).await?;
            for u in unknown {
                match created
                    .get(&format!("create:{u}"))
                    .map(|r| r.get("error").and_then(Value::as_str))
                {
                    Some(None) => commands.push(json!({"command": "deleteClient", "username": u,
                        "correlationData": format!("cut:{u}")})),
                    Some(Some(e)) if e.contains("exists") => managed.push((u, false)),
                    Some(Some(e)) => report.failed.push((u.clone(), e.to_owned())),
                    None => report
                        .failed
                        .push((u.clone(), "no answer from the plugin".into())),
                }
            }
        }
        // Round 3: the commands that disconnect, leaving each entry as it was.
        for (u, disabled) in managed {
            commands.push(json!({"command": "disableClient", "username": u,
                "correlationData": format!("cut:{u}")}));
            if !disabled {
                commands.push(json!({"command": "enableClient", "username": u,
                    "correlationData": format!("restore:{u}")}));
            }
        }
        if commands.is_empty() {
            continue;
        }
        let answers = session.run(commands).await?;
        for u in chunk {
            if report.failed.iter().any(|(f, _)| f == u) {
                continue;
            }
            let errors: Vec<String> = ["cut", "restore"]
                .iter()
                .filter_map(|step| answers.get(&format!("{step}:{u}")))
                .filter_map(|r| r.get("error").and_then(Value::as_str))
                .map(str::to_owned)
                .collect();
            if answers.contains_key(&format!("cut:{u}")) && errors.is_empty() {
                report.cut.push(u.clone());
            } else if errors.is_empty() {
                report
                    .failed
                    .push((u.clone(), "no answer from the plugin".into()));
            } else {
                report.failed.push((u.clone(), errors.join("; ")));
            }
        }
    }
    session.close().await;
    Ok(report)
}

/// One MQTT connection to the broker, subscribed to the plugin's responses.
struct Session {
    stream: TlsStream<TcpStream>,
    inbox: BytesMut,
    next_id: u16,
}

impl Session {
    async fn connect(target: &DynsecTarget) -> Result<Self> {
        let connect = async {
            let tcp = TcpStream::connect(&target.address)
                .await
                .with_context(|| format!("connecting to the broker at {}", target.address))?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(target.tls.clone())
                .connect(target.server_name.clone(), tcp)
                .await
                .with_context(|| {
                    format!(
                        "TLS with the broker at {} (its certificate must name `{}`)",
                        target.address,
                        target.server_name.to_str()
                    )
                })?;
            let mut s = Session {
                stream,
                inbox: BytesMut::new(),
                next_id: 1,
            };
            let mut hello = Connect::new(format!("hallmark-agent-{}", std::process::id()));
            hello.keep_alive = 30;
            s.send(Packet::Connect(hello)).await?;
            match s.receive().await? {
                Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
                Packet::ConnAck(ack) => bail!("the broker refused the agent: {:?}", ack.code),
                other => bail!("the broker answered CONNECT with {other:?}"),
            }
            let mut sub = Subscribe::new(RESPONSE_TOPIC, QoS::AtMostOnce);
            sub.pkid = s.packet_id();
            s.send(Packet::Subscribe(sub)).await?;
            loop {
                match s.receive().await? {
                    Packet::SubAck(ack) => {
                        if ack.return_codes.iter().any(|c| {
                            matches!(c, rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure)
                        }) {
                            bail!(
                                "the broker denied the agent the plugin's responses: give its \
                                 username a dynamic-security role for `$CONTROL/dynamic-security/#` \
                                 (see deploy/mosquitto)"
                            );
                        }
                        return Ok(s);
                    }
                    Packet::PingResp | Packet::Publish(_) => {}
                    other => bail!("unexpected {other:?} before SUBACK"),
                }
            }
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, connect)
            .await
            .context("the broker did not answer within 5 s")?
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    async fn send(&mut self, packet: Packet) -> Result<()> {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, MAX_PACKET)
            .map_err(|e| anyhow::anyhow!("encoding MQTT {e:?}"))?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn receive(&mut self) -> Result<Packet> {
        loop {
            match Packet::read(&mut self.inbox, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => bail!("the broker sent a bad MQTT packet: {e:?}"),
            }
            let n = self.stream.read_buf(&mut self.inbox).await?;
            if n == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    /// Sends `commands` in one control message and returns the responses by correlation data.
    async fn run(&mut self, commands: Vec<Value>) -> Result<BTreeMap<String, Value>> {
        let wanted: Vec<String> = commands
            .iter()
            .filter_map(|c| c.get("correlationData").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        let body = json!({ "commands": commands }).to_string();
        self.send(Packet::Publish(Publish::new(
            COMMAND_TOPIC,
            QoS::AtMostOnce,
            body,
        )))
        .await?;
        let mut answers = BTreeMap::new();
        let collect = async {
            while !wanted.iter().all(|w| answers.contains_key(w)) {
                let Packet::Publish(p) = self.receive().await? else {
                    continue;
                };
                if p.topic != RESPONSE_TOPIC {
                    continue;
                }
                // Other administrators' responses arrive here too: keep only ours.
                let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                for r in v["responses"].as_array().into_iter().flatten() {
                    if let Some(c) = r.get("correlationData").and_then(Value::as_str)
                        && wanted.iter().any(|w| w == c)
                    {
                        answers.insert(c.to_owned(), r.clone());
                    }
                }
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, collect)
            .await
            .context("the dynamic-security plugin did not answer within 5 s (is it loaded?)")??;
        Ok(answers)
    }

    async fn close(mut self) {
        let _ = self.send(Packet::Disconnect).await;
        let _ = self.stream.shutdown().await;
    }
}
