//! The reply half of a session: Redis's replies to the client, in
//! command order.
//!
//! It owns the queue of [`Slot`]s the request half fills, the connection's
//! protocol version and its subscriptions, all learnt from replies: a
//! HELLO reply switches the version, pub/sub confirmations change the
//! subscriptions, deliveries that answer no command pass straight
//! through. It writes to the client socket and reads the upstream socket;
//! it never writes upstream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::BytesMut;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use tracing::{info, warn};

use super::{Shared, Slot, UPSTREAM_LOST};
use crate::command::Expect;
use crate::conceal;
use crate::gate::AUDIT;
use crate::integrity::{self, Integrity, replies::Fix};
use crate::metrics::Metrics;
use crate::reload::Live;
use crate::resp::{Proto, PubSubWord, Reply, ReplyReader, SubKind, error_reply};
use crate::upstream::UpstreamRead;

/// Why the reply half stopped (fields are read through `Debug` in logs).
#[derive(Debug)]
#[allow(dead_code)]
pub(super) enum ReplyEnd {
    /// Every command was answered and the client sends no more.
    Done,
    /// A reply that closes the connection was written.
    Closed,
    ClientWrite(std::io::Error),
    UpstreamLost,
    UpstreamProtocol(String),
    /// The identity was revoked while a blocking command waited: what the
    /// client is still owed, to be written once the upstream connection
    /// is closed.
    Revoked(BytesMut),
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
    /// Shared with the request half, which limits it.
    pending: Arc<AtomicUsize>,
    /// The proxy's Redis user, hidden in error replies.
    upstream_user: Option<String>,
    proto: Proto,
    subs: Subscriptions,
    out: BytesMut,
    integrity: Arc<Integrity>,
    /// What must change in Redis before the replies in `out` go out:
    /// tasks withheld from a worker are archived first.
    fixes: Vec<Fix>,
}

impl ReplyState {
    /// Whether a command that may wait on data (BLPOP, SUBSCRIBE …) is
    /// still owed a reply; only those are sent without a timestamp.
    fn blocked(&self) -> bool {
        self.queue
            .iter()
            .any(|s| matches!(s, Slot::Upstream { sent: None, .. }))
    }

    /// Retires the slot at the head of the queue.
    fn pop(&mut self) -> Option<Slot> {
        let slot = self.queue.pop_front()?;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Some(slot)
    }

    /// Moves the proxy's own replies at the head of the queue to the
    /// output; true if one of them closes the connection.
    fn flush_locals(&mut self) -> bool {
        while let Some(Slot::Local { .. }) = self.queue.front() {
            let Some(Slot::Local { reply, close }) = self.pop() else {
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
                check,
                ..
            } => {
                let scrubbed = match (&self.upstream_user, r.shape.error) {
                    (Some(user), true) => conceal::scrub_error(&r.raw, user),
                    _ => None,
                };
                let checked = match check {
                    Some(check) if !r.shape.error => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        let (reply, fixes) = integrity::replies::rewrite(
                            &r.raw,
                            self.proto,
                            check,
                            &self.integrity,
                            now,
                        );
                        self.fixes.extend(fixes);
                        reply
                    }
                    _ => None,
                };
                if let Some(scrubbed) = scrubbed {
                    self.out.extend_from_slice(&scrubbed);
                } else if let Some(checked) = checked {
                    self.out.extend_from_slice(&checked);
                } else if *conceal {
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
            self.pop();
        }
        Ok(())
    }

    /// After the upstream is gone: every command still waiting gets an
    /// error, the proxy's own replies keep their places.
    fn fail_pending(&mut self) {
        self.fail_pending_with(UPSTREAM_LOST);
    }

    /// Answers every command still waiting with the error `text`.
    fn fail_pending_with(&mut self, text: &str) {
        while let Some(slot) = self.pop() {
            match slot {
                Slot::Local { reply, close } => {
                    self.out.extend_from_slice(&reply);
                    if close {
                        return;
                    }
                }
                Slot::Upstream { .. } | Slot::Replace { .. } => {
                    self.out.extend_from_slice(&error_reply(text));
                }
                Slot::Hidden => {}
            }
        }
    }
}

/// The reply half: Redis → client, in command order.
pub(super) async fn relay_replies<W>(
    mut upstream: UpstreamRead,
    client: &mut W,
    mut slots: mpsc::UnboundedReceiver<Vec<Slot>>,
    pending: Arc<AtomicUsize>,
    client_gone: Arc<AtomicBool>,
    revoked: Arc<std::sync::OnceLock<String>>,
    live: &Live,
) -> ReplyEnd
where
    W: AsyncWrite + Unpin,
{
    let mut shared = live.load();
    let mut reader = ReplyReader::default();
    let mut st = ReplyState {
        queue: VecDeque::new(),
        pending,
        upstream_user: shared.upstream.username.clone(),
        proto: Proto::Resp2,
        subs: Subscriptions::default(),
        out: BytesMut::new(),
        integrity: Arc::clone(&shared.integrity),
        fixes: Vec::new(),
    };
    let mut requests_done = false;
    let mut close = false;
    loop {
        // Replies are checked under the policy in force when they come.
        let now = live.load();
        if now.generation != shared.generation {
            st.integrity = Arc::clone(&now.integrity);
            shared = now;
        }
        let shared = &*shared;
        if !st.fixes.is_empty() {
            // Boxed: rare, and large enough to weigh on every
            // connection's memory if kept inline.
            Box::pin(apply_fixes(std::mem::take(&mut st.fixes), shared)).await;
        }
        if let Err(e) = write_client(client, &mut st.out).await {
            return ReplyEnd::ClientWrite(e);
        }
        if close {
            let _ = client.shutdown().await;
            return ReplyEnd::Closed;
        }
        if requests_done && st.queue.is_empty() {
            return ReplyEnd::Done;
        }
        if requests_done
            && st.blocked()
            && let Some(why) = revoked.get()
        {
            // The identity was revoked: what Redis answers at once is
            // relayed, but a blocking command is not waited for.
            st.fail_pending_with(why);
            return ReplyEnd::Revoked(std::mem::take(&mut st.out));
        }
        if requests_done && client_gone.load(Ordering::Relaxed) && st.blocked() {
            // The client is gone and a blocking command waits: Redis
            // would drop the connection now, so that a value pushed
            // later is not popped for nobody.
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
                    Err(end) => {
                        return Box::pin(fail_session(end, &mut st, client, shared)).await;
                    }
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

/// Carries out in Redis what checking replies asked for, counting and
/// auditing each (never a payload).
async fn apply_fixes(fixes: Vec<Fix>, shared: &Shared) {
    let m = &shared.metrics;
    for fix in fixes {
        match fix {
            Fix::Archive {
                queue,
                source,
                stored,
                claimed_id,
                archived,
                failure,
            } => {
                let label = m.queue_label(&queue);
                m.integrity_failures
                    .with_label_values(&[&label, failure.label(), "deliver"])
                    .inc();
                let done = shared
                    .control
                    .archive(&queue, &source, &stored, &claimed_id, archived.as_deref())
                    .await;
                let outcome = match &done {
                    Ok(Some(_)) => "archived",
                    Ok(None) => "gone",
                    Err(_) => "failed",
                };
                if let (Ok(Some(id)), Some(written)) = (&done, &archived) {
                    show_under_own_task(shared, &queue, id, &stored, written, &failure).await;
                }
                m.integrity_archived
                    .with_label_values(&[&label, outcome])
                    .inc();
                let task_id = match &done {
                    Ok(Some(id)) => crate::asynq::shown(id),
                    _ => crate::asynq::shown(claimed_id.as_bytes()),
                };
                let error = done.err();
                warn!(target: AUDIT, event = "integrity", queue = %queue, task_id, reason = failure.label(), why = %failure.text(), outcome, error, "task withheld from a worker");
            }
            Fix::SignInPlace {
                queue,
                id,
                stored,
                signed,
            } => match shared
                .control
                .sign_in_place(&queue, &id, &stored, &signed)
                .await
            {
                Ok(true) => {
                    m.integrity_signed
                        .with_label_values(&[&m.queue_label(&queue), "grace"])
                        .inc();
                    info!(target: AUDIT, event = "integrity", queue = %queue, task_id = %crate::asynq::shown(id.as_bytes()), "unsigned task accepted in the grace period and signed");
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(queue = %queue, error = %e, "could not sign a task accepted in the grace period");
                }
            },
            Fix::Marked { queue, failure } => {
                m.integrity_failures
                    .with_label_values(&[&m.queue_label(&queue), failure.label(), "inspect"])
                    .inc();
                info!(target: AUDIT, event = "integrity", queue = %queue, reason = failure.label(), why = %failure.text(), "failing task shown to an inspector, marked");
            }
        }
    }
}

/// A message copied from another task or queue is archived under the
/// task that held it: rewrite its id and queue to that task's, so that
/// an operator can find, delete or inspect it by the id it is listed
/// under.
async fn show_under_own_task(
    shared: &Shared,
    queue: &str,
    id: &[u8],
    stored: &[u8],
    written: &[u8],
    failure: &integrity::Failure,
) {
    let Ok(id_text) = std::str::from_utf8(id) else {
        return;
    };
    let Some(own) = Integrity::archived_message(
        stored,
        failure,
        crate::asynq::message::decode(written).map_or(0, |m| m.last_failed_at),
        Some((queue, id_text)),
    ) else {
        return;
    };
    if own == written {
        return;
    }
    let mut key = format!("asynq:{{{queue}}}:t:").into_bytes();
    key.extend_from_slice(id);
    if let Err(e) = shared.control.sign_in_place_key(&key, written, &own).await {
        warn!(queue = %queue, error = %e, "could not relabel an archived task under its own id");
    }
}

async fn write_client<W: AsyncWrite + Unpin>(
    client: &mut W,
    out: &mut BytesMut,
) -> std::io::Result<()> {
    if !out.is_empty() {
        client.write_all(out).await?;
        super::empty_out(out);
    }
    Ok(())
}
