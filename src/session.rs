//! One client connection, from its first byte to its close.
//!
//! A session owns the client socket and its own upstream connection, and
//! runs two halves side by side in one task:
//!
//! * the request half reads client bytes, cuts them into commands
//!   ([`crate::resp`]), classifies each ([`crate::command`]), decides what
//!   to do with it ([`Gate`]), and writes every command it forwards to
//!   Redis without waiting for replies, so pipelines stay pipelines;
//! * the reply half (`session/replies.rs`) reads Redis's replies and
//!   writes them to the client in command order, weaving in the replies
//!   the proxy gives itself.
//!
//! The halves share an ordered queue of [`Slot`]s, one per command: each
//! says whether the command's reply comes from Redis (and how many frames
//! it is) or from the proxy. The request half always queues a slot before
//! it writes the command upstream, so a reply never arrives without one.
//! Pub/sub messages that answer no command pass straight through.
//!
//! A session never resends a command: if Redis goes away, every command
//! still waiting gets an error reply and the client is disconnected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::auth::{Identities, Throttle};
use crate::command::{self, Expect};
use crate::conceal;
use crate::config::UpstreamSettings;
use crate::gate::{Conn, Decision, Gate};
use crate::metrics::Metrics;
use crate::resp::{Limits, RequestReader, error_reply};
use crate::upstream::{self, UpstreamWrite};

mod replies;

/// Batches of slots in flight between the halves before the request half
/// waits; together with socket buffers this bounds a session's memory.
const SLOT_BATCHES: usize = 256;

/// Commands larger than this are written upstream on their own instead of
/// being copied into the batch buffer.
const COPY_LIMIT: usize = 64 * 1024;

/// How long replies may still be relayed after the client stopped sending.
const DRAIN: Duration = Duration::from_secs(5);

/// How long a client may take to send its first command when Redis is
/// unreachable, before it is disconnected without a reply.
const FIRST_COMMAND_WAIT: Duration = Duration::from_secs(10);

/// Error text for commands whose reply was lost with the upstream.
const UPSTREAM_LOST: &str =
    "ERR asynq-guard: connection to upstream Redis lost, command outcome unknown";

/// Error text when no upstream connection can be made.
const UPSTREAM_DOWN: &str = "ERR asynq-guard: upstream Redis unavailable";

/// What every session shares.
pub struct Shared {
    pub upstream: Arc<UpstreamSettings>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub identities: Arc<Identities>,
    pub throttle: Throttle,
}

/// Limits before authentication, as Redis applies them to unauthenticated
/// clients: enough for AUTH and HELLO, too little to flood memory.
const PRE_AUTH_LIMITS: Limits = Limits {
    max_bulk_bytes: 16 * 1024,
    max_args: 10,
    max_buffer_bytes: 64 * 1024,
};

impl Shared {
    fn limits_for(&self, authenticated: bool) -> Limits {
        if authenticated {
            self.limits
        } else {
            Limits {
                max_bulk_bytes: PRE_AUTH_LIMITS
                    .max_bulk_bytes
                    .min(self.limits.max_bulk_bytes),
                max_args: PRE_AUTH_LIMITS.max_args.min(self.limits.max_args),
                max_buffer_bytes: PRE_AUTH_LIMITS
                    .max_buffer_bytes
                    .min(self.limits.max_buffer_bytes),
            }
        }
    }
}

/// Where one command's reply comes from.
#[derive(Debug)]
enum Slot {
    /// From Redis, shaped as `expect`; `sent` is set when the round trip
    /// is timed; `conceal` when the reply goes through
    /// [`conceal::filter_info`].
    Upstream {
        expect: Expect,
        sent: Option<Instant>,
        conceal: bool,
    },
    /// From Redis for a command the proxy sent on its own (logging in
    /// again after RESET); the client sees nothing of it, and an error
    /// ends the session.
    Hidden,
    /// From Redis, but the client gets `reply` instead of it.
    Replace { reply: Bytes },
    /// From the proxy; `close` ends the connection after it.
    Local { reply: Bytes, close: bool },
}

/// Runs one client connection to its end. The client's halves are passed
/// apart so that plain TCP needs no lock between them.
pub async fn run<R, W>(client_read: R, client_write: W, conn: Conn, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (up_read, up_write) = match upstream::connect(&shared.upstream).await {
        Ok(halves) => halves,
        Err(error) => {
            warn!(%error, "upstream unavailable");
            shared
                .metrics
                .upstream_errors
                .with_label_values(&[error.kind()])
                .inc();
            let limits = shared.limits_for(false);
            refuse_first_command(client_read, client_write, &limits).await;
            return;
        }
    };

    let (tx, rx) = mpsc::channel(SLOT_BATCHES);
    let gate = Gate::new(conn);
    let requests = forward_requests(client_read, up_write, tx, gate, &shared);
    let replies = replies::relay_replies(up_read, client_write, rx, &shared);
    tokio::pin!(requests, replies);
    tokio::select! {
        end = &mut replies => debug!(?end, "session closed by reply side"),
        end = &mut requests => {
            debug!(?end, "client stopped sending");
            match tokio::time::timeout(DRAIN, replies).await {
                Ok(end) => debug!(?end, "session closed"),
                Err(_) => debug!("replies not drained in time, closing"),
            }
        }
    }
}

/// Without an upstream, answers the client's first command with an error
/// and closes, so the client sees why instead of a bare disconnect.
async fn refuse_first_command<R, W>(mut read: R, mut write: W, limits: &Limits)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = RequestReader::new(*limits);
    let wait = async {
        loop {
            match reader.next_command() {
                Ok(Some(_)) => return Some(error_reply(UPSTREAM_DOWN)),
                Err(e) => return Some(e.to_reply()),
                Ok(None) => {}
            }
            match read.read_buf(reader.buffer()).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    if let Ok(Some(reply)) = tokio::time::timeout(FIRST_COMMAND_WAIT, wait).await {
        let _ = write.write_all(&reply).await;
        let _ = write.shutdown().await;
    }
}

/// Why the request half stopped (fields are read through `Debug` in logs).
#[derive(Debug)]
#[allow(dead_code)]
enum RequestEnd {
    ClientClosed,
    ClientError(std::io::Error),
    BadInput(&'static str),
    Closing,
    UpstreamWrite(std::io::Error),
    RepliesGone,
}

/// The request half: client → gate → Redis.
async fn forward_requests<R>(
    mut client: R,
    mut upstream: UpstreamWrite,
    slots: mpsc::Sender<Vec<Slot>>,
    mut gate: Gate,
    shared: &Shared,
) -> RequestEnd
where
    R: AsyncRead + Unpin,
{
    let mut authenticated = gate.identity().is_some();
    let mut reader = RequestReader::new(shared.limits_for(authenticated));
    let relogin = upstream::login_command(&shared.upstream);
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        match client.read_buf(reader.buffer()).await {
            Ok(0) => return RequestEnd::ClientClosed,
            Ok(_) => {}
            Err(e) => return RequestEnd::ClientError(e),
        }
        let mut batch = Vec::new();
        let mut end = None;
        loop {
            let cmd = match reader.next_command() {
                Ok(Some(cmd)) => cmd,
                Ok(None) => break,
                Err(e) => {
                    shared
                        .metrics
                        .client_errors
                        .with_label_values(&[e.reason()])
                        .inc();
                    warn!(error = %e, "bad client input, closing");
                    batch.push(Slot::Local {
                        reply: e.to_reply(),
                        close: true,
                    });
                    end = Some(RequestEnd::BadInput(e.reason()));
                    break;
                }
            };
            let c = command::classify(&cmd);
            shared.metrics.count_command(c.name);
            let decision = gate.decide(&cmd, &c, shared);
            if gate.identity().is_some() != authenticated {
                authenticated = !authenticated;
                reader.set_limits(shared.limits_for(authenticated));
            }
            // Inside MULTI, Redis answers every command with one QUEUED
            // (RESET alone runs at once and ends the transaction).
            let expect = if gate.in_multi() {
                Expect::One
            } else {
                c.expect
            };
            let upstream_slot = || Slot::Upstream {
                expect,
                sent: (!c.blocking).then(Instant::now),
                conceal: conceal::filters_reply(c.name),
            };
            let (slot, raw) = match decision {
                Decision::Forward => (upstream_slot(), Some(cmd.raw)),
                Decision::ForwardAs(raw) => (upstream_slot(), Some(raw)),
                Decision::Substitute { raw, reply } => (Slot::Replace { reply }, Some(raw)),
                Decision::Reply(reply) => (
                    Slot::Local {
                        reply,
                        close: false,
                    },
                    None,
                ),
                Decision::ReplyAfter(delay, reply) => {
                    // Slows down guessing: nothing more is read from this
                    // client until the delay is over.
                    tokio::time::sleep(delay).await;
                    (
                        Slot::Local {
                            reply,
                            close: false,
                        },
                        None,
                    )
                }
                Decision::ReplyAndClose(reply) => {
                    end = Some(RequestEnd::Closing);
                    (Slot::Local { reply, close: true }, None)
                }
            };
            // Redis logs the connection out on RESET: log it in again
            // with the proxy's credentials, unseen by the client.
            let hidden = (c.expect == Expect::Reset && raw.is_some())
                .then(|| relogin.clone())
                .flatten();
            batch.push(slot);
            if let Some(raw) = raw {
                if raw.len() > COPY_LIMIT {
                    // Queue the slots, then write what is buffered and the
                    // large command itself without copying it.
                    if slots.send(std::mem::take(&mut batch)).await.is_err() {
                        return RequestEnd::RepliesGone;
                    }
                    if let Err(e) = write_out(&mut upstream, &mut out).await {
                        return RequestEnd::UpstreamWrite(e);
                    }
                    if let Err(e) = upstream.write_all(&raw).await {
                        return RequestEnd::UpstreamWrite(e);
                    }
                } else {
                    out.extend_from_slice(&raw);
                }
            }
            if let Some(login) = hidden {
                batch.push(Slot::Hidden);
                out.extend_from_slice(&login);
            }
            if end.is_some() {
                break;
            }
        }
        if !batch.is_empty() && slots.send(batch).await.is_err() {
            return RequestEnd::RepliesGone;
        }
        if let Err(e) = write_out(&mut upstream, &mut out).await {
            return RequestEnd::UpstreamWrite(e);
        }
        if let Some(end) = end {
            return end;
        }
    }
}

async fn write_out(upstream: &mut UpstreamWrite, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        upstream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}
