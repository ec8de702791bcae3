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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::auth::{Identities, Throttle};
use crate::command::{self, Classified, Expect};
use crate::conceal;
use crate::config::UpstreamSettings;
use crate::gate::{Conn, Decision, Gate, Outcomes, Pending, QueueOutcome};
use crate::metrics::Metrics;
use crate::reload::Live;
use crate::resp::{Command, Limits, RequestError, RequestReader, error_reply};
use crate::upstream::{self, UpstreamWrite};

mod login;
mod replies;

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
    /// Which policy this is: 1 at start, one more at each reload.
    pub generation: u64,
    pub upstream: Arc<UpstreamSettings>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub identities: Arc<Identities>,
    pub throttle: Arc<Throttle>,
    /// An unauthenticated client is closed after this long.
    pub auth_timeout: Duration,
    /// Most commands of one connection awaiting their replies.
    pub max_pending_commands: usize,
    /// Enqueue size caps are on the grants; rate limits live here.
    pub admission: Arc<crate::admission::Admission>,
    /// Task signatures.
    pub integrity: Arc<crate::integrity::Integrity>,
    /// The proxy's own Redis connection, for shared rate limits.
    pub control: Arc<crate::control::Control>,
}

/// The gate's decision on `cmd`, after taking tokens from shared rate
/// limits in Redis when it asks for that.
pub(crate) async fn decide(
    gate: &mut Gate,
    cmd: &Command,
    c: &command::Classified,
    shared: &Shared,
) -> Decision {
    let decision = match gate.decide(cmd, c, shared) {
        Decision::Admit(pending) => {
            // Boxed, as the stored-message read below: these round trips
            // to the control connection are rare next to the commands
            // that need none, and kept inline they would be part of
            // every connection's memory.
            let outcomes = Box::pin(ask_redis(&pending, shared)).await;
            gate.settle(*pending, outcomes, shared)
        }
        Decision::Verify(check) => {
            let stored = Box::pin(shared.control.task_message(&check.task_key)).await;
            gate.settle_stored(&check, stored, shared)
        }
        decision => decision,
    };
    gate.count(&decision, shared);
    decision
}

/// Takes a token from each shared rate limit of a pending enqueue, in
/// order, stopping at the first empty bucket; then, if all admitted it,
/// counts its capped queue with a place reserved for it.
async fn ask_redis(pending: &Pending, shared: &Shared) -> Outcomes {
    let mut outcomes = Outcomes::default();
    for check in &pending.checks.shared {
        let outcome = shared.control.take(check).await;
        let refused = match &outcome {
            Ok(bucket) => *bucket != crate::control::Bucket::Admitted,
            Err(_) => {
                shared.admission.limits[check.limit].shared
                    != Some(crate::admission::OnFailure::Allow)
            }
        };
        outcomes.shared.push(outcome);
        if refused {
            return outcomes;
        }
    }
    if let Some(check) = &pending.checks.queue {
        let (held, in_flight) = shared.admission.in_flight.reserve(&check.queue);
        outcomes.queue = Some(match shared.control.count(check).await {
            Ok(count) => {
                shared
                    .metrics
                    .queue_tasks
                    .with_label_values(&[&shared.metrics.queue_label(&check.queue)])
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                if count + in_flight < check.max_tasks {
                    QueueOutcome::Admitted(held)
                } else {
                    QueueOutcome::Full { count, in_flight }
                }
            }
            Err(e) => QueueOutcome::Failed(e),
        });
    }
    outcomes
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
pub(crate) enum Slot {
    /// From Redis, shaped as `expect`; `sent` is set when the round trip
    /// is timed; `conceal` when the reply goes through
    /// [`conceal::filter_info`].
    Upstream {
        expect: Expect,
        sent: Option<Instant>,
        conceal: bool,
        /// An enqueue's place in its capped queue, given back when the
        /// reply has been handled (the slot is dropped); never read.
        _held: Option<crate::admission::Reservation>,
        /// The reply's task messages are checked before the client gets
        /// them.
        check: Option<Box<crate::integrity::replies::ReplyCheck>>,
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
///
/// No upstream connection is opened before the client has authenticated,
/// so connections that never log in cost Redis nothing.
pub async fn run<R, W>(mut client_read: R, mut client_write: W, conn: Conn, live: Arc<Live>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let shared = live.load();
    let listener = conn.listener.clone();
    let mut gate = Gate::new(conn);
    let mut reader = RequestReader::new(shared.limits_for(gate.identity().is_some()));
    let mut first = None;
    if gate.identity().is_none() {
        // Boxed, as is the upstream connect below: both are over before
        // the connection settles, and their memory goes with them.
        let login = Box::pin(login::authenticate(
            &mut client_read,
            &mut client_write,
            &mut reader,
            &mut gate,
            &shared,
        ));
        match tokio::time::timeout(shared.auth_timeout, login).await {
            Ok(Some(pending)) => first = pending,
            Ok(None) => return,
            Err(_) => {
                let reply = error_reply("ERR asynq-guard: authentication timed out, closing");
                let _ = client_write.write_all(&reply).await;
                let _ = client_write.shutdown().await;
                return;
            }
        }
    }

    let _open = gate.identity().map(|i| {
        SessionGauge::new(
            shared
                .metrics
                .sessions
                .with_label_values(&[listener.as_str(), i.name.as_str()]),
        )
    });
    let (up_read, mut up_write) = match Box::pin(upstream::connect(&shared.upstream)).await {
        Ok(halves) => halves,
        Err(error) => {
            warn!(%error, "upstream unavailable");
            shared
                .metrics
                .upstream_errors
                .with_label_values(&[error.kind()])
                .inc();
            if first.is_some() {
                let _ = client_write.write_all(&error_reply(UPSTREAM_DOWN)).await;
                let _ = client_write.shutdown().await;
            } else {
                refuse_first_command(client_read, client_write, reader).await;
            }
            return;
        }
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    let client_gone = Arc::new(AtomicBool::new(false));
    let revoked = Arc::new(std::sync::OnceLock::new());
    // The halves borrow both write halves; they are dropped at the end of
    // this block, which leaves the writes a revoked session still owes.
    let reply_end = {
        // Pinned where they are made, so that each future is stored once
        // in this one (moved into `tokio::pin!`, it would be stored twice).
        let mut requests = std::pin::pin!(forward_requests(
            client_read,
            &mut up_write,
            Requests {
                slots: tx,
                pending: Arc::clone(&pending),
                reader,
                gate,
                first,
            },
            &live,
        ));
        let mut replies = std::pin::pin!(replies::relay_replies(
            up_read,
            &mut client_write,
            rx,
            pending,
            Arc::clone(&client_gone),
            Arc::clone(&revoked),
            &live,
        ));
        tokio::select! {
            end = &mut replies => Some(end),
            end = &mut requests => {
                debug!(?end, "client stopped sending");
                if matches!(end, RequestEnd::ClientClosed | RequestEnd::ClientError(_)) {
                    client_gone.store(true, Ordering::Relaxed);
                }
                if let RequestEnd::Revoked(why) = end {
                    let _ = revoked.set(format!("NOPERM asynq-guard: {why}; closing the connection"));
                }
                // The upstream write half stays open meanwhile: closing it
                // would make Redis drop the replies still owed. At
                // shutdown the grace period bounds the wait instead.
                if live.is_closing() {
                    Some(replies.await)
                } else {
                    tokio::time::timeout(DRAIN, replies).await.ok()
                }
            }
        }
    };
    debug!(end = ?reply_end, "session closed");
    if let Some(replies::ReplyEnd::Revoked(owed)) = reply_end {
        // A blocking command was waiting when the identity was revoked
        // (only the request half revokes, so it has stopped sending):
        // Redis must drop it before the client learns that the
        // connection is closed, or a value pushed right after could be
        // popped for nobody.
        let _ = up_write.shutdown().await;
        let _ = client_write.write_all(&owed).await;
        let _ = client_write.shutdown().await;
    }
}

/// An authenticated connection in `asynq_guard_client_sessions`, for as
/// long as it is open.
struct SessionGauge(prometheus::IntGauge);

impl SessionGauge {
    fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        SessionGauge(gauge)
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Without an upstream, answers the client's next command with an error
/// and closes, so the client sees why instead of a bare disconnect.
async fn refuse_first_command<R, W>(mut read: R, mut write: W, mut reader: RequestReader)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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
    /// A reloaded policy no longer allows the connection's identity.
    Revoked(String),
    UpstreamWrite(std::io::Error),
    RepliesGone,
}

/// What the request half starts with.
struct Requests {
    slots: mpsc::UnboundedSender<Vec<Slot>>,
    /// Commands queued and not yet answered, shared with the reply half.
    pending: Arc<AtomicUsize>,
    reader: RequestReader,
    gate: Gate,
    /// A command the login phase decided to forward first (HELLO AUTH).
    first: Option<(Slot, Bytes)>,
}

/// One command, planned: its slot and what to send upstream, if anything.
pub(crate) struct Planned {
    pub slot: Slot,
    pub raw: Option<Bytes>,
    /// Ends the connection after this command's reply.
    pub closing: bool,
    /// Answer only after this delay (failed logins).
    pub delay: Option<Duration>,
}

/// Turns the gate's decision about `cmd` into a slot and upstream bytes.
pub(crate) fn plan(cmd: Command, c: &Classified, decision: Decision, in_multi: bool) -> Planned {
    // Inside MULTI, Redis answers every command with one QUEUED (RESET
    // alone runs at once and ends the transaction).
    let expect = if in_multi { Expect::One } else { c.expect };
    let upstream_slot = |held, check| Slot::Upstream {
        expect,
        sent: (!c.blocking).then(Instant::now),
        conceal: conceal::filters_reply(c.name),
        _held: held,
        check,
    };
    let local = |reply| Slot::Local {
        reply,
        close: false,
    };
    let (slot, raw, closing, delay) = match decision {
        Decision::Forward => (upstream_slot(None, None), Some(cmd.raw), false, None),
        Decision::ForwardWith(f) => {
            let f = *f;
            let raw = f.raw.unwrap_or(cmd.raw);
            (upstream_slot(f.held, f.check), Some(raw), false, None)
        }
        Decision::ForwardAs(raw) => (upstream_slot(None, None), Some(raw), false, None),
        Decision::Substitute { raw, reply } => (Slot::Replace { reply }, Some(raw), false, None),
        Decision::Reply(reply) => (local(reply), None, false, None),
        Decision::ReplyAfter(delay, reply) => (local(reply), None, false, Some(delay)),
        Decision::ReplyAndClose(reply) => (Slot::Local { reply, close: true }, None, true, None),
        // session::decide has settled them before.
        Decision::Admit(_) | Decision::Verify(_) => (
            local(crate::resp::error_reply(
                "ERR asynq-guard: internal error, enqueue not decided",
            )),
            None,
            false,
            None,
        ),
    };
    Planned {
        slot,
        raw,
        closing,
        delay,
    }
}

/// The request half: client → gate → Redis.
async fn forward_requests<R>(
    mut client: R,
    upstream: &mut UpstreamWrite,
    start: Requests,
    live: &Live,
) -> RequestEnd
where
    R: AsyncRead + Unpin,
{
    let Requests {
        slots,
        pending,
        mut reader,
        mut gate,
        first,
    } = start;
    let mut shared = live.load();
    let mut authenticated = gate.identity().is_some();
    let relogin = upstream::login_commands(&shared.upstream);
    let mut changes = live.changes();
    let mut closing = live.closing();
    let mut out = BytesMut::new();
    if let Some((slot, raw)) = first {
        pending.fetch_add(1, Ordering::Relaxed);
        if slots.send(vec![slot]).is_err() {
            return RequestEnd::RepliesGone;
        }
        if let Err(e) = upstream.write_all(&raw).await {
            return RequestEnd::UpstreamWrite(e);
        }
    }
    // Commands the login phase read ahead are already buffered.
    let mut buffered = reader.has_partial();
    loop {
        if !std::mem::take(&mut buffered) {
            if *closing.borrow_and_update() {
                return RequestEnd::Closing;
            }
            tokio::select! {
                read = client.read_buf(reader.buffer()) => match read {
                    Ok(0) => return RequestEnd::ClientClosed,
                    Ok(_) => {}
                    Err(e) => return RequestEnd::ClientError(e),
                },
                // Shutting down: what was received has been forwarded;
                // the reply half answers it, then the connection closes.
                _ = closing.changed() => return RequestEnd::Closing,
                _ = changes.changed() => {
                    // A reloaded policy: a connection whose identity it
                    // no longer allows is closed at once, not at its next
                    // command.
                    shared = live.load();
                    if let Err(why) = gate.recheck(&shared) {
                        gate.revoked(&shared, &why);
                        return RequestEnd::Revoked(why);
                    }
                    continue;
                }
            }
        }
        shared = live.load();
        let shared = &*shared;
        let mut batch = Vec::new();
        let mut end = None;
        loop {
            let cmd = match reader.next_command() {
                Ok(Some(cmd)) => cmd,
                Ok(None) => break,
                Err(e) => {
                    batch.push(bad_input(&e, shared));
                    end = Some(RequestEnd::BadInput(e.reason()));
                    break;
                }
            };
            let c = command::classify(&cmd);
            shared.metrics.count_command(c.name);
            let decision = decide(&mut gate, &cmd, &c, shared).await;
            if gate.identity().is_some() != authenticated {
                authenticated = !authenticated;
                reader.set_limits(shared.limits_for(authenticated));
            }
            let planned = plan(cmd, &c, decision, gate.in_multi());
            if let Some(delay) = planned.delay {
                // Slows down guessing: nothing more is read from this
                // client until the delay is over.
                tokio::time::sleep(delay).await;
            }
            if planned.closing {
                end = Some(RequestEnd::Closing);
            }
            // Redis logs the connection out and goes back to database 0
            // on RESET: log it in again and select the database, unseen
            // by the client.
            let hidden = c.expect == Expect::Reset && planned.raw.is_some();
            batch.push(planned.slot);
            if let Some(raw) = planned.raw {
                if raw.len() > COPY_LIMIT {
                    // Queue the slots, then write what is buffered and the
                    // large command itself without copying it.
                    if !queue(&slots, &pending, std::mem::take(&mut batch)) {
                        return RequestEnd::RepliesGone;
                    }
                    if let Err(e) = write_out(upstream, &mut out).await {
                        return RequestEnd::UpstreamWrite(e);
                    }
                    if let Err(e) = upstream.write_all(&raw).await {
                        return RequestEnd::UpstreamWrite(e);
                    }
                } else {
                    out.extend_from_slice(&raw);
                }
            }
            if hidden {
                for login in &relogin {
                    batch.push(Slot::Hidden);
                    out.extend_from_slice(login);
                }
            }
            if end.is_some() {
                break;
            }
        }
        if let Some(over) = over_pending_limit(&pending, batch.len(), shared) {
            batch.push(over);
            end = Some(RequestEnd::BadInput("max_pending_commands"));
        }
        if !batch.is_empty() && !queue(&slots, &pending, batch) {
            return RequestEnd::RepliesGone;
        }
        if let Err(e) = write_out(upstream, &mut out).await {
            return RequestEnd::UpstreamWrite(e);
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// The reply to input that breaks the protocol or a limit, counted.
pub(crate) fn bad_input(e: &RequestError, shared: &Shared) -> Slot {
    shared
        .metrics
        .client_errors
        .with_label_values(&[e.reason()])
        .inc();
    warn!(error = %e, "bad client input, closing");
    Slot::Local {
        reply: e.to_reply(),
        close: true,
    }
}

/// Hands a batch of slots to the reply half.
fn queue(
    slots: &mpsc::UnboundedSender<Vec<Slot>>,
    pending: &AtomicUsize,
    batch: Vec<Slot>,
) -> bool {
    pending.fetch_add(batch.len(), Ordering::Relaxed);
    slots.send(batch).is_ok()
}

/// Redis holds every reply a client has not read yet; the proxy holds a
/// small record per command whose reply is still owed, up to a limit.
/// Past it the client gets an error naming the limit and is closed.
fn over_pending_limit(pending: &AtomicUsize, adding: usize, shared: &Shared) -> Option<Slot> {
    let limit = shared.max_pending_commands;
    if pending.load(Ordering::Relaxed) + adding <= limit {
        return None;
    }
    shared
        .metrics
        .client_errors
        .with_label_values(&["max_pending_commands"])
        .inc();
    warn!(limit, "too many commands awaiting replies, closing");
    Some(Slot::Local {
        reply: error_reply(&format!(
            "ERR asynq-guard limit max_pending_commands exceeded: more than {limit} commands await their replies"
        )),
        close: true,
    })
}

async fn write_out(upstream: &mut UpstreamWrite, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        upstream.write_all(out).await?;
        empty_out(out);
    }
    Ok(())
}

/// Most capacity an output buffer keeps once written out; a larger one is
/// given back, so that a connection idle after a burst holds little.
const OUT_KEEP: usize = 4 * 1024;

/// Empties an output buffer that has been written out.
pub(crate) fn empty_out(out: &mut BytesMut) {
    if out.capacity() > OUT_KEEP {
        *out = BytesMut::new();
    } else {
        out.clear();
    }
}
