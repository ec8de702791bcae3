//! Accepting client connections: plain TCP, TLS and mutual TLS.
//!
//! One accept loop per configured listener. Each accepted connection gets
//! its own task, a tracing span (`client.addr`, `listener`, `identity`)
//! and a [`session`](crate::session). On TLS listeners the handshake runs
//! in that task under a deadline; on mutual-TLS listeners the verified
//! client certificate is matched to an identity here, before the session
//! starts. The connection metrics are kept here. A failing `accept` (for
//! example too many open files) is logged and retried after a pause.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, warn};

use crate::auth::CertIdentity;
use crate::config::ListenerSettings;
use crate::gate::Conn;
use crate::reload::Live;
use crate::session;

/// Pause after a failed accept, so a full file table is not spun on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A client must finish the TLS handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts clients on `socket` until the proxy begins to shut down; the
/// socket is closed then, so new connections are refused.
pub async fn accept_loop(socket: TcpListener, settings: ListenerSettings, live: Arc<Live>) {
    let name = settings.name.clone();
    let settings = Arc::new(settings);
    let metrics = Arc::clone(&live.load().metrics);
    let accepted = metrics.connections_total.with_label_values(&[&name]);
    let open = metrics.open_gauge(&name);
    let mut closing = live.closing();
    loop {
        let accept = tokio::select! {
            accept = socket.accept() => accept,
            _ = closing.wait_for(|c| *c) => return,
        };
        let (stream, peer) = match accept {
            Ok(conn) => conn,
            Err(error) => {
                warn!(%error, listener = %name, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        accepted.inc();
        let _ = stream.set_nodelay(true);
        keepalive(&stream);
        let span = tracing::info_span!(
            "conn",
            client.addr = %peer,
            listener = %name,
            identity = tracing::field::Empty
        );
        let guard = OpenConnection::new(open.clone(), peer);
        let (settings, live) = (Arc::clone(&settings), Arc::clone(&live));
        // The session's future is made inside the spawned one: made
        // outside and moved in, it would be stored twice over.
        let task = async move {
            serve_connection(stream, peer, settings, live).await;
            drop(guard);
        }
        .instrument(span);
        tokio::spawn(task);
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<ListenerSettings>,
    live: Arc<Live>,
) {
    let conn = Conn {
        peer,
        listener: settings.name.clone(),
        resp3: settings.resp3,
        cert: CertIdentity::None,
        cert_der: None,
    };
    if settings.tls.is_none() {
        let (read, write) = stream.into_split();
        session::run(read, write, conn, live).await;
        return;
    }
    // Boxed apart: the TLS session's future (rustls state and handshake
    // included) is several times the size of a plain one, and a future
    // is as large as its largest branch for the connection's whole life.
    Box::pin(serve_tls(stream, conn, settings, live)).await;
}

/// The TLS half of [`serve_connection`]: handshake, client certificate,
/// then the session over the TLS stream.
async fn serve_tls(
    stream: TcpStream,
    mut conn: Conn,
    settings: Arc<ListenerSettings>,
    live: Arc<Live>,
) {
    let Some(tls) = &settings.tls else {
        return;
    };
    let handshake = tls.acceptor().accept(stream);
    let shared = live.load();
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            shared
                .metrics
                .tls_handshake_failures
                .with_label_values(&[&settings.name])
                .inc();
            debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared
                .metrics
                .tls_handshake_failures
                .with_label_values(&[&settings.name])
                .inc();
            debug!("TLS handshake timed out");
            return;
        }
    };
    if tls.is_mutual() {
        conn.cert = match stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
        {
            Some(cert) => {
                conn.cert_der = Some(cert.clone().into_owned());
                shared.identities.for_certificate(cert)
            }
            None => CertIdentity::Unreadable,
        };
        if let CertIdentity::Identity(i) = &conn.cert {
            tracing::Span::current().record("identity", i.name.as_str());
        }
    }
    drop(shared);
    let (read, write) = tokio::io::split(stream);
    session::run(read, write, conn, live).await;
}

/// Turns TCP keepalive on, as Redis does (`tcp-keepalive 300`), so that a
/// client host that vanishes without a FIN does not hold its session and
/// its Redis connection forever.
pub fn keepalive(stream: &TcpStream) {
    let probe = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(300))
        .with_interval(Duration::from_secs(100));
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&probe) {
        debug!(%error, "cannot turn TCP keepalive on");
    }
}

/// Keeps the open-connections gauge right even if a session panics.
struct OpenConnection {
    gauge: IntGauge,
    peer: SocketAddr,
}

impl OpenConnection {
    fn new(gauge: IntGauge, peer: SocketAddr) -> Self {
        gauge.inc();
        debug!(client.addr = %peer, "connection opened");
        OpenConnection { gauge, peer }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
        debug!(client.addr = %self.peer, "connection closed");
    }
}
