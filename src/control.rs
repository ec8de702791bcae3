//! The proxy's own connection to the upstream Redis, for state the proxy
//! keeps there itself: the buckets of shared rate limits.
//!
//! It also counts capped queues for [`crate::admission`].
//!
//! One connection, opened on first use with the proxy's credentials (the
//! same way as a client's upstream connection, [`crate::upstream`]) and
//! opened again after any error. Commands on it are serialised; each has
//! a deadline. It runs only the proxy's own script, under keys outside
//! asynq's namespace ([`crate::admission::SHARED_PREFIX`]). It touches
//! nothing but that connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::admission::{COUNT_SCRIPT, QueueCheck, SharedCheck};
use crate::config::UpstreamSettings;
use crate::integrity::replies::Source;
use crate::resp::{Proto, ReplyReader};
use crate::upstream::{self, UpstreamRead, UpstreamWrite};

/// GCRA over Redis's clock, in microseconds. KEYS[1] is the bucket (the
/// "theoretical arrival time" of the next enqueue); ARGV[1] the interval
/// between enqueues at the sustained rate; ARGV[2] how far ahead of now
/// that time may run (the burst). Answers `{1, 0}` when admitted, `{0,
/// wait}` with the microseconds until a retry may succeed.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - now - tolerance}
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {1, 0}
";

/// Moves a task that failed its integrity check out of where a worker
/// would take it (KEYS[1]: the active list, or an aggregation set) into
/// the archived set KEYS[3], and drops its lease (KEYS[2]). The task is
/// found by its stored message ARGV[2], never by what the message claims
/// alone: ARGV[3] (the id it claims) is tried first, then every member
/// of KEYS[1]. ARGV[1] is the task key prefix, ARGV[4] the message to
/// archive it with (empty: keep the stored one), ARGV[5] now in unix
/// seconds, ARGV[6] `list` or `zset` (what KEYS[1] is). Answers the id,
/// or nil when the task is not there (any more).
const ARCHIVE: &str = r"
local function holds(id)
  return redis.call('HGET', ARGV[1] .. id, 'msg') == ARGV[2]
end
local id = nil
if ARGV[3] ~= '' and holds(ARGV[3]) then
  id = ARGV[3]
else
  local members
  if ARGV[6] == 'list' then
    members = redis.call('LRANGE', KEYS[1], 0, -1)
  else
    members = redis.call('ZRANGE', KEYS[1], 0, -1)
  end
  for _, m in ipairs(members) do
    if holds(m) then
      id = m
      break
    end
  end
end
if not id then return false end
local removed
if ARGV[6] == 'list' then
  removed = redis.call('LREM', KEYS[1], 0, id)
  redis.call('ZREM', KEYS[2], id)
else
  removed = redis.call('ZREM', KEYS[1], id)
end
if removed == 0 then return false end
redis.call('ZADD', KEYS[3], ARGV[5], id)
if ARGV[4] ~= '' then
  redis.call('HSET', ARGV[1] .. id, 'msg', ARGV[4])
end
redis.call('HSET', ARGV[1] .. id, 'state', 'archived')
return id
";

/// Replaces the message of task KEYS[1] by ARGV[2] if it still is
/// ARGV[1]; answers 1 if it did.
const SWAP: &str = r"
if redis.call('HGET', KEYS[1], 'msg') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'msg', ARGV[2])
  return 1
end
return 0
";

/// How long one round trip may take before the state counts as out of
/// reach.
const DEADLINE: Duration = Duration::from_secs(2);

/// What Redis said about one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Admitted,
    /// Empty; a retry may succeed after this long.
    Empty(Duration),
}

/// The proxy's own upstream connection.
// TODO: one connection, one round trip at a time caps shared checks at about 1/RTT per proxy; pool or pipeline them.
pub struct Control {
    settings: Arc<UpstreamSettings>,
    conn: Mutex<Option<(UpstreamRead, UpstreamWrite)>>,
    sha: String,
    count_sha: String,
    archive_sha: String,
    swap_sha: String,
}

impl Control {
    pub fn new(settings: Arc<UpstreamSettings>) -> Self {
        Control {
            settings,
            conn: Mutex::new(None),
            sha: crate::asynq::catalog::sha1_hex(GCRA.as_bytes()),
            count_sha: crate::asynq::catalog::sha1_hex(COUNT_SCRIPT.as_bytes()),
            archive_sha: crate::asynq::catalog::sha1_hex(ARCHIVE.as_bytes()),
            swap_sha: crate::asynq::catalog::sha1_hex(SWAP.as_bytes()),
        }
    }

    /// Takes a token from a shared limit's bucket.
    ///
    /// # Errors
    ///
    /// Why the bucket could not be reached, in words for the log.
    pub async fn take(&self, check: &SharedCheck) -> Result<Bucket, String> {
        let interval = check.interval_us.to_string();
        let tolerance = check.tolerance_us.to_string();
        let reply = self
            .eval(
                (&self.sha, GCRA),
                &[check.redis_key.as_bytes()],
                &[interval.as_bytes(), tolerance.as_bytes()],
            )
            .await?;
        parse_bucket(&reply)
    }

    /// Counts a capped queue's tasks as its cap says.
    ///
    /// # Errors
    ///
    /// Why the queue could not be counted, in words for the refusal.
    pub async fn count(&self, check: &QueueCheck) -> Result<u64, String> {
        let key = |suffix: &str| format!("asynq:{{{}}}:{suffix}", check.queue);
        let keys = [
            key("pending"),
            key("scheduled"),
            key("retry"),
            key("groups"),
        ];
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let prefix = key("g:");
        let reply = self
            .eval(
                (&self.count_sha, COUNT_SCRIPT),
                &keys,
                &[check.count.as_bytes(), prefix.as_bytes()],
            )
            .await?;
        let text = String::from_utf8_lossy(&reply);
        text.strip_prefix(':')
            .and_then(|n| n.trim_end().parse().ok())
            .ok_or_else(|| format!("Redis answered {}", text.trim_end()))
    }

    /// The stored message of a task (`HGET <task key> msg`); `None` when
    /// there is no such task.
    ///
    /// # Errors
    ///
    /// Why Redis could not be asked, in words for the refusal.
    pub async fn task_message(&self, task_key: &[u8]) -> Result<Option<Bytes>, String> {
        let reply = self
            .round_trip(&upstream::encode_command(&[b"HGET", task_key, b"msg"]))
            .await?;
        parse_bulk(&reply)
    }

    /// Archives a task withheld from a worker (see [`ARCHIVE`]). Returns
    /// the task's id, or `None` when it was no longer where it was read.
    ///
    /// # Errors
    ///
    /// Why Redis could not be asked, in words for the log.
    pub async fn archive(
        &self,
        queue: &str,
        source: &Source,
        stored: &[u8],
        claimed_id: &str,
        archived: Option<&[u8]>,
    ) -> Result<Option<Bytes>, String> {
        let key = |suffix: &str| format!("asynq:{{{queue}}}:{suffix}");
        let (from, kind) = match source {
            Source::Active => (Bytes::from(key("active")), "list"),
            Source::AggregationSet(k) => (k.clone(), "zset"),
        };
        let lease = key("lease");
        let archived_set = key("archived");
        let prefix = key("t:");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let reply = self
            .eval(
                (&self.archive_sha, ARCHIVE),
                &[&from, lease.as_bytes(), archived_set.as_bytes()],
                &[
                    prefix.as_bytes(),
                    stored,
                    claimed_id.as_bytes(),
                    archived.unwrap_or_default(),
                    now.as_bytes(),
                    kind.as_bytes(),
                ],
            )
            .await?;
        parse_bulk(&reply)
    }

    /// Replaces the message of the task at `task_key` by `signed` if it
    /// still is `stored`. Returns whether it did.
    ///
    /// # Errors
    ///
    /// Why Redis could not be asked, in words for the log.
    pub async fn sign_in_place_key(
        &self,
        task_key: &[u8],
        stored: &[u8],
        signed: &[u8],
    ) -> Result<bool, String> {
        let reply = self
            .eval((&self.swap_sha, SWAP), &[task_key], &[stored, signed])
            .await?;
        match &reply[..] {
            b":1\r\n" => Ok(true),
            b":0\r\n" => Ok(false),
            other => Err(format!(
                "Redis answered {}",
                String::from_utf8_lossy(&other[..other.len().min(80)]).trim_end()
            )),
        }
    }

    /// Replaces a task's unsigned message by its signed form, if the task
    /// still holds the message that was read. Returns whether it did.
    ///
    /// # Errors
    ///
    /// Why Redis could not be asked, in words for the log.
    pub async fn sign_in_place(
        &self,
        queue: &str,
        id: &str,
        stored: &[u8],
        signed: &[u8],
    ) -> Result<bool, String> {
        let task_key = format!("asynq:{{{queue}}}:t:{id}");
        self.sign_in_place_key(task_key.as_bytes(), stored, signed)
            .await
    }

    /// Sends one command and returns its raw RESP2 reply.
    ///
    /// # Errors
    ///
    /// Why Redis could not be asked, in words for the log.
    pub async fn command(&self, args: &[&[u8]]) -> Result<Bytes, String> {
        self.round_trip(&upstream::encode_command(args)).await
    }

    /// Runs one of the proxy's scripts by its SHA, sending the body when
    /// Redis does not have it yet.
    async fn eval(
        &self,
        (sha, body): (&str, &str),
        keys: &[&[u8]],
        argv: &[&[u8]],
    ) -> Result<Bytes, String> {
        let numkeys = keys.len().to_string();
        let command = |verb: &[u8], script: &str| {
            let mut args: Vec<&[u8]> = vec![verb, script.as_bytes(), numkeys.as_bytes()];
            args.extend_from_slice(keys);
            args.extend_from_slice(argv);
            upstream::encode_command(&args)
        };
        let reply = self.round_trip(&command(b"EVALSHA", sha)).await?;
        if reply.starts_with(b"-NOSCRIPT") {
            return self.round_trip(&command(b"EVAL", body)).await;
        }
        Ok(reply)
    }

    /// Sends one command and reads its reply, (re)connecting first when
    /// needed; any failure drops the connection.
    async fn round_trip(&self, command: &[u8]) -> Result<Bytes, String> {
        let mut guard = self.conn.lock().await;
        // A connection kept from earlier may have died meanwhile (Redis
        // restarted): when it fails at once, try once more on a new one.
        // The command never reached a Redis that answers, so sending it
        // again cannot apply it twice.
        let reused = guard.is_some();
        for attempt in 0..2 {
            if guard.is_none() {
                let conn = tokio::time::timeout(DEADLINE, upstream::connect(&self.settings))
                    .await
                    .map_err(|_| "connecting timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                *guard = Some(conn);
            }
            let (read, write) = guard.as_mut().expect("connected above");
            let result = tokio::time::timeout(DEADLINE, exchange(read, write, command)).await;
            match result {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(Exchange::Closed)) if reused && attempt == 0 => *guard = None,
                Ok(Err(e)) => {
                    *guard = None;
                    return Err(e.to_string());
                }
                Err(_) => {
                    *guard = None;
                    return Err("no reply in time".into());
                }
            }
        }
        Err("connection closed".into())
    }
}

/// Why one exchange failed.
enum Exchange {
    /// The connection was closed (or reset) before any reply came.
    Closed,
    Other(String),
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exchange::Closed => f.write_str("connection closed"),
            Exchange::Other(e) => f.write_str(e),
        }
    }
}

async fn exchange(
    read: &mut UpstreamRead,
    write: &mut UpstreamWrite,
    command: &[u8],
) -> Result<Bytes, Exchange> {
    let closed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::UnexpectedEof => Exchange::Closed,
        _ => Exchange::Other(e.to_string()),
    };
    write.write_all(command).await.map_err(closed)?;
    let mut replies = ReplyReader::default();
    loop {
        if let Some(reply) = replies
            .next_reply(Proto::Resp2)
            .map_err(|e| Exchange::Other(e.to_string()))?
        {
            return Ok(reply.raw);
        }
        let n = read.read_buf(replies.buffer()).await.map_err(closed)?;
        if n == 0 {
            return Err(Exchange::Closed);
        }
    }
}

/// Reads a bulk string reply (RESP2), nil as `None`.
fn parse_bulk(reply: &[u8]) -> Result<Option<Bytes>, String> {
    if reply.starts_with(b"$-1\r\n") {
        return Ok(None);
    }
    if reply.first() == Some(&b'$')
        && let Some(at) = reply.windows(2).position(|w| w == b"\r\n")
        && let Ok(len) = std::str::from_utf8(&reply[1..at])
            .unwrap_or("")
            .parse::<usize>()
        && reply.len() == at + 2 + len + 2
    {
        return Ok(Some(Bytes::copy_from_slice(&reply[at + 2..at + 2 + len])));
    }
    Err(format!(
        "Redis answered {}",
        String::from_utf8_lossy(&reply[..reply.len().min(80)]).trim_end()
    ))
}

/// Reads the script's `*2\r\n:<admitted>\r\n:<wait>\r\n`.
fn parse_bucket(reply: &[u8]) -> Result<Bucket, String> {
    if reply.first() == Some(&b'-') {
        let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
        return Err(format!("Redis answered {text}"));
    }
    let text = std::str::from_utf8(reply).map_err(|_| "unreadable reply".to_string())?;
    let mut numbers = text
        .split("\r\n")
        .filter_map(|line| line.strip_prefix(':'))
        .map(str::parse::<u64>);
    match (text.starts_with("*2\r\n"), numbers.next(), numbers.next()) {
        (true, Some(Ok(1)), Some(Ok(_))) => Ok(Bucket::Admitted),
        (true, Some(Ok(0)), Some(Ok(wait))) => Ok(Bucket::Empty(Duration::from_micros(wait))),
        _ => Err("unexpected reply to the rate-limit script".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read() {
        assert_eq!(parse_bucket(b"*2\r\n:1\r\n:0\r\n"), Ok(Bucket::Admitted));
        assert_eq!(
            parse_bucket(b"*2\r\n:0\r\n:2500\r\n"),
            Ok(Bucket::Empty(Duration::from_micros(2500)))
        );
        assert!(
            parse_bucket(b"-NOPERM no\r\n")
                .unwrap_err()
                .contains("NOPERM")
        );
        assert!(parse_bucket(b"+OK\r\n").is_err());
    }
}
