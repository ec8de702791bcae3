//! Task integrity: signatures added to task messages on their way into
//! Redis and checked on their way out, so that a task written into Redis
//! by anyone but an authorized producer is never handed to a worker.
//!
//! Each queue has a mode ([`Mode`]): `off`; `add`, where the proxy signs
//! what authorized producers enqueue; `check`, where producers sign their
//! own tasks (the `asynq-guard-signature` header) and unsigned or wrongly
//! signed enqueues are refused. In both signing modes:
//!
//! - enqueues store the message with the proxy's signature inside it
//!   ([`sign`], protobuf field 1001);
//! - a worker writing a task back (retry, archive, mark as complete) may
//!   change only what asynq lets it change; the proxy compares the signed
//!   fields with the stored task's and signs the new message;
//! - every reply carrying messages is checked ([`replies`]): a failing
//!   message on the way to a worker is withheld and its task archived
//!   with the reason; inspectors see failing tasks marked in their error
//!   field. Signatures are removed before any message reaches a client.
//!
//! A queue may accept unsigned tasks until a set time (rolling integrity
//! out over tasks already in Redis): such a task is signed in place when
//! it is first read and delivered. This module holds keys and modes, and
//! a bounded memory of the signatures it handed out; it touches nothing
//! else (the Redis work is [`crate::control`]'s).

pub mod replies;
pub mod rollout;
pub mod sign;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use glob::Pattern;
use prost::Message;

use crate::asynq::message::{self, TaskMessage};
use sign::{Carried, Signature};

/// How many task signatures the proxy remembers from the messages it
/// handed to workers, for checking their write-backs without a round
/// trip. Past it the memory starts over (write-backs then read the
/// stored task from Redis).
const REMEMBERED: usize = 100_000;

/// What a queue's tasks must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// The proxy signs what authorized producers enqueue.
    Add,
    /// Producers sign; the proxy refuses what they did not sign.
    Check,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "off" => Some(Mode::Off),
            "add" => Some(Mode::Add),
            "check" => Some(Mode::Check),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Add => "add",
            Mode::Check => "check",
        }
    }
}

/// The mode of the queues its patterns match (the first rule naming a
/// queue decides).
#[derive(Debug, Clone)]
pub struct QueueRule {
    pub queues: Vec<Pattern>,
    pub mode: Mode,
    /// Unsigned tasks are accepted (and signed) until this time.
    pub accept_unsigned_until: Option<SystemTime>,
}

/// A signing key.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// Why a message failed its check. The label is for metrics; the text
/// for the archived task's error, refusals and logs (never the payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not a task message at all.
    Undecodable,
    /// No signature.
    Unsigned,
    /// A signature field that cannot be read, or more than one.
    Malformed,
    /// Signed with a key that is not (or no longer) listed.
    UnknownKey(String),
    /// The signature does not match the message.
    Mismatch,
    /// A message of another queue.
    WrongQueue(String),
    /// A message of another task.
    WrongTask,
    /// A task the proxy archived earlier for failing its check; its
    /// error says why.
    Quarantined,
}

/// How every integrity error a task is archived or shown with begins.
const ARCHIVED_ERROR_PREFIX: &str = "asynq-guard: integrity check failed: ";

impl Failure {
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Undecodable => "undecodable",
            Failure::Unsigned => "unsigned",
            Failure::Malformed => "malformed_signature",
            Failure::UnknownKey(_) => "unknown_key",
            Failure::Mismatch => "bad_signature",
            Failure::WrongQueue(_) => "wrong_queue",
            Failure::WrongTask => "wrong_task",
            Failure::Quarantined => "quarantined",
        }
    }

    pub fn text(&self) -> String {
        match self {
            Failure::Undecodable => "the stored message is not an asynq task message".into(),
            Failure::Unsigned => "the task carries no signature".into(),
            Failure::Malformed => "the task's signature is malformed".into(),
            Failure::UnknownKey(id) => format!(
                "the task is signed with key '{}', which is not a listed key",
                crate::asynq::shown(id.as_bytes())
            ),
            Failure::Mismatch => {
                "the signature does not match the task (signed with another key's secret, or altered since it was signed)".into()
            }
            Failure::WrongQueue(q) => format!(
                "the message belongs to queue '{}'",
                crate::asynq::shown(q.as_bytes())
            ),
            Failure::WrongTask => "the message belongs to another task".into(),
            Failure::Quarantined => {
                "the task carries asynq-guard's quarantine mark (archived for failing its check)"
                    .into()
            }
        }
    }

    /// The error asynq shows for an archived task that failed.
    pub fn archived_error(&self) -> String {
        format!("{ARCHIVED_ERROR_PREFIX}{}", self.text())
    }

    /// Whether an error message already says the integrity check failed.
    pub fn explained(error_msg: &str) -> bool {
        error_msg.starts_with(ARCHIVED_ERROR_PREFIX)
    }
}

/// A stored message that passed its check, without its signature.
#[derive(Debug)]
pub struct Read {
    /// What the client gets.
    pub stripped: Vec<u8>,
    pub msg: TaskMessage,
    /// When the task was unsigned and accepted in the grace period: the
    /// signed message to store in its place.
    pub sign_in_place: Option<Vec<u8>>,
}

/// Keys, modes and the memory of handed-out signatures.
#[derive(Debug, Default)]
pub struct Integrity {
    keys: Vec<Key>,
    /// Index in `keys` of the key that signs.
    signing: Option<usize>,
    rules: Vec<QueueRule>,
    handed_out: Arc<Mutex<HashMap<(String, String), Signature>>>,
}

impl Integrity {
    /// # Panics
    ///
    /// If `sign_with` is not one of `keys` (configuration validates it).
    pub fn new(keys: Vec<Key>, sign_with: Option<&str>, rules: Vec<QueueRule>) -> Self {
        let signing = sign_with.map(|id| {
            keys.iter()
                .position(|k| k.id == id)
                .expect("validated signing key")
        });
        Integrity {
            keys,
            signing,
            rules,
            handed_out: Arc::default(),
        }
    }

    /// Whether any queue is in a signing mode.
    pub fn active(&self) -> bool {
        self.rules.iter().any(|r| r.mode != Mode::Off)
    }

    fn rule(&self, queue: &str) -> Option<&QueueRule> {
        self.rules
            .iter()
            .find(|r| r.queues.iter().any(|p| p.matches(queue)))
    }

    /// The queue's mode.
    pub fn mode(&self, queue: &str) -> Mode {
        self.rule(queue).map_or(Mode::Off, |r| r.mode)
    }

    fn in_grace(&self, queue: &str) -> bool {
        self.rule(queue)
            .and_then(|r| r.accept_unsigned_until)
            .is_some_and(|until| SystemTime::now() < until)
    }

    fn key(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The proxy's signature of `m`.
    fn sign(&self, m: &TaskMessage) -> Signature {
        let key = &self.keys[self.signing.expect("a signing mode has a signing key")];
        Signature {
            key_id: key.id.clone(),
            mac: sign::mac(&key.secret, &sign::canonical(m)),
        }
    }

    fn check_signature(&self, m: &TaskMessage, sig: &Signature) -> Result<(), Failure> {
        let key = self
            .key(&sig.key_id)
            .ok_or_else(|| Failure::UnknownKey(sig.key_id.clone()))?;
        if sign::verify(&key.secret, &sign::canonical(m), &sig.mac) {
            Ok(())
        } else {
            Err(Failure::Mismatch)
        }
    }

    /// A producer's task message on its way into `queue`: the message to
    /// store instead, or `None` when the queue is not signed.
    ///
    /// # Errors
    ///
    /// The refusal's reason, in `check` mode, for a task its producer did
    /// not sign (or signed wrongly).
    pub fn on_enqueue(&self, queue: &str, bytes: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
        let mode = self.mode(queue);
        if mode == Mode::Off {
            return Ok(None);
        }
        // Whatever a producer put in the carrier field is not ours.
        let (stripped, _) = sign::take_carrier(bytes);
        let msg = message::decode(&stripped).map_err(|_| Failure::Undecodable)?;
        if mode == Mode::Check {
            let header = msg.headers.get(sign::HEADER).ok_or(Failure::Unsigned)?;
            let sig = Signature::parse(header.as_bytes()).ok_or(Failure::Malformed)?;
            self.check_signature(&msg, &sig)?;
        }
        Ok(Some(sign::with_carrier(&stripped, &self.sign(&msg))))
    }

    /// A stored message of `queue` on its way out of Redis (of the task
    /// `id` when the caller knows it).
    ///
    /// # Errors
    ///
    /// Why the message fails its check.
    pub fn on_read(&self, queue: &str, id: Option<&[u8]>, bytes: &[u8]) -> Result<Read, Failure> {
        let (stripped, carried) = sign::take_carrier(bytes);
        if carried == Carried::Quarantined {
            return Err(Failure::Quarantined);
        }
        let msg = message::decode(&stripped).map_err(|_| Failure::Undecodable)?;
        if msg.queue != queue {
            return Err(Failure::WrongQueue(msg.queue));
        }
        if id.is_some_and(|id| id != msg.id.as_bytes()) {
            return Err(Failure::WrongTask);
        }
        let sign_in_place = match carried {
            Carried::One(sig) => {
                self.check_signature(&msg, &sig)?;
                self.remember(queue, &msg.id, sig);
                None
            }
            Carried::Malformed => return Err(Failure::Malformed),
            Carried::Quarantined => return Err(Failure::Quarantined),
            Carried::None if self.in_grace(queue) => {
                let sig = self.sign(&msg);
                let signed = sign::with_carrier(&stripped, &sig);
                self.remember(queue, &msg.id, sig);
                Some(signed)
            }
            Carried::None => return Err(Failure::Unsigned),
        };
        Ok(Read {
            stripped,
            msg,
            sign_in_place,
        })
    }

    /// For signing tasks in place ([`rollout`]): `None` when the stored
    /// message of task `id` is signed and valid, its signed form when it
    /// is unsigned (and otherwise a task of this queue and id).
    ///
    /// # Errors
    ///
    /// Why a signed message fails its check, or why an unsigned one is
    /// not this task's.
    pub fn sign_unsigned(
        &self,
        queue: &str,
        id: &[u8],
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, Failure> {
        let (stripped, carried) = sign::take_carrier(bytes);
        let msg = message::decode(&stripped).map_err(|_| Failure::Undecodable)?;
        if msg.queue != queue {
            return Err(Failure::WrongQueue(msg.queue));
        }
        if id != msg.id.as_bytes() {
            return Err(Failure::WrongTask);
        }
        match carried {
            Carried::One(sig) => self.check_signature(&msg, &sig).map(|()| None),
            Carried::Malformed => Err(Failure::Malformed),
            Carried::Quarantined => Err(Failure::Quarantined),
            Carried::None => Ok(Some(sign::with_carrier(&stripped, &self.sign(&msg)))),
        }
    }

    /// Keeps what `old` remembers of the tasks it handed out, when a
    /// reloaded policy replaces it, so that their write-backs still check.
    pub fn carry_over(&mut self, old: &Integrity) {
        self.handed_out = Arc::clone(&old.handed_out);
    }

    fn remember(&self, queue: &str, id: &str, sig: Signature) {
        let mut seen = self
            .handed_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert((queue.to_string(), id.to_string()), sig);
    }

    /// The signature of the task as the proxy last handed it out.
    pub fn handed_out(&self, queue: &str, id: &str) -> Option<Signature> {
        self.handed_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(queue.to_string(), id.to_string()))
            .cloned()
    }

    /// A worker's (or inspector's) new message for a task whose signature
    /// is `known`: the signed message to store instead.
    ///
    /// # Errors
    ///
    /// When the new message changes a signed field (`Mismatch`), or
    /// belongs to another task or queue.
    pub fn on_write_back(
        &self,
        queue: &str,
        id: &[u8],
        bytes: &[u8],
        known: &Signature,
    ) -> Result<Vec<u8>, Failure> {
        let (stripped, msg) = self.decode_write(queue, id, bytes)?;
        self.check_signature(&msg, known)?;
        Ok(sign::with_carrier(&stripped, &self.sign(&msg)))
    }

    /// Like [`Integrity::on_write_back`], against the task's message as
    /// stored in Redis (`None`: the task is gone).
    ///
    /// # Errors
    ///
    /// When the stored message fails its own check, or the new one
    /// changes a signed field of it.
    pub fn on_write_back_stored(
        &self,
        queue: &str,
        id: &[u8],
        bytes: &[u8],
        stored: Option<&[u8]>,
    ) -> Result<Vec<u8>, Failure> {
        let stored = stored.ok_or(Failure::WrongTask)?;
        let read = self.on_read(queue, Some(id), stored)?;
        let (stripped, msg) = self.decode_write(queue, id, bytes)?;
        if sign::canonical(&msg) != sign::canonical(&read.msg) {
            return Err(Failure::Mismatch);
        }
        Ok(sign::with_carrier(&stripped, &self.sign(&msg)))
    }

    /// An inspector's new payload (UpdateTaskPayload): signed anew in
    /// `add` mode; in `check` mode only with a producer's signature.
    ///
    /// # Errors
    ///
    /// Why the message cannot be stored.
    pub fn on_update(&self, queue: &str, id: &[u8], bytes: &[u8]) -> Result<Vec<u8>, Failure> {
        let (stripped, msg) = self.decode_write(queue, id, bytes)?;
        if self.mode(queue) == Mode::Check {
            let header = msg.headers.get(sign::HEADER).ok_or(Failure::Unsigned)?;
            let sig = Signature::parse(header.as_bytes()).ok_or(Failure::Malformed)?;
            self.check_signature(&msg, &sig)?;
        }
        Ok(sign::with_carrier(&stripped, &self.sign(&msg)))
    }

    fn decode_write(
        &self,
        queue: &str,
        id: &[u8],
        bytes: &[u8],
    ) -> Result<(Vec<u8>, TaskMessage), Failure> {
        let (stripped, _) = sign::take_carrier(bytes);
        let msg = message::decode(&stripped).map_err(|_| Failure::Undecodable)?;
        if msg.queue != queue {
            return Err(Failure::WrongQueue(msg.queue));
        }
        if msg.id.as_bytes() != id {
            return Err(Failure::WrongTask);
        }
        Ok((stripped, msg))
    }

    /// The message to archive in place of one that failed: its own
    /// fields with the error set, marked as archived by the proxy (never
    /// valid again), or `None` when it cannot be decoded (the bytes stay
    /// as they are). `task` is the queue and id it is stored under, when
    /// known: a message copied from elsewhere is shown under them.
    pub fn archived_message(
        bytes: &[u8],
        failure: &Failure,
        now: i64,
        task: Option<(&str, &str)>,
    ) -> Option<Vec<u8>> {
        let (stripped, _) = sign::take_carrier(bytes);
        let mut msg = message::decode(&stripped).ok()?;
        // A task the proxy archived keeps the reason it gave then; a
        // quarantine mark written by someone else (it carries no proof)
        // does not hide why the task is refused.
        if !Failure::explained(&msg.error_msg) {
            msg.error_msg = failure.archived_error();
        }
        msg.last_failed_at = now;
        if let Some((queue, id)) = task {
            msg.queue = queue.to_string();
            msg.id = id.to_string();
        }
        Some(sign::with_quarantine(&msg.encode_to_vec(), failure.label()))
    }
}

#[cfg(test)]
#[path = "integrity/tests.rs"]
mod tests;
