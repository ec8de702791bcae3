use super::*;

fn limits() -> Limits {
    Limits {
        max_bulk_bytes: 64,
        max_args: 4,
        max_buffer_bytes: 128,
    }
}

/// Feeds `input` to a fresh reader in chunks of `step` bytes and collects
/// every command's arguments, or the first error.
fn feed(input: &[u8], step: usize) -> Result<Vec<Vec<Vec<u8>>>, RequestError> {
    let mut reader = RequestReader::new(limits());
    let mut out = Vec::new();
    for chunk in input.chunks(step) {
        reader.buffer().extend_from_slice(chunk);
        while let Some(cmd) = reader.next_command()? {
            out.push(cmd.args.iter().map(|a| a.to_vec()).collect());
        }
    }
    Ok(out)
}

#[test]
fn pipelined_commands_split_at_every_byte_decode_the_same() {
    let input = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
    for step in 1..=input.len() {
        let cmds = feed(input, step).unwrap();
        assert_eq!(cmds.len(), 2, "step {step}");
        assert_eq!(cmds[0], vec![b"PING".to_vec()]);
        assert_eq!(cmds[1], vec![b"SET".to_vec(), b"k".to_vec(), b"".to_vec()]);
    }
}

#[test]
fn command_keeps_its_exact_bytes() {
    let input = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
    let mut reader = RequestReader::new(limits());
    reader.buffer().extend_from_slice(input);
    let cmd = reader.next_command().unwrap().unwrap();
    assert_eq!(&cmd.raw[..], &input[..]);
    assert!(cmd.arg_is(0, "echo"));
    assert!(!reader.has_partial());
}

#[test]
fn empty_multibulk_is_skipped_like_redis() {
    let cmds = feed(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", 3).unwrap();
    assert_eq!(cmds, vec![vec![b"PING".to_vec()]]);
}

#[test]
fn empty_lines_are_skipped_like_redis() {
    let cmds = feed(b"\r\n\n\r\n*1\r\n$4\r\nPING\r\n\r\n", 1).unwrap();
    assert_eq!(cmds, vec![vec![b"PING".to_vec()]]);
    assert_eq!(feed(b" \r\n", 64), Err(RequestError::Inline));
}

#[test]
fn inline_command_is_refused() {
    assert_eq!(feed(b"PING\r\n", 64), Err(RequestError::Inline));
    assert_eq!(feed(b"\"FLUSHALL\"\r\n", 64), Err(RequestError::Inline));
}

#[test]
fn bad_headers_are_protocol_errors() {
    assert_eq!(feed(b"*x\r\n", 64), Err(RequestError::MultibulkLength));
    assert_eq!(feed(b"*01\r\n", 64), Err(RequestError::MultibulkLength));
    assert_eq!(feed(b"*-0\r\n", 64), Err(RequestError::MultibulkLength));
    assert_eq!(
        feed(b"*1\r\n$-0\r\n\r\n", 64),
        Err(RequestError::BulkLength)
    );
    assert_eq!(
        feed(b"*1\r\n:4\r\n", 64),
        Err(RequestError::ExpectedBulk(':'))
    );
    assert_eq!(feed(b"*1\r\n$-1\r\n", 64), Err(RequestError::BulkLength));
    assert_eq!(
        feed(b"*1\r\n$+4\r\nPING\r\n", 64),
        Err(RequestError::BulkLength)
    );
    assert_eq!(
        feed(b"*1\r\n$4\r\nPINGXX", 64),
        Err(RequestError::Terminator)
    );
    assert!(matches!(feed(b"*1\rX", 64), Err(RequestError::Decode(_))));
    assert!(matches!(
        feed(&[b'*'; 40], 64),
        Err(RequestError::Decode(_))
    ));
}

#[test]
fn oversized_bulk_is_refused_from_its_header() {
    // Only the header arrives: the limit must trip without the body.
    let err = feed(b"*2\r\n$3\r\nSET\r\n$65\r\n", 64).unwrap_err();
    assert_eq!(err, RequestError::BulkTooLarge { got: 65, limit: 64 });
    assert_eq!(err.reason(), "max_bulk_bytes");
    let reply = err.to_reply();
    assert!(reply.starts_with(b"-ERR asynq-guard limit max_bulk_bytes"));
    assert!(reply.ends_with(b"\r\n"));
}

#[test]
fn too_many_arguments_are_refused_from_the_count() {
    let err = feed(b"*5\r\n", 64).unwrap_err();
    assert_eq!(err, RequestError::TooManyArgs { got: 5, limit: 4 });
}

#[test]
fn command_larger_than_the_buffer_limit_is_refused_early() {
    // Each argument is under max_bulk_bytes, together they exceed the
    // buffer limit; the reader refuses once the declared sizes say so.
    let input = b"*4\r\n$3\r\nSET\r\n$60\r\n".to_vec();
    let mut with_body = input.clone();
    with_body.extend_from_slice(&[b'a'; 60]);
    with_body.extend_from_slice(b"\r\n$60\r\n");
    assert_eq!(
        feed(&with_body, 1000),
        Err(RequestError::BufferFull { limit: 128 })
    );
}

#[test]
fn error_reply_stays_one_line() {
    assert_eq!(&error_reply("ERR a\r\nb")[..], b"-ERR a  b\r\n");
}

fn reply_shapes(proto: Proto, input: &[u8]) -> Vec<ReplyShape> {
    let mut reader = ReplyReader::default();
    reader.buffer().extend_from_slice(input);
    let mut out = Vec::new();
    while let Some(r) = reader.next_reply(proto).unwrap() {
        out.push(r.shape);
    }
    out
}

#[test]
fn resp2_replies_are_split_and_shaped() {
    let shapes = reply_shapes(
        Proto::Resp2,
        b"+OK\r\n$-1\r\n*-1\r\n-ERR x\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
    );
    assert_eq!(shapes.len(), 6);
    assert!(shapes[3].error);
    assert_eq!(
        shapes[4].pubsub,
        Some(PubSubWord::Confirm {
            kind: SubKind::Channel,
            subscribe: true
        })
    );
    assert_eq!(shapes[4].count, Some(1));
    assert_eq!(shapes[5].pubsub, Some(PubSubWord::Message));
}

#[test]
fn resp3_pushes_and_maps_are_shaped() {
    let shapes = reply_shapes(
        Proto::Resp3,
        b"%1\r\n+a\r\n:1\r\n_\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n!3\r\nERR\r\n",
    );
    assert_eq!(shapes.len(), 4);
    assert!(shapes[2].push);
    assert!(matches!(shapes[2].pubsub, Some(PubSubWord::Confirm { .. })));
    assert!(shapes[3].error);
}

#[test]
fn confirmation_words_name_their_kind() {
    let cases: [(&[u8], Option<PubSubWord>); 5] = [
        (
            b"punsubscribe",
            Some(PubSubWord::Confirm {
                kind: SubKind::Pattern,
                subscribe: false,
            }),
        ),
        (
            b"ssubscribe",
            Some(PubSubWord::Confirm {
                kind: SubKind::Shard,
                subscribe: true,
            }),
        ),
        (b"smessage", Some(PubSubWord::Message)),
        (b"unmessage", None),
        (b"subscribed", None),
    ];
    for (word, expected) in cases {
        assert_eq!(pubsub_word(word), expected, "{word:?}");
    }
}

#[test]
fn incomplete_reply_waits_for_more() {
    let mut reader = ReplyReader::default();
    reader.buffer().extend_from_slice(b"$5\r\nhel");
    assert!(reader.next_reply(Proto::Resp2).unwrap().is_none());
    reader.buffer().extend_from_slice(b"lo\r\n");
    let r = reader.next_reply(Proto::Resp2).unwrap().unwrap();
    assert_eq!(&r.raw[..], b"$5\r\nhello\r\n");
}

/// Room a reader offers for its next read.
fn spare(buf: &BytesMut) -> usize {
    buf.capacity() - buf.len()
}

#[test]
fn read_room_stays_small_for_small_reads_and_grows_for_full_ones() {
    let ping = b"*1\r\n$4\r\nPING\r\n";
    let mut reader = RequestReader::new(Limits::default());

    // An idle connection: small room.
    let room = spare(reader.buffer());
    assert!((ROOM_SMALL..ROOM_LARGE).contains(&room), "{room}");

    // A read that fills the room (a pipeline): the next read gets more.
    let pipeline: Vec<u8> = ping.iter().copied().cycle().take(room).collect();
    reader.buffer().extend_from_slice(&pipeline);
    let mut n = 0;
    while reader.next_command().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, room / ping.len());
    assert!(spare(reader.buffer()) >= ROOM_LARGE);

    // The rest of the cut command, a small read: the buffer empties and
    // the room shrinks back, so a connection idle after a burst holds
    // little memory.
    let rest = ping.len() - room % ping.len();
    reader
        .buffer()
        .extend_from_slice(&ping[ping.len() - rest..]);
    assert!(reader.next_command().unwrap().is_some());
    assert!(!reader.has_partial());
    let room = reader.buffer().capacity();
    assert!(room < ROOM_LARGE, "{room}");
}

#[test]
fn read_room_makes_space_for_a_large_argument_announced() {
    let mut reader = RequestReader::new(Limits::default());
    reader
        .buffer()
        .extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n");
    assert!(reader.next_command().unwrap().is_none());
    assert!(spare(reader.buffer()) >= 100_002);
}

#[test]
fn reply_room_stays_small_for_small_replies_and_grows_for_full_ones() {
    let mut reader = ReplyReader::default();
    let room = spare(reader.buffer());
    assert!((ROOM_SMALL..ROOM_LARGE).contains(&room), "{room}");
    let ok = b"+OK\r\n";
    let replies: Vec<u8> = ok.iter().copied().cycle().take(room).collect();
    reader.buffer().extend_from_slice(&replies);
    while reader.next_reply(Proto::Resp2).unwrap().is_some() {}
    assert!(spare(reader.buffer()) >= ROOM_LARGE);
    let rest = ok.len() - room % ok.len();
    reader.buffer().extend_from_slice(&ok[ok.len() - rest..]);
    assert!(reader.next_reply(Proto::Resp2).unwrap().is_some());
    assert!(reader.next_reply(Proto::Resp2).unwrap().is_none());
    assert!(reader.buffer().capacity() < ROOM_LARGE);
}
