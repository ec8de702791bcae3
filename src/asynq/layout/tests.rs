use prost::Message;

use super::*;
use crate::asynq::catalog::SCRIPTS;

fn msg(queue: &str, id: &str, task_type: &str) -> Vec<u8> {
    TaskMessage {
        r#type: task_type.into(),
        payload: b"payload".to_vec(),
        id: id.into(),
        queue: queue.into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn call(op: &str, keys: &[&[u8]], argv: &[&[u8]]) -> Result<ScriptAccess, String> {
    check(op, keys, argv)
}

#[test]
fn every_catalogued_script_has_a_layout() {
    for s in SCRIPTS {
        assert!(!ops_of(s.op).is_empty(), "{} has no layout", s.op);
    }
}

#[test]
fn enqueue_names_queue_and_task_type() {
    let m = msg("critical", "id1", "email:send");
    let got = call(
        "enqueue",
        &[b"asynq:{critical}:t:id1", b"asynq:{critical}:pending"],
        &[&m, b"id1", b"1700000000000000000"],
    )
    .unwrap();
    assert_eq!(got.ops, &[Operation::Enqueue]);
    assert_eq!(got.queue.as_deref(), Some("critical"));
    assert_eq!(got.task_type.as_deref(), Some("email:send"));
}

#[test]
fn enqueue_whose_parts_disagree_is_refused() {
    let m = msg("critical", "id1", "t");
    let pending = &b"asynq:{critical}:pending"[..];
    // Task key of another queue.
    let e = call(
        "enqueue",
        &[b"asynq:{low}:t:id1", pending],
        &[&m, b"id1", b"1"],
    )
    .unwrap_err();
    assert!(e.contains("names queue"), "{e}");
    // Task key of another id.
    let e = call(
        "enqueue",
        &[b"asynq:{critical}:t:id2", pending],
        &[&m, b"id1", b"1"],
    )
    .unwrap_err();
    assert!(e.contains("KEYS[1]"), "{e}");
    // Message of another queue or id.
    let other = msg("low", "id1", "t");
    let e = call(
        "enqueue",
        &[b"asynq:{critical}:t:id1", pending],
        &[&other, b"id1", b"1"],
    )
    .unwrap_err();
    assert!(e.contains("of queue 'low'"), "{e}");
    let other = msg("critical", "id9", "t");
    assert!(
        call(
            "enqueue",
            &[b"asynq:{critical}:t:id1", pending],
            &[&other, b"id1", b"1"]
        )
        .is_err()
    );
    // Not a message at all.
    let e = call(
        "enqueue",
        &[b"asynq:{critical}:t:id1", pending],
        &[b"\xff\xff", b"id1", b"1"],
    )
    .unwrap_err();
    assert!(e.contains("not an asynq task message"), "{e}");
    // Wrong shape.
    assert!(
        call(
            "enqueue",
            &[b"asynq:{critical}:t:id1"],
            &[&m, pending, b"id1", b"1"]
        )
        .is_err()
    );
    assert!(
        call(
            "enqueue",
            &[b"asynq:{critical}:t:id1", pending],
            &[&m, b"id1"]
        )
        .is_err()
    );
}

#[test]
fn unique_and_group_keys_must_match_the_message() {
    let mut m = TaskMessage {
        r#type: "t".into(),
        id: "id1".into(),
        queue: "q".into(),
        unique_key: "asynq:{q}:unique:t:abc".into(),
        ..Default::default()
    };
    let keys: &[&[u8]] = &[
        b"asynq:{q}:unique:t:abc",
        b"asynq:{q}:t:id1",
        b"asynq:{q}:pending",
    ];
    let enc = m.encode_to_vec();
    assert!(call("enqueueUnique", keys, &[b"id1", b"60", &enc, b"1"]).is_ok());
    m.unique_key = "asynq:{q}:unique:t:zzz".into();
    let enc = m.encode_to_vec();
    assert!(call("enqueueUnique", keys, &[b"id1", b"60", &enc, b"1"]).is_err());
    // A lock key outside the queue.
    let keys: &[&[u8]] = &[
        b"asynq:{other}:unique:t:abc",
        b"asynq:{q}:t:id1",
        b"asynq:{q}:pending",
    ];
    assert!(call("enqueueUnique", keys, &[b"id1", b"60", &enc, b"1"]).is_err());

    let g = TaskMessage {
        r#type: "t".into(),
        id: "id1".into(),
        queue: "q".into(),
        group_key: "g1".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let keys: &[&[u8]] = &[b"asynq:{q}:t:id1", b"asynq:{q}:g:g1", b"asynq:{q}:groups"];
    assert!(call("addToGroup", keys, &[&g, b"id1", b"1", b"g1"]).is_ok());
    let keys2: &[&[u8]] = &[b"asynq:{q}:t:id1", b"asynq:{q}:g:g2", b"asynq:{q}:groups"];
    assert!(call("addToGroup", keys2, &[&g, b"id1", b"1", b"g2"]).is_err());
}

#[test]
fn a_foreign_prefix_in_argv_is_refused() {
    let keys: &[&[u8]] = &[
        b"asynq:{a}:pending",
        b"asynq:{a}:paused",
        b"asynq:{a}:active",
        b"asynq:{a}:lease",
    ];
    let ok = call("dequeue", keys, &[b"1", b"asynq:{a}:t:"]).unwrap();
    assert_eq!(ok.queue.as_deref(), Some("a"));
    assert_eq!(ok.ops, &[Operation::Consume]);
    let e = call("dequeue", keys, &[b"1", b"asynq:{b}:t:"]).unwrap_err();
    assert!(e.contains("ARGV[2]") && e.contains("'b'"), "{e}");
    assert!(call("dequeue", keys, &[b"1", b"other:"]).is_err());
    assert!(call("dequeue", keys, &[b"1", b"asynq:{a}:"]).is_err());
}

#[test]
fn braces_in_queue_names_are_refused() {
    let keys: &[&[u8]] = &[
        b"asynq:{a{b}:pending",
        b"asynq:{a{b}:paused",
        b"asynq:{a{b}:active",
        b"asynq:{a{b}:lease",
    ];
    assert!(call("dequeue", keys, &[b"1", b"asynq:{a{b}:t:"]).is_err());
    assert!(
        call(
            "deleteAll",
            &[b"asynq:{q}:archived"],
            &[b"asynq:{q}:t:", b"q}"]
        )
        .is_err()
    );
    assert!(
        call(
            "deleteAll",
            &[b"asynq:{q}:archived"],
            &[b"asynq:{q}:t:", b"q"]
        )
        .is_ok()
    );
}

#[test]
fn worker_writes_and_global_scripts() {
    let m = msg("q", "id1", "t");
    let keys: &[&[u8]] = &[
        b"asynq:{q}:t:id1",
        b"asynq:{q}:active",
        b"asynq:{q}:lease",
        b"asynq:{q}:archived",
        b"asynq:{q}:processed:2026-12-03",
        b"asynq:{q}:failed:2026-12-03",
        b"asynq:{q}:processed",
        b"asynq:{q}:failed",
        b"asynq:{q}:t:",
    ];
    let argv: &[&[u8]] = &[b"id1", &m, b"1", b"1", b"10000", b"1", b"9"];
    assert!(call("archive", keys, argv).is_ok());
    assert!(call("archive", &keys[..8], argv).is_ok());
    assert!(call("archive", &keys[..7], argv).is_err());
    let mut bad_day = keys.to_vec();
    bad_day[4] = b"asynq:{q}:processed:today";
    assert!(call("archive", &bad_day, argv).is_err());

    let beat = call(
        "writeServerState",
        &[b"asynq:servers:{h:1:u}", b"asynq:workers:{h:1:u}"],
        &[b"10", b"info", b"id1", b"worker"],
    )
    .unwrap();
    assert_eq!(beat.queue, None);
    assert!(
        call(
            "writeServerState",
            &[b"asynq:servers:{h:1:u}", b"asynq:workers:{h:2:u}"],
            &[b"10", b"info"],
        )
        .is_err()
    );
    assert!(
        call(
            "clearServerState",
            &[b"asynq:servers:{h:1:u}", b"other"],
            &[]
        )
        .is_err()
    );

    let listed = call("listServerKeys", &[b"asynq:workers"], &[b"1"]).unwrap();
    assert_eq!(listed.ops, &[Operation::Inspect]);
    assert!(call("listServerKeys", &[b"mykey"], &[b"1"]).is_err());
}

#[test]
fn history_takes_pairs_of_days() {
    let keys: &[&[u8]] = &[
        b"asynq:{q}:processed:2026-12-03",
        b"asynq:{q}:failed:2026-12-03",
        b"asynq:{q}:processed:2026-12-02",
        b"asynq:{q}:failed:2026-12-02",
    ];
    assert_eq!(
        call("historicalStats", keys, &[]).unwrap().queue.as_deref(),
        Some("q")
    );
    assert!(call("historicalStats", &keys[..3], &[]).is_err());
    assert!(call("historicalStats", &[keys[1], keys[0]], &[]).is_err());
    assert!(call("historicalStats", &[], &[]).is_err());
}

#[test]
fn a_message_may_only_name_its_own_lock() {
    let with_lock = |unique: &str| {
        TaskMessage {
            r#type: "t".into(),
            id: "id1".into(),
            queue: "q".into(),
            unique_key: unique.into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let keys: &[&[u8]] = &[b"asynq:{q}:t:id1", b"asynq:{q}:pending"];
    // A plain enqueue takes no lock, so its message names none: a lock of
    // another queue would be released by the worker under its name.
    assert!(call("enqueue", keys, &[&with_lock(""), b"id1", b"1"]).is_ok());
    for planted in ["asynq:{low}:unique:x", "asynq:{q}:unique:x", "important"] {
        let e = call("enqueue", keys, &[&with_lock(planted), b"id1", b"1"]).unwrap_err();
        assert!(e.contains("uniqueness key"), "{planted}: {e}");
    }
    // A worker writing back a unique task keeps a lock of its queue.
    let retry_keys: &[&[u8]] = &[
        b"asynq:{q}:t:id1",
        b"asynq:{q}:active",
        b"asynq:{q}:lease",
        b"asynq:{q}:retry",
        b"asynq:{q}:processed:2026-12-03",
        b"asynq:{q}:failed:2026-12-03",
        b"asynq:{q}:processed",
        b"asynq:{q}:failed",
    ];
    let retry = |m: &[u8]| call("retry", retry_keys, &[b"id1", m, b"1", b"1", b"1", b"9"]);
    assert!(retry(&with_lock("asynq:{q}:unique:t:abc")).is_ok());
    assert!(retry(&with_lock("asynq:{low}:unique:t:abc")).is_err());
}

#[test]
fn the_registry_listing_takes_the_proxys_clock() {
    let listed = call("listServerKeys", &[b"asynq:servers"], &[b"1700000000"]).unwrap();
    assert_eq!(listed.clock_arg, Some(0));
    assert!(call("listServerKeys", &[b"asynq:servers"], &[b"soon"]).is_err());
    let dequeue = call(
        "dequeue",
        &[
            b"asynq:{a}:pending",
            b"asynq:{a}:paused",
            b"asynq:{a}:active",
            b"asynq:{a}:lease",
        ],
        &[b"1", b"asynq:{a}:t:"],
    )
    .unwrap();
    assert_eq!(dequeue.clock_arg, None);
}
