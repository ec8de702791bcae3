use std::time::{Duration, SystemTime};

use bytes::Bytes;
use glob::Pattern;
use prost::Message;

use super::replies::{Fix, ReplyCheck, Shape, Source, rewrite};
use super::sign::{self, Signature};
use super::*;
use crate::resp::Proto;

fn key(id: &str) -> Key {
    Key {
        id: id.into(),
        secret: format!("{id}-secret-that-is-long-enough-for-hmac").into_bytes(),
    }
}

fn rule(queue: &str, mode: Mode, grace: Option<SystemTime>) -> QueueRule {
    QueueRule {
        queues: vec![Pattern::new(queue).unwrap()],
        mode,
        accept_unsigned_until: grace,
    }
}

fn integrity(rules: Vec<QueueRule>) -> Integrity {
    Integrity::new(vec![key("k1"), key("k2")], Some("k2"), rules)
}

fn msg(id: &str, queue: &str) -> TaskMessage {
    TaskMessage {
        r#type: "email:send".into(),
        payload: b"{\"to\":\"a@example.com\"}".to_vec(),
        id: id.into(),
        queue: queue.into(),
        retry: 25,
        timeout: 1800,
        ..Default::default()
    }
}

fn signed(i: &Integrity, m: &TaskMessage) -> Vec<u8> {
    i.on_enqueue(&m.queue, &m.encode_to_vec()).unwrap().unwrap()
}

#[test]
fn add_mode_signs_and_reads_back_the_producers_bytes() {
    let i = integrity(vec![rule("critical", Mode::Add, None)]);
    let m = msg("t1", "critical");
    let stored = signed(&i, &m);
    assert_ne!(stored, m.encode_to_vec());
    let read = i.on_read("critical", None, &stored).unwrap();
    assert_eq!(read.stripped, m.encode_to_vec());
    assert!(read.sign_in_place.is_none());
    // Queues not named are off.
    assert_eq!(i.on_enqueue("low", &m.encode_to_vec()).unwrap(), None);
}

#[test]
fn every_tampering_fails_its_check() {
    let i = integrity(vec![rule("*", Mode::Add, None)]);
    let m = msg("t1", "critical");
    let stored = signed(&i, &m);
    let (_, carried) = sign::take_carrier(&stored);
    let sig = match carried {
        sign::Carried::One(s) => s,
        other => panic!("{other:?}"),
    };
    let tampered = |change: fn(&mut TaskMessage)| {
        let mut t = m.clone();
        change(&mut t);
        sign::with_carrier(&t.encode_to_vec(), &sig)
    };
    let fail = |bytes: &[u8], queue: &str| i.on_read(queue, None, bytes).unwrap_err();
    assert_eq!(
        fail(&tampered(|t| t.payload = b"evil".to_vec()), "critical"),
        Failure::Mismatch
    );
    assert_eq!(
        fail(&tampered(|t| t.r#type = "admin:wipe".into()), "critical"),
        Failure::Mismatch
    );
    assert_eq!(fail(&m.encode_to_vec(), "critical"), Failure::Unsigned);
    // Another task's signature copied in.
    let other = signed(&i, &msg("t2", "critical"));
    let (_, other_sig) = sign::take_carrier(&other);
    let sign::Carried::One(other_sig) = other_sig else {
        panic!()
    };
    let copied = sign::with_carrier(&m.encode_to_vec(), &other_sig);
    assert_eq!(fail(&copied, "critical"), Failure::Mismatch);
    // A message of queue A in queue B.
    assert_eq!(fail(&stored, "low"), Failure::WrongQueue("critical".into()));
    // Under a key that is not listed.
    let retired = Key {
        id: "old".into(),
        secret: b"an-old-key-that-was-retired-long-ago".to_vec(),
    };
    let under_retired = sign::with_carrier(
        &m.encode_to_vec(),
        &Signature {
            key_id: "old".into(),
            mac: sign::mac(&retired.secret, &sign::canonical(&m)),
        },
    );
    assert_eq!(
        fail(&under_retired, "critical"),
        Failure::UnknownKey("old".into())
    );
    assert_eq!(fail(b"\xff\xff\xff", "critical"), Failure::Undecodable);
    // Worker-writable fields may change in Redis.
    let retried = tampered(|t| {
        t.retried = 3;
        t.error_msg = "boom".into();
    });
    assert!(i.on_read("critical", None, &retried).is_ok());
    // The task id of a task key must match.
    assert_eq!(
        i.on_read("critical", Some(b"t9"), &stored).unwrap_err(),
        Failure::WrongTask
    );
}

#[test]
fn a_rotated_key_still_verifies_what_it_signed() {
    let old = Integrity::new(
        vec![key("k1")],
        Some("k1"),
        vec![rule("*", Mode::Add, None)],
    );
    let stored = signed(&old, &msg("t1", "q"));
    let new = integrity(vec![rule("*", Mode::Add, None)]);
    assert!(new.on_read("q", None, &stored).is_ok());
    let retired = Integrity::new(
        vec![key("k2")],
        Some("k2"),
        vec![rule("*", Mode::Add, None)],
    );
    assert_eq!(
        retired.on_read("q", None, &stored).unwrap_err(),
        Failure::UnknownKey("k1".into())
    );
}

#[test]
fn grace_accepts_unsigned_tasks_until_its_end() {
    let later = SystemTime::now() + Duration::from_secs(3600);
    let i = integrity(vec![rule("q", Mode::Add, Some(later))]);
    let m = msg("t1", "q");
    let read = i.on_read("q", None, &m.encode_to_vec()).unwrap();
    let in_place = read.sign_in_place.expect("signed in place");
    assert!(
        i.on_read("q", None, &in_place)
            .unwrap()
            .sign_in_place
            .is_none()
    );
    // A tampered signed task is not rescued by the grace period.
    let mut t = m.clone();
    t.payload = b"x".to_vec();
    let (_, sig) = sign::take_carrier(&in_place);
    let sign::Carried::One(sig) = sig else {
        panic!()
    };
    let bad = sign::with_carrier(&t.encode_to_vec(), &sig);
    assert_eq!(i.on_read("q", None, &bad).unwrap_err(), Failure::Mismatch);
    let ended = integrity(vec![rule(
        "q",
        Mode::Add,
        Some(SystemTime::now() - Duration::from_secs(1)),
    )]);
    assert_eq!(
        ended.on_read("q", None, &m.encode_to_vec()).unwrap_err(),
        Failure::Unsigned
    );
}

#[test]
fn write_backs_may_change_only_what_workers_change() {
    let i = integrity(vec![rule("q", Mode::Add, None)]);
    let m = msg("t1", "q");
    let stored = signed(&i, &m);
    i.on_read("q", None, &stored).unwrap();
    let sig = i.handed_out("q", "t1").expect("remembered");
    let mut back = m.clone();
    back.retried = 1;
    back.error_msg = "failed".into();
    back.last_failed_at = 1_700_000_000;
    let out = i
        .on_write_back("q", b"t1", &back.encode_to_vec(), &sig)
        .unwrap();
    assert_eq!(
        crate::asynq::message::decode(&out).unwrap(),
        back,
        "the worker's fields are kept"
    );
    assert!(i.on_read("q", None, &out).is_ok());
    let mut evil = back.clone();
    evil.payload = b"other".to_vec();
    assert_eq!(
        i.on_write_back("q", b"t1", &evil.encode_to_vec(), &sig)
            .unwrap_err(),
        Failure::Mismatch
    );
    assert_eq!(
        i.on_write_back_stored("q", b"t1", &evil.encode_to_vec(), Some(&stored))
            .unwrap_err(),
        Failure::Mismatch
    );
    assert!(
        i.on_write_back_stored("q", b"t1", &back.encode_to_vec(), Some(&stored))
            .is_ok()
    );
    assert_eq!(
        i.on_write_back_stored("q", b"t1", &back.encode_to_vec(), None)
            .unwrap_err(),
        Failure::WrongTask
    );
    assert_eq!(
        i.on_write_back("q", b"t2", &back.encode_to_vec(), &sig)
            .unwrap_err(),
        Failure::WrongTask
    );
}

#[test]
fn check_mode_needs_the_producers_signature() {
    let i = integrity(vec![rule("q", Mode::Check, None)]);
    let mut m = msg("t1", "q");
    assert_eq!(
        i.on_enqueue("q", &m.encode_to_vec()).unwrap_err(),
        Failure::Unsigned
    );
    let k1 = key("k1");
    let sig = Signature {
        key_id: "k1".into(),
        mac: sign::mac(&k1.secret, &sign::canonical(&m)),
    };
    m.headers.insert(sign::HEADER.into(), sig.text());
    let stored = i.on_enqueue("q", &m.encode_to_vec()).unwrap().unwrap();
    assert!(i.on_read("q", None, &stored).is_ok());
    m.payload = b"changed after signing".to_vec();
    assert_eq!(
        i.on_enqueue("q", &m.encode_to_vec()).unwrap_err(),
        Failure::Mismatch
    );
}

fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

#[test]
fn dequeue_replies_are_stripped_or_withheld() {
    let i = integrity(vec![rule("q", Mode::Add, None)]);
    let m = msg("t1", "q");
    let stored = signed(&i, &m);
    let check = ReplyCheck {
        queue: "q".into(),
        shape: Shape::One,
        deliver: Some(Source::Active),
        task_id: None,
    };
    let (out, fixes) = rewrite(&bulk(&stored), Proto::Resp3, &check, &i, 0);
    assert_eq!(out.unwrap(), Bytes::from(bulk(&m.encode_to_vec())));
    assert!(fixes.is_empty());
    let (out, fixes) = rewrite(&bulk(&m.encode_to_vec()), Proto::Resp3, &check, &i, 7);
    assert_eq!(out.unwrap(), Bytes::from_static(b"_\r\n"));
    let [
        Fix::Archive {
            claimed_id,
            archived: Some(archived),
            failure: Failure::Unsigned,
            ..
        },
    ] = &fixes[..]
    else {
        panic!("{fixes:?}")
    };
    assert_eq!(claimed_id, "t1");
    let archived = crate::asynq::message::decode(archived).unwrap();
    assert!(archived.error_msg.contains("integrity check failed"));
    assert_eq!(archived.last_failed_at, 7);
    let (out, _) = rewrite(&bulk(b"\xff"), Proto::Resp2, &check, &i, 0);
    assert_eq!(out.unwrap(), Bytes::from_static(b"$-1\r\n"));
    // Nil and errors pass; what cannot be read does not.
    assert_eq!(rewrite(b"_\r\n", Proto::Resp3, &check, &i, 0).0, None);
    assert_eq!(rewrite(b"-ERR x\r\n", Proto::Resp3, &check, &i, 0).0, None);
    assert!(
        rewrite(b"%1\r\n+a\r\n+b\r\n", Proto::Resp3, &check, &i, 0)
            .0
            .unwrap()
            .starts_with(b"-ERR")
    );
}

#[test]
fn lists_drop_failures_for_workers_and_mark_them_for_inspectors() {
    let i = integrity(vec![rule("q", Mode::Add, None)]);
    let good = signed(&i, &msg("t1", "q"));
    let bad = msg("t2", "q").encode_to_vec();
    let mut reply = b"*2\r\n".to_vec();
    reply.extend(bulk(&good));
    reply.extend(bulk(&bad));
    let deliver = ReplyCheck {
        queue: "q".into(),
        shape: Shape::Array,
        deliver: Some(Source::Active),
        task_id: None,
    };
    let (out, fixes) = rewrite(&reply, Proto::Resp2, &deliver, &i, 0);
    let mut want = b"*1\r\n".to_vec();
    want.extend(bulk(&msg("t1", "q").encode_to_vec()));
    assert_eq!(out.unwrap(), Bytes::from(want));
    assert_eq!(fixes.len(), 1);

    // listZSetEntries: msg, score, result.
    let mut reply = b"*6\r\n".to_vec();
    for m in [&good, &bad] {
        reply.extend(bulk(m));
        reply.extend(b":1700000000\r\n");
        reply.extend(b"_\r\n");
    }
    let inspect = ReplyCheck {
        shape: Shape::Every(3),
        deliver: None,
        ..deliver
    };
    let (out, fixes) = rewrite(&reply, Proto::Resp3, &inspect, &i, 0);
    let out = out.unwrap();
    assert!(matches!(&fixes[..], [Fix::Marked { .. }]));
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("*6\r\n"));
    assert!(text.contains("integrity check failed"));
    assert_eq!(text.matches(":1700000000\r\n").count(), 2);
}

/// The Go package's test vectors: both implementations agree byte for
/// byte on the canonical forms and signatures.
#[test]
fn go_package_vectors_match() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sdk/go/asynqguard/testdata/vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("vectors.json");
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() >= 5);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let unhex = |s: &str| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    for v in vectors {
        let m = &v["message"];
        let s = |k: &str| m[k].as_str().unwrap().to_string();
        let n = |k: &str| m[k].as_i64().unwrap();
        let msg = TaskMessage {
            r#type: s("type"),
            payload: unhex(m["payload_hex"].as_str().unwrap()),
            id: s("id"),
            queue: s("queue"),
            retry: i32::try_from(n("retry")).unwrap(),
            timeout: n("timeout"),
            deadline: n("deadline"),
            unique_key: s("unique_key"),
            retention: n("retention"),
            group_key: s("group_key"),
            headers: m["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            ..Default::default()
        };
        let name = v["name"].as_str().unwrap();
        let secret = v["key"].as_str().unwrap().trim().as_bytes();
        let key_id = v["key_id"].as_str().unwrap().to_string();
        let form = sign::canonical(&msg);
        assert_eq!(hex(&form), v["canonical_hex"], "{name}: canonical form");
        let sig = Signature {
            key_id: key_id.clone(),
            mac: sign::mac(secret, &form),
        };
        assert_eq!(sig.text(), v["signature"], "{name}: signature");
        let e2e = sign::e2e_canonical(&msg);
        assert_eq!(hex(&e2e), v["e2e_canonical_hex"], "{name}: e2e form");
        let e2e_sig = Signature {
            key_id,
            mac: sign::mac(secret, &e2e),
        };
        assert_eq!(e2e_sig.text(), v["e2e_signature"], "{name}: e2e signature");
    }
}

/// A task the proxy archived keeps the reason it was archived for in
/// every later view, is counted once (not at each look), and never
/// verifies again, even for an operator who runs it.
#[test]
fn archived_tasks_keep_their_reason_and_stay_invalid() {
    let i = integrity(vec![rule("*", Mode::Add, None)]);
    let m = msg("t1", "critical");
    let stored = signed(&i, &m);
    let mut evil = m.clone();
    evil.payload = b"evil".to_vec();
    let (_, sig) = sign::take_carrier(&stored);
    let sign::Carried::One(sig) = sig else {
        panic!()
    };
    let tampered = sign::with_carrier(&evil.encode_to_vec(), &sig);
    // Placed in another queue under another id.
    let archived = Integrity::archived_message(
        &tampered,
        &Failure::WrongQueue("critical".into()),
        9,
        Some(("low", "x7")),
    )
    .unwrap();
    let shown = crate::asynq::message::decode(&archived).unwrap();
    assert_eq!((shown.queue.as_str(), shown.id.as_str()), ("low", "x7"));
    assert!(shown.error_msg.contains("belongs to queue 'critical'"));
    assert_eq!(
        i.on_read("low", None, &archived).unwrap_err(),
        Failure::Quarantined
    );
    let inspect = ReplyCheck {
        queue: "low".into(),
        shape: Shape::Every(2),
        deliver: None,
        task_id: None,
    };
    let mut reply = b"*2\r\n".to_vec();
    reply.extend(bulk(&archived));
    reply.extend(b"_\r\n");
    let (out, fixes) = rewrite(&reply, Proto::Resp3, &inspect, &i, 0);
    assert!(fixes.is_empty(), "counted when archived, not at each look");
    let out = out.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("belongs to queue 'critical'"), "{text}");
    assert!(!text.contains("quarantined:"), "the mark is not shown");
    // Run again by an operator: withheld again, reason kept.
    let deliver = ReplyCheck {
        shape: Shape::One,
        deliver: Some(Source::Active),
        ..inspect
    };
    let (out, fixes) = rewrite(&bulk(&archived), Proto::Resp2, &deliver, &i, 0);
    assert_eq!(out.unwrap(), Bytes::from_static(b"$-1\r\n"));
    let [
        Fix::Archive {
            archived: Some(again),
            ..
        },
    ] = &fixes[..]
    else {
        panic!("{fixes:?}")
    };
    assert!(
        crate::asynq::message::decode(again)
            .unwrap()
            .error_msg
            .contains("belongs to queue 'critical'")
    );
}

/// A quarantine mark written into Redis by someone else carries no
/// reason: inspectors see the task marked, and archiving it sets the
/// integrity error.
#[test]
fn a_forged_quarantine_mark_hides_nothing() {
    let i = integrity(vec![rule("*", Mode::Add, None)]);
    let mut evil = msg("t1", "critical");
    evil.payload = b"evil".to_vec();
    let forged = sign::with_quarantine(&evil.encode_to_vec(), "x");
    assert_eq!(
        i.on_read("critical", None, &forged).unwrap_err(),
        Failure::Quarantined
    );
    let inspect = ReplyCheck {
        queue: "critical".into(),
        shape: Shape::Every(2),
        deliver: None,
        task_id: None,
    };
    let mut reply = b"*2\r\n".to_vec();
    reply.extend(bulk(&forged));
    reply.extend(b"_\r\n");
    let (out, fixes) = rewrite(&reply, Proto::Resp3, &inspect, &i, 0);
    assert!(matches!(fixes.as_slice(), [Fix::Marked { .. }]), "counted");
    let text = String::from_utf8_lossy(&out.unwrap()).into_owned();
    assert!(
        text.contains(
            "asynq-guard: integrity check failed: the task carries asynq-guard's quarantine mark"
        ),
        "{text}"
    );
    let archived = Integrity::archived_message(&forged, &Failure::Quarantined, 9, None).unwrap();
    let shown = crate::asynq::message::decode(&archived).unwrap();
    assert!(
        shown
            .error_msg
            .starts_with("asynq-guard: integrity check failed:"),
        "{}",
        shown.error_msg
    );
}
