//! RESP framing for both directions of the pipe.
//!
//! Requests: clients send arrays of bulk strings. [`RequestReader`] scans
//! the frame headers itself, incrementally, so that every input limit
//! (argument count, bulk length, buffered bytes) is enforced as soon as a
//! header arrives and before the bytes behind it are buffered; a complete
//! frame is then decoded with the `redis-protocol` crate. Inline commands
//! are refused: Redis has quoting rules of its own for them and the proxy
//! must agree with Redis on where every command starts and ends.
//!
//! Replies: [`ReplyReader`] finds reply boundaries with the `redis-protocol`
//! decoder of the connection's protocol version and hands the raw bytes on
//! untouched, with just enough of the shape (error, push, the first word of
//! an array) for the session to keep replies in step with commands.
//!
//! This module owns byte buffers only; it does no I/O of its own beyond
//! what its callers hand it.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode as resp2_decode;
use redis_protocol::resp2::types::{BytesFrame as Resp2Frame, RangeFrame as Resp2Range};
use redis_protocol::resp3::decode::complete as resp3_decode;
use redis_protocol::resp3::types::RangeFrame as Resp3Range;

/// Longest header line (`*<count>` or `$<len>`) accepted, without CRLF.
const MAX_HEADER_LINE: usize = 32;

/// Input limits for one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single argument, in bytes (Redis: `proto-max-bulk-len`).
    pub max_bulk_bytes: usize,
    /// Most arguments in one command, the command name included.
    pub max_args: usize,
    /// Most bytes of one unfinished command held in memory.
    pub max_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_bytes: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_buffer_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Why a client's input cannot be accepted. Every variant ends the
/// connection: after it the proxy no longer knows where commands start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("Protocol error: inline commands are not accepted by asynq-guard, send RESP arrays")]
    Inline,
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: bulk string not terminated by CRLF")]
    Terminator,
    #[error("Protocol error: {0}")]
    Decode(String),
    #[error("asynq-guard limit max_args exceeded: {got} arguments, the limit is {limit}")]
    TooManyArgs { got: u64, limit: usize },
    #[error(
        "asynq-guard limit max_bulk_bytes exceeded: argument of {got} bytes, the limit is {limit}"
    )]
    BulkTooLarge { got: u64, limit: usize },
    #[error("asynq-guard limit max_buffer_bytes exceeded: command needs more than {limit} bytes")]
    BufferFull { limit: usize },
}

impl RequestError {
    /// Short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::TooManyArgs { .. } => "max_args",
            RequestError::BulkTooLarge { .. } => "max_bulk_bytes",
            RequestError::BufferFull { .. } => "max_buffer_bytes",
            RequestError::Inline => "inline_command",
            _ => "protocol",
        }
    }

    /// The error reply sent to the client before the connection closes.
    pub fn to_reply(&self) -> Bytes {
        error_reply(&format!("ERR {self}"))
    }
}

/// One client command: its exact bytes and its arguments.
#[derive(Debug, Clone)]
pub struct Command {
    /// The frame as the client sent it; forwarded unchanged.
    pub raw: Bytes,
    /// The arguments, the command name first; views into `raw`.
    pub args: Vec<Bytes>,
}

impl Command {
    /// The command name, as sent (case is not normalised).
    pub fn name(&self) -> &[u8] {
        &self.args[0]
    }

    /// Whether argument `i` equals `word`, ignoring ASCII case.
    pub fn arg_is(&self, i: usize, word: &str) -> bool {
        self.args
            .get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    }
}

#[cfg(test)]
impl Command {
    /// A command made from its arguments, for tests of the stages that
    /// read commands.
    pub(crate) fn from_args(args: &[&str]) -> Command {
        Command {
            raw: Bytes::new(),
            args: args.iter().map(|a| Bytes::from(a.to_string())).collect(),
        }
    }
}

/// Where the header scan of the current frame stands.
#[derive(Debug, Default)]
struct Scan {
    /// Bytes of the current frame scanned so far.
    pos: usize,
    /// Arguments still to scan; `None` until the `*<count>` line is read.
    args_left: Option<u64>,
    /// Length of the bulk whose header was read but whose body was not.
    bulk: Option<usize>,
}

/// Room offered for a read while the peer sends little: an idle
/// connection holds no more than this per direction.
const ROOM_SMALL: usize = 1024;

/// Room offered for a read after one filled all the room it was given.
const ROOM_LARGE: usize = 16 * 1024;

/// Most room offered for one read, however large the argument coming.
const ROOM_MOST: usize = 1024 * 1024;

/// Sizes the room of a read buffer: small while reads come in small, so
/// that idle connections hold little memory; large once a read has
/// filled the room it was given (pipelines, large values), small again
/// when reads shrink and the buffer is empty.
#[derive(Debug, Default)]
struct Room {
    /// Room offered for the last read; 0 before the first.
    offered: usize,
    /// Buffered length when it was offered.
    mark: usize,
    /// Bytes taken out of the buffer since then.
    taken: usize,
    large: bool,
}

impl Room {
    /// Readies `buf` for the next read, with room for at least `need`
    /// bytes (clamped to [`ROOM_MOST`]).
    fn offer<'a>(&mut self, buf: &'a mut BytesMut, need: usize) -> &'a mut BytesMut {
        if self.offered > 0 {
            let read = (buf.len() + self.taken).saturating_sub(self.mark);
            self.large = read >= self.offered;
        }
        let base = if self.large { ROOM_LARGE } else { ROOM_SMALL };
        if buf.is_empty() && !self.large {
            // A fresh buffer: reserving on the old one could keep its
            // whole (maybe large) allocation alive while idle.
            *buf = BytesMut::new();
        }
        buf.reserve(need.min(ROOM_MOST).max(base));
        self.offered = buf.capacity() - buf.len();
        self.mark = buf.len();
        self.taken = 0;
        buf
    }

    /// Notes `n` bytes split off the front of the buffer.
    fn took(&mut self, n: usize) {
        self.taken += n;
    }
}

/// Outcome of scanning the buffer.
enum Scanned {
    /// A complete command frame of this many bytes.
    Frame(usize),
    /// An empty multibulk (`*0`, `*-1`) or an empty line, of this many
    /// bytes: Redis skips it without a reply, so the proxy drops it.
    Empty(usize),
    /// More bytes are needed; at least this many in total.
    Need(usize),
}

/// Reads client commands out of a growing buffer.
#[derive(Debug)]
pub struct RequestReader {
    buf: BytesMut,
    room: Room,
    scan: Scan,
    limits: Limits,
}

impl RequestReader {
    pub fn new(limits: Limits) -> Self {
        RequestReader {
            buf: BytesMut::new(),
            room: Room::default(),
            scan: Scan::default(),
            limits,
        }
    }

    /// The buffer to read more client bytes into, with room reserved for
    /// the next read (more when a large argument is known to be coming).
    pub fn buffer(&mut self) -> &mut BytesMut {
        let need = match self.scan.bulk {
            Some(len) => (self.scan.pos + len + 2).saturating_sub(self.buf.len()),
            None => 0,
        };
        self.room.offer(&mut self.buf, need)
    }

    /// Changes the limits from the next command on (authentication lifts
    /// the stricter limits of unauthenticated clients).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether bytes of an unfinished command are buffered.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete command, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// A [`RequestError`] when the input breaks the protocol or a limit;
    /// the reader must not be used after that.
    pub fn next_command(&mut self) -> Result<Option<Command>, RequestError> {
        loop {
            match self.scan()? {
                Scanned::Need(total) => {
                    if total > self.limits.max_buffer_bytes {
                        return Err(RequestError::BufferFull {
                            limit: self.limits.max_buffer_bytes,
                        });
                    }
                    return Ok(None);
                }
                Scanned::Empty(len) => {
                    let _ = self.buf.split_to(len);
                    self.room.took(len);
                    self.scan = Scan::default();
                }
                Scanned::Frame(len) => {
                    let raw = self.buf.split_to(len).freeze();
                    self.room.took(len);
                    self.scan = Scan::default();
                    return decode_command(raw).map(Some);
                }
            }
        }
    }

    /// Advances the header scan as far as the buffered bytes allow.
    fn scan(&mut self) -> Result<Scanned, RequestError> {
        let buf = &self.buf[..];
        let s = &mut self.scan;
        if s.args_left.is_none() {
            let Some(&first) = buf.first() else {
                return Ok(Scanned::Need(1));
            };
            // An empty line is an empty inline command, which Redis skips
            // without a reply; so does the proxy (keep-alive probes).
            if buf.starts_with(b"\n") {
                return Ok(Scanned::Empty(1));
            }
            if buf.starts_with(b"\r\n") {
                return Ok(Scanned::Empty(2));
            }
            if buf == b"\r" {
                return Ok(Scanned::Need(2));
            }
            if first != b'*' {
                return Err(RequestError::Inline);
            }
            let Some((count, next)) = header_line(buf, 1)? else {
                return Ok(Scanned::Need(buf.len() + 1));
            };
            let count = count.map_err(|_| RequestError::MultibulkLength)?;
            if count <= 0 {
                return Ok(Scanned::Empty(next));
            }
            if count > i64::from(i32::MAX) {
                return Err(RequestError::MultibulkLength);
            }
            if count as u64 > self.limits.max_args as u64 {
                return Err(RequestError::TooManyArgs {
                    got: count as u64,
                    limit: self.limits.max_args,
                });
            }
            s.args_left = Some(count as u64);
            s.pos = next;
        }
        while let Some(left) = s.args_left.filter(|&n| n > 0) {
            if let Some(len) = s.bulk {
                let end = s.pos + len;
                if buf.len() < end + 2 {
                    return Ok(Scanned::Need(end + 2));
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(RequestError::Terminator);
                }
                s.pos = end + 2;
                s.bulk = None;
                s.args_left = Some(left - 1);
                continue;
            }
            let Some(&marker) = buf.get(s.pos) else {
                return Ok(Scanned::Need(s.pos + 1));
            };
            if marker != b'$' {
                return Err(RequestError::ExpectedBulk(char::from(marker)));
            }
            let Some((len, next)) = header_line(buf, s.pos + 1)? else {
                return Ok(Scanned::Need(buf.len() + 1));
            };
            let len = len.map_err(|_| RequestError::BulkLength)?;
            if len < 0 {
                return Err(RequestError::BulkLength);
            }
            if len as u64 > self.limits.max_bulk_bytes as u64 {
                return Err(RequestError::BulkTooLarge {
                    got: len as u64,
                    limit: self.limits.max_bulk_bytes,
                });
            }
            s.bulk = Some(len as usize);
            s.pos = next;
        }
        Ok(Scanned::Frame(s.pos))
    }
}

/// Reads the integer line starting at `start` (just after the type byte).
/// Returns the parsed value (or `Err(())` when it is not an integer as
/// Redis writes them) and the offset after CRLF; `None` if incomplete.
#[allow(clippy::type_complexity)]
fn header_line(buf: &[u8], start: usize) -> Result<Option<(Result<i64, ()>, usize)>, RequestError> {
    let window = &buf[start.min(buf.len())..];
    let limit = window.len().min(MAX_HEADER_LINE + 1);
    let Some(cr) = window[..limit].iter().position(|&b| b == b'\r') else {
        if window.len() > MAX_HEADER_LINE {
            return Err(RequestError::Decode("header line too long".into()));
        }
        return Ok(None);
    };
    match window.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((parse_int(&window[..cr]), start + cr + 2))),
        Some(_) => Err(RequestError::Decode(
            "header line not terminated by CRLF".into(),
        )),
    }
}

/// Parses an integer the way Redis's `string2ll` does: an optional `-`,
/// no `+`, no spaces, no leading zeros.
pub(crate) fn parse_int(s: &[u8]) -> Result<i64, ()> {
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    // "0" alone is zero; "-0" and leading zeros are not numbers to Redis.
    let plain = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || (digits.len() == 1 && !negative));
    if !plain {
        return Err(());
    }
    std::str::from_utf8(s)
        .map_err(|_| ())?
        .parse()
        .map_err(|_| ())
}

/// Decodes a scanned frame into its arguments with `redis-protocol`.
fn decode_command(raw: Bytes) -> Result<Command, RequestError> {
    let decoded = resp2_decode::decode_bytes(&raw)
        .map_err(|e| RequestError::Decode(e.details().to_string()))?;
    let Some((Resp2Frame::Array(items), used)) = decoded else {
        return Err(RequestError::Decode("not a complete array".into()));
    };
    if used != raw.len() {
        return Err(RequestError::Decode("frame length mismatch".into()));
    }
    let args = items
        .into_iter()
        .map(|item| match item {
            Resp2Frame::BulkString(b) => Ok(b),
            _ => Err(RequestError::Decode("expected bulk string".into())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Command { raw, args })
}

/// The RESP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

/// Why an upstream reply could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed reply from upstream: {0}")]
pub struct ReplyError(String);

/// What the session needs to know of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyShape {
    /// An error reply (`-…` or `!…`).
    pub error: bool,
    /// A RESP3 push frame (`>…`).
    pub push: bool,
    /// For arrays and pushes whose first element is a pub/sub word.
    pub pubsub: Option<PubSubWord>,
    /// For pub/sub confirmations: the subscription count they carry.
    pub count: Option<i64>,
}

/// The words that start pub/sub frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubWord {
    /// `message`, `pmessage`, `smessage`: a delivery.
    Message,
    /// `subscribe`, `unsubscribe` and the p/s variants: a confirmation of
    /// a subscription of `kind` being added (`subscribe`) or removed.
    Confirm { kind: SubKind, subscribe: bool },
}

/// The three kinds of subscription Redis keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    Channel,
    Pattern,
    Shard,
}

/// One reply from upstream: its bytes and its shape.
#[derive(Debug)]
pub struct Reply {
    pub raw: Bytes,
    pub shape: ReplyShape,
}

/// Reads replies out of the upstream byte stream.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: BytesMut,
    room: Room,
}

impl ReplyReader {
    /// The buffer to read more upstream bytes into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.room.offer(&mut self.buf, 0)
    }

    /// The next complete reply, decoded as `proto`.
    ///
    /// # Errors
    ///
    /// A [`ReplyError`] when the bytes are not RESP of that version.
    pub fn next_reply(&mut self, proto: Proto) -> Result<Option<Reply>, ReplyError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let found = match proto {
            Proto::Resp2 => resp2_decode::decode_range(&self.buf)
                .map(|o| o.map(|(f, n)| (shape_resp2(&self.buf, &f), n))),
            Proto::Resp3 => resp3_decode::decode_range(&self.buf)
                .map(|o| o.map(|(f, n)| (shape_resp3(&self.buf, &f), n))),
        }
        .map_err(|e| ReplyError(e.details().to_string()))?;
        Ok(found.map(|(shape, n)| {
            self.room.took(n);
            Reply {
                raw: self.buf.split_to(n).freeze(),
                shape,
            }
        }))
    }
}

fn pubsub_word(word: &[u8]) -> Option<PubSubWord> {
    match word {
        b"message" | b"pmessage" | b"smessage" => Some(PubSubWord::Message),
        _ => {
            let (kind, subscribe) = match word {
                b"subscribe" => (SubKind::Channel, true),
                b"unsubscribe" => (SubKind::Channel, false),
                b"psubscribe" => (SubKind::Pattern, true),
                b"punsubscribe" => (SubKind::Pattern, false),
                b"ssubscribe" => (SubKind::Shard, true),
                b"sunsubscribe" => (SubKind::Shard, false),
                _ => return None,
            };
            Some(PubSubWord::Confirm { kind, subscribe })
        }
    }
}

fn shape_resp2(buf: &[u8], frame: &Resp2Range) -> ReplyShape {
    match frame {
        Resp2Range::Error(_) => ReplyShape {
            error: true,
            ..ReplyShape::default()
        },
        Resp2Range::Array(items) => {
            let pubsub = match items.first() {
                Some(Resp2Range::BulkString((a, b))) => pubsub_word(&buf[*a..*b]),
                _ => None,
            };
            let count = match items.get(2) {
                Some(Resp2Range::Integer(n)) => Some(*n),
                _ => None,
            };
            ReplyShape {
                pubsub,
                count,
                ..ReplyShape::default()
            }
        }
        _ => ReplyShape::default(),
    }
}

fn shape_resp3(buf: &[u8], frame: &Resp3Range) -> ReplyShape {
    let (items, push) = match frame {
        Resp3Range::SimpleError { .. } | Resp3Range::BlobError { .. } => {
            return ReplyShape {
                error: true,
                ..ReplyShape::default()
            };
        }
        Resp3Range::Array { data, .. } => (data, false),
        Resp3Range::Push { data, .. } => (data, true),
        _ => return ReplyShape::default(),
    };
    let pubsub = match items.first() {
        Some(Resp3Range::BlobString { data: (a, b), .. })
        | Some(Resp3Range::SimpleString { data: (a, b), .. }) => pubsub_word(&buf[*a..*b]),
        _ => None,
    };
    let count = match items.get(2) {
        Some(Resp3Range::Number { data, .. }) => Some(*data),
        _ => None,
    };
    ReplyShape {
        error: false,
        push,
        pubsub,
        count,
    }
}

/// Encodes an error reply; `text` starts with the error code (`ERR …`).
/// Line breaks in `text` are replaced so the reply stays one frame.
pub fn error_reply(text: &str) -> Bytes {
    let clean: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Bytes::from(format!("-{clean}\r\n"))
}

#[cfg(test)]
mod tests;
