use super::*;
use crate::command::canonical_name;

fn use_of(args: &[&str]) -> Option<ScriptUse> {
    let cmd = Command::from_args(args);
    script_use(&cmd, canonical_name(&cmd.args[0]))
}

fn classify_args(args: &[&[u8]]) -> Result<Access, NotAsynq> {
    let cmd = Command {
        raw: bytes::Bytes::new(),
        args: args
            .iter()
            .map(|a| bytes::Bytes::copy_from_slice(a))
            .collect(),
    };
    classify(&cmd, canonical_name(&cmd.args[0]))
}

fn ops_and_queue(args: &[&[u8]]) -> (Vec<Operation>, Option<String>) {
    match classify_args(args) {
        Ok(Access::Asynq { ops, queue, .. }) => (ops.to_vec(), queue),
        other => panic!("{args:?}: {other:?}"),
    }
}

#[test]
fn catalogued_sha_is_recognised() {
    let s = &catalog::SCRIPTS[0];
    assert_eq!(
        use_of(&["EVALSHA", s.sha, "0"]),
        Some(ScriptUse::Catalogued(s))
    );
}

#[test]
fn other_scripts_are_unknown_by_their_sha() {
    assert_eq!(
        use_of(&["EVAL", "return 1", "0"]),
        Some(ScriptUse::Unknown(
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db".into()
        ))
    );
    assert!(matches!(
        use_of(&["script", "LOAD", "return 1"]),
        Some(ScriptUse::Unknown(_))
    ));
    assert_eq!(
        use_of(&["SCRIPT", "EXISTS", "ab"]),
        Some(ScriptUse::Harmless)
    );
    assert_eq!(
        use_of(&["SCRIPT", "FLUSH"]),
        Some(ScriptUse::Other("SCRIPT"))
    );
    assert_eq!(
        use_of(&["FCALL", "f", "0"]),
        Some(ScriptUse::Other("FCALL"))
    );
    assert_eq!(use_of(&["GET", "k"]), None);
}

#[test]
fn script_calls_are_split_by_numkeys() {
    let dequeue = catalog::SCRIPTS.iter().find(|s| s.op == "dequeue").unwrap();
    let sha = dequeue.sha.as_bytes();
    let keys: [&[u8]; 4] = [
        b"asynq:{a}:pending",
        b"asynq:{a}:paused",
        b"asynq:{a}:active",
        b"asynq:{a}:lease",
    ];
    let mut args: Vec<&[u8]> = vec![b"evalsha", sha, b"4"];
    args.extend(keys);
    args.extend([&b"1"[..], b"asynq:{a}:t:"]);
    assert_eq!(
        ops_and_queue(&args),
        (vec![Operation::Consume], Some("a".into()))
    );
    // The same words split differently are not asynq's call.
    args[2] = b"3";
    assert!(classify_args(&args).is_err());
    args[2] = b"-1";
    assert!(classify_args(&args).is_err());
    args[2] = b"99";
    assert!(classify_args(&args).is_err());
}

#[test]
fn plain_commands_in_asynq_form() {
    let q = |args: &[&[u8]]| ops_and_queue(args);
    use Operation::*;
    assert_eq!(
        q(&[b"sadd", b"asynq:queues", b"critical"]),
        (vec![Enqueue], Some("critical".into()))
    );
    assert_eq!(q(&[b"smembers", b"asynq:queues"]), (vec![Inspect], None));
    assert_eq!(
        q(&[b"zadd", b"asynq:{q}:lease", b"xx", b"1700000030", b"id1"]),
        (vec![Consume], Some("q".into()))
    );
    assert_eq!(
        q(&[
            b"zadd",
            b"asynq:servers",
            b"1700000030",
            b"asynq:servers:{h:1:u}"
        ]),
        (vec![Consume], None)
    );
    assert_eq!(
        q(&[
            b"zadd",
            b"asynq:schedulers",
            b"1",
            b"asynq:schedulers:{h:1:u}"
        ]),
        (vec![Schedule], None)
    );
    assert_eq!(
        q(&[b"hset", b"asynq:{q}:t:id1", b"result", b"\x00bytes"]),
        (vec![Consume], Some("q".into()))
    );
    assert_eq!(q(&[b"subscribe", b"asynq:cancel"]), (vec![Consume], None));
    assert_eq!(
        q(&[b"publish", b"asynq:cancel", b"id1"]),
        (vec![Manage], None)
    );
    assert_eq!(
        q(&[b"setnx", b"asynq:{q}:paused", b"1"]),
        (vec![Manage], Some("q".into()))
    );
    assert_eq!(
        q(&[b"del", b"asynq:{q}:paused"]),
        (vec![Manage], Some("q".into()))
    );
    assert_eq!(
        q(&[b"del", b"asynq:scheduler_history:e1"]),
        (vec![Schedule], None)
    );
    assert_eq!(
        q(&[b"hvals", b"asynq:workers:{h:1:u}"]),
        (vec![Inspect], None)
    );
    assert_eq!(
        q(&[b"cluster", b"keyslot", b"asynq:{q}:pending"]),
        (vec![Inspect], Some("q".into()))
    );
    for ok in [
        &[&b"PING"[..]][..],
        &[b"client", b"setinfo", b"lib-name", b"x"],
        &[b"script", b"exists", b"ab"],
    ] {
        assert_eq!(classify_args(ok), Ok(Access::Housekeeping), "{ok:?}");
    }
}

#[test]
fn everything_else_is_not_asynq() {
    for args in [
        &[&b"flushall"[..]][..],
        &[b"keys", b"*"],
        &[b"scan", b"0"],
        &[b"get", b"asynq:{q}:t:id"],
        &[b"set", b"k", b"v"],
        // The gate decides SELECT: the database is the proxy's setting.
        &[b"select", b"0"],
        &[b"sadd", b"asynq:queues", b"a", b"b"],
        &[b"sadd", b"asynq:queues", b"a{b}"],
        &[b"sadd", b"other", b"a"],
        &[b"zadd", b"asynq:{q}:lease", b"incr", b"1", b"id"],
        &[b"zadd", b"asynq:{q}:lease", b"xx", b"nx", b"1", b"id"],
        &[b"zadd", b"asynq:servers", b"1", b"asynq:workers:{h}"],
        &[b"hset", b"asynq:{q}:t:id1", b"msg", b"x"],
        &[b"subscribe", b"other"],
        &[b"psubscribe", b"*"],
        &[b"publish", b"other", b"x"],
        &[b"del", b"asynq:{q}:pending"],
        &[b"shutdown"],
        &[b"watch", b"k"],
        &[b"eval", b"return 1", b"0"],
        &[b"notacommand"],
    ] {
        assert!(classify_args(args).is_err(), "{args:?}");
    }
}
