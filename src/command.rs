//! What a command means for the pipe: how many replies it gets, whether
//! it may block, and whether the proxy can carry it at all.
//!
//! This is the protocol half of classification. It knows Redis command
//! names, not asynq; the asynq command model and the policy decide later
//! whether an identity may send a command, on top of what is decided here.
//! It reads a [`Command`] and touches nothing else.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::resp::{Command, Proto, SubKind};

/// Redis command names (lower case) that get their own metric label.
pub const KNOWN_COMMANDS: &[&str] = &[
    "acl",
    "append",
    "asking",
    "auth",
    "bgrewriteaof",
    "bgsave",
    "bitcount",
    "bitfield",
    "bitfield_ro",
    "bitop",
    "bitpos",
    "blmove",
    "blmpop",
    "blpop",
    "brpop",
    "brpoplpush",
    "bzmpop",
    "bzpopmax",
    "bzpopmin",
    "client",
    "cluster",
    "command",
    "config",
    "copy",
    "dbsize",
    "debug",
    "decr",
    "decrby",
    "del",
    "discard",
    "dump",
    "echo",
    "eval",
    "evalsha",
    "evalsha_ro",
    "eval_ro",
    "exec",
    "exists",
    "expire",
    "expireat",
    "expiretime",
    "failover",
    "fcall",
    "fcall_ro",
    "flushall",
    "flushdb",
    "function",
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius",
    "georadiusbymember",
    "georadiusbymember_ro",
    "georadius_ro",
    "geosearch",
    "geosearchstore",
    "get",
    "getbit",
    "getdel",
    "getex",
    "getrange",
    "getset",
    "hdel",
    "hello",
    "hexists",
    "hexpire",
    "hget",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hpersist",
    "hpexpire",
    "hrandfield",
    "hscan",
    "hset",
    "hsetnx",
    "hstrlen",
    "httl",
    "hvals",
    "incr",
    "incrby",
    "incrbyfloat",
    "info",
    "keys",
    "lastsave",
    "latency",
    "lcs",
    "lindex",
    "linsert",
    "llen",
    "lmove",
    "lmpop",
    "lolwut",
    "lpop",
    "lpos",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "memory",
    "mget",
    "migrate",
    "module",
    "monitor",
    "move",
    "mset",
    "msetnx",
    "multi",
    "object",
    "persist",
    "pexpire",
    "pexpireat",
    "pexpiretime",
    "pfadd",
    "pfcount",
    "pfdebug",
    "pfmerge",
    "pfselftest",
    "ping",
    "psetex",
    "psubscribe",
    "psync",
    "pttl",
    "publish",
    "pubsub",
    "punsubscribe",
    "quit",
    "randomkey",
    "readonly",
    "readwrite",
    "rename",
    "renamenx",
    "replconf",
    "replicaof",
    "reset",
    "restore",
    "restore-asking",
    "role",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "save",
    "scan",
    "scard",
    "script",
    "sdiff",
    "sdiffstore",
    "select",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "shutdown",
    "sinter",
    "sintercard",
    "sinterstore",
    "sismember",
    "slaveof",
    "slowlog",
    "smembers",
    "smismember",
    "smove",
    "sort",
    "sort_ro",
    "spop",
    "spublish",
    "srandmember",
    "srem",
    "sscan",
    "ssubscribe",
    "strlen",
    "subscribe",
    "substr",
    "sunion",
    "sunionstore",
    "sunsubscribe",
    "swapdb",
    "sync",
    "time",
    "touch",
    "ttl",
    "type",
    "unlink",
    "unsubscribe",
    "unwatch",
    "wait",
    "waitaof",
    "watch",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xgroup",
    "xinfo",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xreadgroup",
    "xrevrange",
    "xsetid",
    "xtrim",
    "zadd",
    "zcard",
    "zcount",
    "zdiff",
    "zdiffstore",
    "zincrby",
    "zinter",
    "zintercard",
    "zinterstore",
    "zlexcount",
    "zmpop",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrangestore",
    "zrank",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    "zunion",
    "zunionstore",
];

static BY_NAME: LazyLock<HashMap<&'static [u8], &'static str>> =
    LazyLock::new(|| KNOWN_COMMANDS.iter().map(|n| (n.as_bytes(), *n)).collect());

/// Longest command name looked up; longer names are never known.
const MAX_NAME: usize = 24;

/// The known, lower-case name of a command, if it is one.
pub fn canonical_name(raw: &[u8]) -> Option<&'static str> {
    if raw.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    let lower = &mut lower[..raw.len()];
    lower.copy_from_slice(raw);
    lower.make_ascii_lowercase();
    BY_NAME.get(&*lower).copied()
}

/// The replies Redis sends for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exactly one reply.
    One,
    /// `HELLO`: one reply; on success the connection speaks this version
    /// (`None`: the version does not change).
    Hello(Option<Proto>),
    /// `RESET`: one reply; the connection is back to RESP2, unsubscribed.
    Reset,
    /// One pub/sub confirmation per channel named.
    Confirms(usize),
    /// Unsubscribe from every subscription of a kind: one confirmation
    /// per subscription of that kind held when the command runs, or one
    /// if there is none.
    UnsubscribeAll(SubKind),
}

/// The protocol facts about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// Known lower-case name, for metrics; `None` for unknown names.
    pub name: Option<&'static str>,
    pub expect: Expect,
    /// May wait on data (excluded from the latency histogram).
    pub blocking: bool,
    /// Starts or ends a subscription; refused inside MULTI.
    pub pubsub: bool,
}

/// Classifies `cmd` for the pipe.
pub fn classify(cmd: &Command) -> Classified {
    let name = canonical_name(cmd.name());
    let channels = cmd.args.len() - 1;
    let (expect, blocking, pubsub) = match name.unwrap_or("") {
        "hello" => (Expect::Hello(hello_version(cmd)), false, false),
        "reset" => (Expect::Reset, false, false),
        "subscribe" | "psubscribe" | "ssubscribe" => {
            (Expect::Confirms(channels.max(1)), true, true)
        }
        "unsubscribe" if channels == 0 => (Expect::UnsubscribeAll(SubKind::Channel), true, true),
        "punsubscribe" if channels == 0 => (Expect::UnsubscribeAll(SubKind::Pattern), true, true),
        "sunsubscribe" if channels == 0 => (Expect::UnsubscribeAll(SubKind::Shard), true, true),
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => (Expect::Confirms(channels), true, true),
        "blpop" | "brpop" | "brpoplpush" | "blmove" | "blmpop" | "bzpopmin" | "bzpopmax"
        | "bzmpop" | "wait" | "waitaof" => (Expect::One, true, false),
        "xread" | "xreadgroup" => (Expect::One, has_word(cmd, "block"), false),
        _ => (Expect::One, false, false),
    };
    Classified {
        name,
        expect,
        blocking,
        pubsub,
    }
}

fn hello_version(cmd: &Command) -> Option<Proto> {
    match cmd.args.get(1).map(|a| &a[..]) {
        Some(b"2") => Some(Proto::Resp2),
        Some(b"3") => Some(Proto::Resp3),
        _ => None,
    }
}

fn has_word(cmd: &Command, word: &str) -> bool {
    cmd.args[1..]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(word.as_bytes()))
}

/// Commands the proxy cannot carry whatever the policy says, with the
/// reason given to the client. They change how replies are counted or
/// turn the connection into something other than request/reply.
pub fn unsupported(cmd: &Command, c: &Classified) -> Option<&'static str> {
    match c.name? {
        "monitor" => Some("MONITOR is not available through asynq-guard"),
        "sync" | "psync" | "replconf" => {
            Some("replication commands are not available through asynq-guard")
        }
        "client" if cmd.arg_is(1, "reply") => {
            Some("CLIENT REPLY is not available through asynq-guard")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        Command::from_args(args)
    }

    #[test]
    fn names_are_case_insensitive_and_bounded() {
        assert_eq!(canonical_name(b"EvalSha"), Some("evalsha"));
        assert_eq!(canonical_name(b"nosuchcommand"), None);
        assert_eq!(canonical_name(&[b'a'; 100]), None);
    }

    #[test]
    fn reply_expectations() {
        assert_eq!(classify(&cmd(&["GET", "k"])).expect, Expect::One);
        assert_eq!(
            classify(&cmd(&["hello", "3"])).expect,
            Expect::Hello(Some(Proto::Resp3))
        );
        assert_eq!(classify(&cmd(&["HELLO"])).expect, Expect::Hello(None));
        assert_eq!(
            classify(&cmd(&["SUBSCRIBE", "a", "b"])).expect,
            Expect::Confirms(2)
        );
        assert_eq!(
            classify(&cmd(&["UNSUBSCRIBE"])).expect,
            Expect::UnsubscribeAll(SubKind::Channel)
        );
        assert!(classify(&cmd(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"])).blocking);
        assert!(!classify(&cmd(&["XREAD", "STREAMS", "s", "0"])).blocking);
    }

    #[test]
    fn reply_counting_breakers_are_unsupported() {
        for args in [
            &["MONITOR"][..],
            &["client", "REPLY", "OFF"],
            &["PSYNC", "?", "-1"],
        ] {
            let c = cmd(args);
            assert!(unsupported(&c, &classify(&c)).is_some(), "{args:?}");
        }
        let c = cmd(&["CLIENT", "SETNAME", "x"]);
        assert!(unsupported(&c, &classify(&c)).is_none());
    }
}
