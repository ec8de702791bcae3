//! One client connection, from its first byte to its close.
//!
//! A session owns the client socket and its own upstream connection, and
//! runs two halves side by side in one task:
//!
//! * the request half reads client bytes, cuts them into commands
//!   ([`crate::resp`]), classifies each ([`crate::command`]), decides what
//!   to do with it ([`Gate`]), and writes every command it forwards to
//!   Redis without waiting for replies, so pipelines stay pipelines;
//! * the reply half reads Redis's replies and writes them to the client in
//!   command order, weaving in the replies the proxy gives itself.
//!
//! The halves share an ordered queue of [`Slot`]s, one per command: each
//! says whether the command's reply comes from Redis (and how many frames
//! it is) or from the proxy. The request half always queues a slot before
//! it writes the command upstream, so a reply never arrives without one.
//! Pub/sub messages that answer no command pass straight through.
//!
//! A session never resends a command: if Redis goes away, every command
//! still waiting gets an error reply and the client is disconnected.

use std::collections::VecDeque;
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
use crate::resp::{
    Limits, Proto, PubSubWord, Reply, ReplyReader, RequestReader, SubKind, error_reply,
};
use crate::upstream::{self, UpstreamRead, UpstreamWrite};

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
    let replies = relay_replies(up_read, client_write, rx, &shared);
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

/// Why the reply half stopped (fields are read through `Debug` in logs).
#[derive(Debug)]
#[allow(dead_code)]
enum ReplyEnd {
    /// Every command was answered and the client sends no more.
    Done,
    /// A reply that closes the connection was written.
    Closed,
    ClientWrite(std::io::Error),
    UpstreamLost,
    UpstreamProtocol(String),
}

/// Why a reply could not be relayed.
enum OnReply {
    /// No command was waiting for it.
    Unexpected,
    /// The proxy's own login after RESET failed.
    HiddenFailed,
}

/// How many subscriptions of each kind the connection holds, as Redis's
/// confirmations tell. Redis counts channels and patterns together in
/// one number and shard channels apart; the change of the shared number
/// on each confirmation says which of the two moved.
#[derive(Debug, Default)]
struct Subscriptions {
    channels: i64,
    patterns: i64,
    shards: i64,
}

impl Subscriptions {
    fn any(&self) -> bool {
        self.channels + self.patterns + self.shards > 0
    }

    fn of(&self, kind: SubKind) -> i64 {
        match kind {
            SubKind::Channel => self.channels,
            SubKind::Pattern => self.patterns,
            SubKind::Shard => self.shards,
        }
    }

    /// Applies one confirmation carrying Redis's `count`.
    fn confirmed(&mut self, kind: SubKind, count: Option<i64>) {
        let Some(count) = count else { return };
        match kind {
            SubKind::Shard => self.shards = count.max(0),
            SubKind::Channel | SubKind::Pattern => {
                let moved = count - (self.channels + self.patterns);
                let field = if kind == SubKind::Channel {
                    &mut self.channels
                } else {
                    &mut self.patterns
                };
                *field = (*field + moved).max(0);
            }
        }
    }
}

/// The state the reply half keeps about the connection.
struct ReplyState {
    queue: VecDeque<Slot>,
    proto: Proto,
    subs: Subscriptions,
    out: BytesMut,
}

impl ReplyState {
    /// Moves the proxy's own replies at the head of the queue to the
    /// output; true if one of them closes the connection.
    fn flush_locals(&mut self) -> bool {
        while let Some(Slot::Local { .. }) = self.queue.front() {
            let Some(Slot::Local { reply, close }) = self.queue.pop_front() else {
                unreachable!("front was a local slot")
            };
            self.out.extend_from_slice(&reply);
            if close {
                return true;
            }
        }
        false
    }

    /// The protocol version the next reply is written in: a HELLO reply
    /// already speaks the version it asked for.
    fn next_proto(&self) -> Proto {
        match self.queue.front() {
            Some(Slot::Upstream {
                expect: Expect::Hello(Some(p)),
                ..
            }) => *p,
            _ => self.proto,
        }
    }

    fn expecting_confirm(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(Slot::Upstream {
                expect: Expect::Confirms(_) | Expect::UnsubscribeAll(_),
                ..
            })
        )
    }

    /// Whether a reply answers no command (a pub/sub delivery, a RESP3
    /// push, a confirmation nobody asked for).
    fn out_of_band(&self, r: &Reply) -> bool {
        let confirm = matches!(r.shape.pubsub, Some(PubSubWord::Confirm { .. }));
        if r.shape.push {
            return !(confirm && self.expecting_confirm());
        }
        if self.proto == Proto::Resp2 && self.subs.any() {
            return match r.shape.pubsub {
                Some(PubSubWord::Message) => true,
                Some(PubSubWord::Confirm { .. }) => !self.expecting_confirm(),
                None => false,
            };
        }
        false
    }

    /// Writes one reply to the output and retires its slot.
    fn on_reply(&mut self, r: Reply, metrics: &Metrics) -> Result<(), OnReply> {
        if self.out_of_band(&r) {
            // A confirmation nobody asked for (Redis dropping a shard
            // subscription, say) still changes what the connection holds.
            if let Some(PubSubWord::Confirm { kind, .. }) = r.shape.pubsub {
                self.subs.confirmed(kind, r.shape.count);
            }
            self.out.extend_from_slice(&r.raw);
            return Ok(());
        }
        let Some(slot) = self.queue.front_mut() else {
            return Err(OnReply::Unexpected);
        };
        let done = match slot {
            Slot::Local { .. } => return Err(OnReply::Unexpected),
            Slot::Replace { reply } => {
                self.out.extend_from_slice(reply);
                true
            }
            Slot::Hidden if r.shape.error => return Err(OnReply::HiddenFailed),
            Slot::Hidden => true,
            Slot::Upstream {
                expect,
                sent,
                conceal,
            } => {
                if *conceal {
                    self.out.extend_from_slice(&conceal::filter_info(&r.raw));
                } else {
                    self.out.extend_from_slice(&r.raw);
                }
                if let Some(sent) = sent.take() {
                    metrics
                        .upstream_latency
                        .observe(sent.elapsed().as_secs_f64());
                }
                let error = r.shape.error;
                // Only a reply to a subscribe command is a confirmation;
                // any other reply may merely look like one.
                let confirm = match (r.shape.pubsub, &*expect) {
                    (
                        Some(PubSubWord::Confirm { kind, .. }),
                        Expect::Confirms(_) | Expect::UnsubscribeAll(_),
                    ) => Some(kind),
                    _ => None,
                };
                if let Expect::UnsubscribeAll(kind) = *expect {
                    // Known only now that every earlier confirmation is in.
                    *expect = Expect::Confirms(self.subs.of(kind).max(1) as usize);
                }
                if let Some(kind) = confirm {
                    self.subs.confirmed(kind, r.shape.count);
                }
                let confirm = confirm.is_some();
                match expect {
                    Expect::One => true,
                    Expect::Hello(v) => {
                        if let (false, Some(v)) = (error, *v) {
                            self.proto = v;
                        }
                        true
                    }
                    Expect::Reset => {
                        if !error {
                            self.proto = Proto::Resp2;
                            self.subs = Subscriptions::default();
                        }
                        true
                    }
                    Expect::Confirms(left) => {
                        *left = left.saturating_sub(1);
                        error || !confirm || *left == 0
                    }
                    Expect::UnsubscribeAll(_) => unreachable!("turned into Confirms above"),
                }
            }
        };
        if done {
            self.queue.pop_front();
        }
        Ok(())
    }

    /// After the upstream is gone: every command still waiting gets an
    /// error, the proxy's own replies keep their places.
    fn fail_pending(&mut self) {
        while let Some(slot) = self.queue.pop_front() {
            match slot {
                Slot::Local { reply, close } => {
                    self.out.extend_from_slice(&reply);
                    if close {
                        return;
                    }
                }
                Slot::Upstream { .. } | Slot::Replace { .. } => {
                    self.out.extend_from_slice(&error_reply(UPSTREAM_LOST));
                }
                Slot::Hidden => {}
            }
        }
    }
}

/// The reply half: Redis → client, in command order.
async fn relay_replies<W>(
    mut upstream: UpstreamRead,
    mut client: W,
    mut slots: mpsc::Receiver<Vec<Slot>>,
    shared: &Shared,
) -> ReplyEnd
where
    W: AsyncWrite + Unpin,
{
    let mut reader = ReplyReader::default();
    let mut st = ReplyState {
        queue: VecDeque::new(),
        proto: Proto::Resp2,
        subs: Subscriptions::default(),
        out: BytesMut::with_capacity(16 * 1024),
    };
    let mut requests_done = false;
    let mut close = false;
    loop {
        if let Err(e) = write_client(&mut client, &mut st.out).await {
            return ReplyEnd::ClientWrite(e);
        }
        if close {
            let _ = client.shutdown().await;
            return ReplyEnd::Closed;
        }
        if requests_done && st.queue.is_empty() {
            return ReplyEnd::Done;
        }
        tokio::select! {
            batch = slots.recv(), if !requests_done => match batch {
                Some(batch) => {
                    st.queue.extend(batch);
                    close = st.flush_locals();
                }
                None => requests_done = true,
            },
            read = upstream.read_buf(reader.buffer()) => {
                // Slots are queued before their commands are written, so
                // any slot a reply needs is in the channel by now.
                while let Ok(batch) = slots.try_recv() {
                    st.queue.extend(batch);
                }
                let relayed = match read {
                    Ok(0) | Err(_) => Err(ReplyEnd::UpstreamLost),
                    Ok(_) => relay_buffered(&mut reader, &mut st, &shared.metrics),
                };
                match relayed {
                    Ok(c) => close = c,
                    Err(end) => return fail_session(end, &mut st, &mut client, shared).await,
                }
            }
        }
    }
}

/// Moves every complete reply in the buffer, and the proxy's own replies
/// queued behind them, to the output. Returns true when a reply that
/// closes the connection is due.
fn relay_buffered(
    reader: &mut ReplyReader,
    st: &mut ReplyState,
    metrics: &Metrics,
) -> Result<bool, ReplyEnd> {
    loop {
        if st.flush_locals() {
            return Ok(true);
        }
        let reply = match reader.next_reply(st.next_proto()) {
            Ok(Some(reply)) => reply,
            Ok(None) => return Ok(false),
            Err(e) => return Err(ReplyEnd::UpstreamProtocol(e.to_string())),
        };
        match st.on_reply(reply, metrics) {
            Ok(()) => {}
            Err(OnReply::Unexpected) => {
                return Err(ReplyEnd::UpstreamProtocol(
                    "reply without a pending command".into(),
                ));
            }
            Err(OnReply::HiddenFailed) => {
                return Err(ReplyEnd::UpstreamProtocol(
                    "upstream refused the proxy's credentials after RESET".into(),
                ));
            }
        }
    }
}

/// Ends a session whose upstream failed: pending commands get errors.
async fn fail_session<W>(
    end: ReplyEnd,
    st: &mut ReplyState,
    client: &mut W,
    shared: &Shared,
) -> ReplyEnd
where
    W: AsyncWrite + Unpin,
{
    let kind = match &end {
        ReplyEnd::UpstreamProtocol(_) => "protocol",
        _ => "lost",
    };
    shared
        .metrics
        .upstream_errors
        .with_label_values(&[kind])
        .inc();
    let pending = st.queue.len();
    st.fail_pending();
    if pending > 0 || kind == "protocol" {
        warn!(?end, pending, "upstream connection failed");
    }
    let _ = write_client(client, &mut st.out).await;
    let _ = client.shutdown().await;
    end
}

async fn write_client<W: AsyncWrite + Unpin>(
    client: &mut W,
    out: &mut BytesMut,
) -> std::io::Result<()> {
    if !out.is_empty() {
        client.write_all(out).await?;
        out.clear();
    }
    Ok(())
}
