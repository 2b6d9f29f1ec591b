//! Faults between a client and the CA, for end-to-end tests on loopback: a CA replica that
//! answers `GetTrustBundle`, `GetCrl` and `WatchCrl` with what the test chooses while holding the
//! real CA's server identity (so it passes a client's server checks), a TCP proxy that can go
//! silent in both directions without closing its sockets, and one that cuts every connection
//! and refuses new ones until restored (a database that went down and came back).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hallmark_proto::v1 as pb;
use hallmark_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use hallmark_proto::v1::certificate_authority_server::{
    CertificateAuthority, CertificateAuthorityServer,
};
use hallmark_proto::v1::revocation_client::RevocationClient;
use hallmark_proto::v1::revocation_server::{Revocation, RevocationServer};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use tonic::{Request, Response, Status};

/// What a [`FaultyReplica`] answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// `GetTrustBundle`.
    pub bundle: pb::TrustBundle,
    /// The CRLs (DER, or anything else) of `GetCrl` and `WatchCrl`.
    pub crls: Vec<Vec<u8>>,
}

impl Answer {
    fn crl_set(&self) -> pb::CrlSet {
        pb::CrlSet {
            crls: self
                .crls
                .iter()
                .map(|der| pb::Crl {
                    der: der.clone(),
                    ..Default::default()
                })
                .collect(),
            heartbeat: false,
        }
    }
}

/// A gRPC server on a free loopback port that presents the real CA's server certificate and
/// key (from `server/` in its data dir) and answers with the [`Answer`] the test sets; every
/// `WatchCrl` stream gets the answer at once and again whenever the test changes it, with a
/// heartbeat every second in between (the stream looks healthy whatever it carries).
pub struct FaultyReplica {
    runtime: tokio::runtime::Runtime,
    answer: Arc<watch::Sender<Answer>>,
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl FaultyReplica {
    /// Starts it with the server identity of the CA whose data dir is `data_dir`, answering
    /// nothing (empty bundle, no CRLs) until [`FaultyReplica::set`].
    pub fn start(data_dir: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let chain = std::fs::read(data_dir.join("server/chain.pem")).expect("server/chain.pem");
        let key = std::fs::read(data_dir.join("server/key.pem")).expect("server/key.pem");
        let (tx, _) = watch::channel(Answer::default());
        let answer = Arc::new(tx);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let service = Replica(answer.clone());
        runtime.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tonic::transport::Server::builder()
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(chain, key)))
                .expect("the CA's server identity")
                .add_service(CertificateAuthorityServer::new(service.clone()))
                .add_service(RevocationServer::new(service))
                .serve_with_incoming(incoming)
                .await
                .expect("the faulty replica serves");
        });
        Self {
            runtime,
            answer,
            endpoint: format!("https://{addr}"),
        }
    }

    /// Answers `answer` from now on (and pushes it to the open `WatchCrl` streams).
    pub fn set(&self, answer: Answer) {
        self.answer.send_replace(answer);
    }

    /// What the real CA at `endpoint` (whose data dir is `data_dir`) answers right now.
    pub fn real_answer(&self, endpoint: &str, data_dir: &Path) -> Answer {
        self.runtime.block_on(async {
            let ca = std::fs::read(data_dir.join("trust-bundle.pem")).unwrap();
            let admin = data_dir.join("admin");
            let identity = Identity::from_pem(
                std::fs::read(admin.join("cert.pem")).unwrap(),
                std::fs::read(admin.join("key.pem")).unwrap(),
            );
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(identity);
            let channel: Channel = Endpoint::from_shared(endpoint.to_owned())
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .expect("connect to the real CA");
            let bundle = CertificateAuthorityClient::new(channel.clone())
                .get_trust_bundle(pb::GetTrustBundleRequest {})
                .await
                .expect("the real trust bundle")
                .into_inner();
            let crls = RevocationClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .get_crl(pb::GetCrlRequest {})
                .await
                .expect("the real CRLs")
                .into_inner()
                .crls
                .into_iter()
                .map(|c| c.der)
                .collect();
            Answer { bundle, crls }
        })
    }
}

#[derive(Clone)]
struct Replica(Arc<watch::Sender<Answer>>);

type CrlStream = Pin<Box<dyn Stream<Item = Result<pb::CrlSet, Status>> + Send>>;

#[tonic::async_trait]
impl Revocation for Replica {
    type WatchCrlStream = CrlStream;

    async fn get_crl(&self, _: Request<pb::GetCrlRequest>) -> Result<Response<pb::CrlSet>, Status> {
        Ok(Response::new(self.0.borrow().crl_set()))
    }

    async fn watch_crl(
        &self,
        _: Request<pb::WatchCrlRequest>,
    ) -> Result<Response<Self::WatchCrlStream>, Status> {
        let mut answers = self.0.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Like the CA: the set at once and on every change, a heartbeat every second between.
        tokio::spawn(async move {
            loop {
                let set = answers.borrow_and_update().crl_set();
                if tx.send(Ok(set)).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        changed = answers.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            let beat = pb::CrlSet { crls: Vec::new(), heartbeat: true };
                            if tx.send(Ok(beat)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn revoke(
        &self,
        _: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        Err(Status::unimplemented("a faulty replica"))
    }

    async fn suspend(
        &self,
        _: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        Err(Status::unimplemented("a faulty replica"))
    }

    async fn resume(
        &self,
        _: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        Err(Status::unimplemented("a faulty replica"))
    }
}

#[tonic::async_trait]
impl CertificateAuthority for Replica {
    async fn get_trust_bundle(
        &self,
        _: Request<pb::GetTrustBundleRequest>,
    ) -> Result<Response<pb::TrustBundle>, Status> {
        Ok(Response::new(self.0.borrow().bundle.clone()))
    }

    async fn issue(
        &self,
        _: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        Err(Status::unimplemented("a faulty replica"))
    }

    async fn get_certificate(
        &self,
        _: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        Err(Status::unimplemented("a faulty replica"))
    }

    async fn list_certificates(
        &self,
        _: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        Err(Status::unimplemented("a faulty replica"))
    }

    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        Err(Status::unimplemented("a faulty replica"))
    }

    async fn renew(
        &self,
        _: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        Err(Status::unimplemented("a faulty replica"))
    }
}

/// A TCP proxy on a free loopback port that forwards to `upstream` until [`StallingProxy::stall`],
/// and from then on forwards nothing in either direction, on open and new connections alike,
/// while keeping every socket open: a connection that dies silently. Stopped on drop.
pub struct StallingProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    stalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl StallingProxy {
    /// Starts forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stalled.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            // Connections accepted while stalled are held here, unanswered, until the end.
            let mut held = Vec::new();
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if st.load(Ordering::SeqCst) {
                            held.push(client);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        for (from, to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let (st, sp) = (st.clone(), sp.clone());
                            std::thread::spawn(move || pump(from, to, &st, &sp));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            stalled,
            stop,
            accept: Some(accept),
        }
    }

    /// Stops forwarding, for good, without closing anything.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes, the proxy stops, or (for good) it stalls.
fn pump(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool, stop: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            // Bytes read just as the stall began are dropped: nothing passes after it.
            Ok(n) if !stalled.load(Ordering::SeqCst) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A TCP proxy on a free loopback port that forwards to `upstream`; [`CuttingProxy::cut`] closes
/// every open connection and refuses new ones (accepted and closed at once) until
/// [`CuttingProxy::restore`]: a server that went down and came back. Stopped on drop.
pub struct CuttingProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl CuttingProxy {
    /// Starts forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (ct, sp, op) = (cut.clone(), stop.clone(), open.clone());
        let accept = std::thread::spawn(move || {
            let never = Arc::new(AtomicBool::new(false));
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        // Under the lock `cut` takes: no connection slips past a cut.
                        let mut open = op.lock().unwrap();
                        if ct.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                        for (from, to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let (never, sp) = (never.clone(), sp.clone());
                            std::thread::spawn(move || pump(from, to, &never, &sp));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            cut,
            stop,
            open,
            accept: Some(accept),
        }
    }

    /// Closes every open connection (both ways) and refuses new ones.
    pub fn cut(&self) {
        let mut open = self.open.lock().unwrap();
        self.cut.store(true, Ordering::SeqCst);
        for s in open.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
