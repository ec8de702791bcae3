//! A raw RESP client: it writes exactly the bytes a test gives it and
//! decodes one reply frame at a time with `redis-protocol`, as RESP2 or
//! RESP3 as the test chooses.

use bytes::{Buf, BytesMut};
use redis_protocol::resp2::decode as resp2_decode;
use redis_protocol::resp2::types::OwnedFrame as Resp2Frame;
use redis_protocol::resp3::decode::complete as resp3_decode;
use redis_protocol::resp3::types::OwnedFrame as Resp3Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HANG, within};

/// The protocol version a test client decodes replies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

/// A decoded reply, the same shape for both protocol versions.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Value>),
    /// RESP3 `>`: out-of-band data such as pub/sub messages.
    Push(Vec<Value>),
    /// RESP3 `%`, in no particular order.
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Bool(bool),
    Double(f64),
    /// Big numbers and verbatim strings, as text.
    Text(String),
}

impl Value {
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// The error text; panics if this is not an error.
    pub fn error_text(&self) -> &str {
        match self {
            Value::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    /// The value of a map entry whose key is the string `key`.
    pub fn map_get(&self, key: &str) -> Option<&Value> {
        let Value::Map(pairs) = self else {
            panic!("expected a map, got {self:?}")
        };
        pairs.iter().find(|(k, _)| *k == bulk(key)).map(|(_, v)| v)
    }
}

pub fn ok() -> Value {
    Value::Simple("OK".into())
}

pub fn simple(s: &str) -> Value {
    Value::Simple(s.into())
}

pub fn bulk(s: impl AsRef<[u8]>) -> Value {
    Value::Bulk(s.as_ref().to_vec())
}

pub fn int(n: i64) -> Value {
    Value::Int(n)
}

pub fn array(items: Vec<Value>) -> Value {
    Value::Array(items)
}

pub fn push(items: Vec<Value>) -> Value {
    Value::Push(items)
}

fn from_resp2(f: Resp2Frame) -> Value {
    match f {
        Resp2Frame::SimpleString(s) => Value::Simple(String::from_utf8_lossy(&s).into_owned()),
        Resp2Frame::Error(e) => Value::Error(e),
        Resp2Frame::Integer(n) => Value::Int(n),
        Resp2Frame::BulkString(b) => Value::Bulk(b),
        Resp2Frame::Array(items) => Value::Array(items.into_iter().map(from_resp2).collect()),
        Resp2Frame::Null => Value::Null,
    }
}

fn from_resp3(f: Resp3Frame) -> Value {
    let list = |items: Vec<Resp3Frame>| items.into_iter().map(from_resp3).collect();
    match f {
        Resp3Frame::BlobString { data, .. } => Value::Bulk(data),
        Resp3Frame::SimpleString { data, .. } => {
            Value::Simple(String::from_utf8_lossy(&data).into_owned())
        }
        Resp3Frame::BlobError { data, .. } => {
            Value::Error(String::from_utf8_lossy(&data).into_owned())
        }
        Resp3Frame::SimpleError { data, .. } => Value::Error(data),
        Resp3Frame::Boolean { data, .. } => Value::Bool(data),
        Resp3Frame::Null => Value::Null,
        Resp3Frame::Number { data, .. } => Value::Int(data),
        Resp3Frame::Double { data, .. } => Value::Double(data),
        Resp3Frame::BigNumber { data, .. } | Resp3Frame::VerbatimString { data, .. } => {
            Value::Text(String::from_utf8_lossy(&data).into_owned())
        }
        Resp3Frame::Array { data, .. } => Value::Array(list(data)),
        Resp3Frame::Push { data, .. } => Value::Push(list(data)),
        Resp3Frame::Set { data, .. } => Value::Set(list(data.into_iter().collect())),
        Resp3Frame::Map { data, .. } => Value::Map(
            data.into_iter()
                .map(|(k, v)| (from_resp3(k), from_resp3(v)))
                .collect(),
        ),
        other => Value::Text(format!("{other:?}")),
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// [`encode`] for text arguments.
pub fn command(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&args)
}

/// A command's text arguments as owned bytes, the form [`send`] takes.
pub fn owned(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Sends one command given as owned arguments and reads its reply.
pub async fn send(client: &mut Client, args: &[Vec<u8>]) -> Value {
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    client.send_bytes(&args).await;
    client.read().await
}

/// A byte stream a [`Client`] can speak over: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A raw RESP client: it writes exactly the bytes it is given and reads
/// one reply frame at a time.
pub struct Client {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    proto: Proto,
    /// This end's address, as the server sees it (plain TCP only).
    local: Option<std::net::SocketAddr>,
}

impl Client {
    pub async fn connect(address: &str) -> Client {
        let stream = within(
            &format!("connect to {address}"),
            TcpStream::connect(address),
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let local = stream.local_addr().ok();
        let mut client = Client::over(stream);
        client.local = local;
        client
    }

    /// A client speaking over an already connected stream (a TLS session,
    /// say).
    pub fn over(stream: impl Stream + 'static) -> Client {
        Client {
            stream: Box::new(stream),
            buf: BytesMut::with_capacity(64 * 1024),
            proto: Proto::Resp2,
            local: None,
        }
    }

    /// This end's `ip:port`, as the server sees it (plain TCP clients).
    pub fn local_addr(&self) -> String {
        self.local
            .expect("the local address of a plain TCP client")
            .to_string()
    }

    /// Connects and authenticates with `AUTH user secret`, which must
    /// succeed.
    pub async fn connect_as(address: &str, user: &str, secret: &str) -> Client {
        let mut client = Client::connect(address).await;
        let reply = client.cmd(&["AUTH", user, secret]).await;
        assert_eq!(
            reply,
            Value::Simple("OK".into()),
            "AUTH {user} at {address}"
        );
        client
    }

    /// Decodes the following replies as `proto` (after `HELLO 3`, say).
    pub fn set_proto(&mut self, proto: Proto) {
        self.proto = proto;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).await.expect("write to server");
    }

    /// Writes `bytes`; the error is the caller's to judge (a server that
    /// closes early makes a long write fail).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        within("a write to the server", self.stream.write_all(bytes)).await
    }

    pub async fn send(&mut self, args: &[&str]) {
        self.send_raw(&command(args)).await;
    }

    pub async fn send_bytes(&mut self, args: &[&[u8]]) {
        self.send_raw(&encode(args)).await;
    }

    /// Sends a command and reads its one reply.
    pub async fn cmd(&mut self, args: &[&str]) -> Value {
        self.send(args).await;
        self.read().await
    }

    /// Reads the next reply frame.
    pub async fn read(&mut self) -> Value {
        self.read_frame().await.1
    }

    /// Reads the next reply frame and returns its exact bytes too.
    pub async fn read_frame(&mut self) -> (Vec<u8>, Value) {
        loop {
            if let Some(frame) = self.decode() {
                return frame;
            }
            let read = tokio::time::timeout(HANG, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Err(_) => panic!(
                    "no complete reply within {HANG:?}; buffered: {:?}",
                    preview(&self.buf)
                ),
                Ok(Ok(0)) => panic!(
                    "connection closed before a complete reply; buffered: {:?}",
                    preview(&self.buf)
                ),
                Ok(Err(e)) => panic!("read error {e}; buffered: {:?}", preview(&self.buf)),
                Ok(Ok(_)) => {}
            }
        }
    }

    fn decode(&mut self) -> Option<(Vec<u8>, Value)> {
        let (value, used) = match self.proto {
            Proto::Resp2 => resp2_decode::decode(&self.buf)
                .unwrap_or_else(|e| panic!("bad RESP2 {e:?} in {:?}", preview(&self.buf)))
                .map(|(f, n)| (from_resp2(f), n))?,
            Proto::Resp3 => resp3_decode::decode(&self.buf)
                .unwrap_or_else(|e| panic!("bad RESP3 {e:?} in {:?}", preview(&self.buf)))
                .map(|(f, n)| (from_resp3(f), n))?,
        };
        let raw = self.buf[..used].to_vec();
        self.buf.advance(used);
        Some((raw, value))
    }

    /// Half-closes the connection: the server sees end of input.
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads until the server closes the connection and returns every
    /// byte not yet decoded. A reset counts as closed.
    pub async fn read_to_eof(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf).to_vec();
        within("the server to close the connection", async {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        out
    }

    /// [`Client::read_to_eof`] as text, for readable assertions.
    pub async fn read_to_eof_text(&mut self) -> String {
        String::from_utf8_lossy(&self.read_to_eof().await).into_owned()
    }
}

fn preview(buf: &[u8]) -> String {
    let shown = &buf[..buf.len().min(200)];
    format!("{} ({} bytes)", String::from_utf8_lossy(shown), buf.len())
}
