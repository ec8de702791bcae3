//! Keeping the upstream's address, credentials and settings from clients.
//!
//! Only the proxy knows where Redis is and how it logs in there. Commands
//! whose replies would tell (the connection list, the configuration, ACL
//! users, replication and cluster topology, the slow log with client
//! addresses) are refused; `INFO` is answered with the lines that name
//! ports, paths and peer addresses removed. This module reads commands
//! and rewrites one reply; it keeps no state.

use bytes::{Bytes, BytesMut};

use crate::resp::Command;

/// `CLIENT` subcommands that only concern the caller's own connection.
const CLIENT_OWN: &[&str] = &[
    "setname",
    "getname",
    "setinfo",
    "id",
    "tracking",
    "trackinginfo",
    "caching",
    "getredir",
    "no-touch",
];

/// `CLUSTER` subcommands that tell nothing about nodes or addresses
/// (asynq's Inspector asks for key slots). Every other one is refused:
/// an allow-list, because Redis matches subcommand names only up to a
/// NUL byte, so a deny-list can be walked around.
const CLUSTER_HARMLESS: &[&str] = &["keyslot", "info", "countkeysinslot", "myid"];

/// Commands that make Redis connect out to an address the client names,
/// send data or credentials there, or crash: never through the proxy.
const OUTBOUND_OR_DEBUG: &[&str] = &["replicaof", "slaveof", "migrate", "failover", "debug"];

/// `INFO` fields that name the upstream's ports, files or peers.
fn hidden_info_field(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "tcp_port",
        "executable",
        "config_file",
        "master_host",
        "master_port",
        "unixsocket",
    ];
    let numbered = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    EXACT.contains(&key) || numbered("slave") || numbered("listener")
}

/// Why the proxy refuses `cmd` to keep the upstream concealed, if it does.
pub fn refusal(cmd: &Command, name: Option<&'static str>) -> Option<String> {
    let sub = || {
        cmd.args
            .get(1)
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .unwrap_or_default()
    };
    let name = name?;
    if OUTBOUND_OR_DEBUG.contains(&name) {
        return Some(format!(
            "NOPERM asynq-guard: {} is refused, it would make the upstream Redis connect out or expose its internals",
            name.to_uppercase()
        ));
    }
    let reveals = match name {
        "config" | "acl" | "slowlog" | "role" | "module" | "monitor" => true,
        "client" if sub() == "tracking" => has_redirect(cmd),
        "client" => !CLIENT_OWN.contains(&sub().as_str()),
        "cluster" => !CLUSTER_HARMLESS.contains(&sub().as_str()),
        _ => false,
    };
    reveals.then(|| {
        let what = match name {
            "client" | "cluster" => format!("{} {}", name.to_uppercase(), sub().to_uppercase()),
            n => n.to_uppercase(),
        };
        format!(
            "NOPERM asynq-guard: {what} is refused, it would reveal the upstream Redis's addresses, credentials or settings"
        )
    })
}

/// `CLIENT TRACKING … REDIRECT <id>` sends invalidation messages to
/// another connection, possibly another identity's.
fn has_redirect(cmd: &Command) -> bool {
    // Redis reads the option only up to a NUL byte, and so does this.
    cmd.args.iter().skip(2).any(|a| {
        let word = a.split(|b| *b == 0).next().unwrap_or_default();
        word.eq_ignore_ascii_case(b"redirect")
    })
}

/// An error reply naming the proxy's own Redis user (Redis 7.2 and later
/// write `NOPERM User <name> has no permissions …`) with the name
/// replaced; `None` when there is nothing to hide.
pub fn scrub_error(raw: &[u8], username: &str) -> Option<Bytes> {
    let name = username.as_bytes();
    if name.is_empty() || !raw.windows(name.len()).any(|w| w == name) {
        return None;
    }
    let text = String::from_utf8_lossy(&raw[1..raw.len().saturating_sub(2)]);
    let mut out = BytesMut::new();
    out.extend_from_slice(&raw[..1]);
    out.extend_from_slice(text.replace(username, "<upstream user>").as_bytes());
    out.extend_from_slice(b"\r\n");
    Some(out.freeze())
}

/// Whether the reply to `cmd` must go through [`filter_info`].
pub fn filters_reply(name: Option<&'static str>) -> bool {
    name == Some("info")
}

/// Removes the concealed fields from an `INFO` reply (a RESP2 bulk string
/// or a RESP3 verbatim string). Any other reply is returned unchanged.
pub fn filter_info(raw: &Bytes) -> Bytes {
    let Some(marker) = raw.first().copied() else {
        return raw.clone();
    };
    if marker != b'$' && marker != b'=' {
        return raw.clone();
    }
    let Some(header_end) = raw.windows(2).position(|w| w == b"\r\n") else {
        return raw.clone();
    };
    let body_start = header_end + 2;
    if raw.len() < body_start + 2 {
        return raw.clone();
    }
    let body = &raw[body_start..raw.len() - 2];
    // A verbatim string starts with its three-letter format and a colon.
    let (format, text) = if marker == b'=' && body.len() >= 4 {
        body.split_at(4)
    } else {
        (&body[..0], body)
    };
    let mut kept = BytesMut::with_capacity(body.len());
    kept.extend_from_slice(format);
    for line in text.split_inclusive(|&b| b == b'\n') {
        let key = line.split(|&b| b == b':').next().unwrap_or_default();
        let key = String::from_utf8_lossy(key);
        if line.contains(&b':') && hidden_info_field(key.trim()) {
            continue;
        }
        kept.extend_from_slice(line);
    }
    let mut out = BytesMut::with_capacity(kept.len() + 16);
    out.extend_from_slice(format!("{}{}\r\n", char::from(marker), kept.len()).as_bytes());
    out.extend_from_slice(&kept);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::canonical_name;

    fn cmd(args: &[&str]) -> Command {
        Command::from_args(args)
    }

    fn refused(args: &[&str]) -> bool {
        let c = cmd(args);
        refusal(&c, canonical_name(&c.args[0])).is_some()
    }

    #[test]
    fn revealing_commands_are_refused() {
        for args in [
            &["CONFIG", "GET", "*"][..],
            &["acl", "list"],
            &["CLIENT", "LIST"],
            &["client", "info"],
            &["CLIENT", "KILL", "ID", "1"],
            &["CLUSTER", "NODES"],
            &["CLUSTER", "NODES\0x"],
            &["CLUSTER", "MEET", "10.0.0.1", "6379"],
            &["CLIENT", "SETNAME\0x", "n"],
            &["CLIENT", "TRACKING", "on", "REDIRECT", "7"],
            &["CLIENT", "TRACKING", "on", "redirect\0x", "7"],
            &["REPLICAOF", "10.0.0.1", "6379"],
            &["MIGRATE", "10.0.0.1", "6379", "k", "0", "1000"],
            &["DEBUG", "SLEEP", "0"],
            &["SLOWLOG", "GET"],
            &["ROLE"],
        ] {
            assert!(refused(args), "{args:?}");
        }
        let text = refusal(&cmd(&["client", "list"]), Some("client")).unwrap();
        assert!(
            text.starts_with("NOPERM asynq-guard: CLIENT LIST is refused"),
            "{text}"
        );
    }

    #[test]
    fn own_connection_commands_pass() {
        for args in [
            &["CLIENT", "SETNAME", "x"][..],
            &["CLIENT", "SETINFO", "LIB-NAME", "go-redis"],
            &["CLIENT", "ID"],
            &["CLIENT", "TRACKING", "on"],
            &["CLUSTER", "KEYSLOT", "k"],
            &["INFO"],
            &["GET", "k"],
        ] {
            assert!(!refused(args), "{args:?}");
        }
    }

    #[test]
    fn errors_naming_the_upstream_user_are_scrubbed() {
        let raw = b"-NOPERM User guard has no permissions to run the 'x' command\r\n";
        let out = scrub_error(raw, "guard").unwrap();
        assert_eq!(
            &out[..],
            b"-NOPERM User <upstream user> has no permissions to run the 'x' command\r\n"
        );
        assert!(scrub_error(b"-ERR other\r\n", "guard").is_none());
    }

    #[test]
    fn info_loses_ports_paths_and_peers_in_both_protocols() {
        let text = "# Server\r\nredis_version:7.0.15\r\ntcp_port:6379\r\nexecutable:/usr/bin/redis-server\r\nconfig_file:/etc/redis.conf\r\nlistener0:name=tcp,bind=*,port=6379\r\n# Replication\r\nrole:master\r\nslave0:ip=10.0.0.2,port=6379,state=online\r\nmaster_host:10.0.0.1\r\nconnected_slaves:1\r\n";
        for (marker, prefix) in [('$', ""), ('=', "txt:")] {
            let body = format!("{prefix}{text}");
            let raw = Bytes::from(format!("{marker}{}\r\n{body}\r\n", body.len()));
            let out = filter_info(&raw);
            let s = String::from_utf8(out.to_vec()).unwrap();
            for gone in ["6379", "/usr/bin", "/etc", "10.0.0"] {
                assert!(!s.contains(gone), "{gone} left in {s}");
            }
            assert!(s.contains("redis_version:7.0.15") && s.contains("connected_slaves:1"));
            let (head, rest) = s.split_once("\r\n").unwrap();
            assert_eq!(head[1..].parse::<usize>().unwrap(), rest.len() - 2);
            assert!(rest.starts_with(prefix));
        }
        let err = Bytes::from_static(b"-ERR x\r\n");
        assert_eq!(filter_info(&err), err);
    }
}
