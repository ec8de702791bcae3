//! Accepting client connections.
//!
//! One accept loop per configured listener. Each accepted connection gets
//! its own task, a tracing span (`client.addr`, `listener`) and a
//! [`session`](crate::session); the connection metrics are kept here. A
//! failing `accept` (for example too many open files) is logged and
//! retried after a pause instead of ending the loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, warn};

use crate::session::{self, Shared};

/// Pause after a failed accept, so a full file table is not spun on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts clients on `listener` until the task is dropped.
pub async fn accept_loop(listener: TcpListener, name: String, shared: Arc<Shared>) {
    let accepted = shared.metrics.connections_total.with_label_values(&[&name]);
    let open = shared.metrics.open_gauge(&name);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                warn!(%error, listener = %name, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        accepted.inc();
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("conn", client.addr = %peer, listener = %name);
        let shared = Arc::clone(&shared);
        let guard = OpenConnection::new(open.clone(), peer);
        tokio::spawn(
            async move {
                let (read, write) = stream.into_split();
                session::run(read, write, shared).await;
                drop(guard);
            }
            .instrument(span),
        );
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
