//! Connections to the upstream Redis.
//!
//! One upstream connection per client connection. [`connect`] opens it
//! (TCP, then TLS when configured), logs in with the proxy's own
//! credentials and hands back its two halves. Nothing a client sends
//! reaches this handshake, and nothing of it (address, user, password,
//! TLS settings) is sent to a client: errors returned here are shown to
//! clients only as a fixed text chosen by the session.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::UpstreamSettings;
use crate::resp::{Proto, ReplyReader};

/// The read half of an upstream connection.
pub type UpstreamRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of an upstream connection.
pub type UpstreamWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Why an upstream connection could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to upstream timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("connect to upstream: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake with upstream: {0}")]
    Tls(std::io::Error),
    /// Redis refused the proxy's credentials; holds Redis's error text,
    /// which names no secret.
    #[error("upstream refused the proxy's credentials: {0}")]
    Auth(String),
    /// Redis turned the connection away for another reason (for
    /// example `maxclients`); holds Redis's error text.
    #[error("upstream rejected the connection: {0}")]
    Rejected(String),
    /// The connection failed during the login (reset, timeout, a TLS
    /// alert such as a required client certificate).
    #[error("upstream handshake: {0}")]
    Handshake(String),
    /// Redis answered the login with something that is not RESP.
    #[error("upstream reply: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// Label for the upstream error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Auth(_) => "auth",
            UpstreamError::Protocol(_) => "protocol",
            _ => "connect",
        }
    }
}

/// Opens, secures and authenticates one upstream connection.
///
/// # Errors
///
/// An [`UpstreamError`] saying which step failed.
pub async fn connect(
    settings: &UpstreamSettings,
) -> Result<(UpstreamRead, UpstreamWrite), UpstreamError> {
    let timeout = settings.connect_timeout;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&settings.address))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(timeout))?
        .map_err(UpstreamError::Connect)?;
    // Commands are written whole; waiting for more bytes only adds latency.
    let _ = tcp.set_nodelay(true);
    crate::listener::keepalive(&tcp);

    let (mut read, mut write): (UpstreamRead, UpstreamWrite) = match &settings.tls {
        None => {
            let (r, w) = tcp.into_split();
            (Box::new(r), Box::new(w))
        }
        Some(tls) => {
            let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
            let stream = tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| UpstreamError::ConnectTimeout(timeout))?
                .map_err(UpstreamError::Tls)?;
            let (r, w) = tokio::io::split(stream);
            (Box::new(r), Box::new(w))
        }
    };

    for login in login_commands(settings) {
        let reply = tokio::time::timeout(timeout, round_trip(&mut read, &mut write, &login))
            .await
            .map_err(|_| UpstreamError::Handshake("login reply timed out".into()))??;
        if reply.first() == Some(&b'-') {
            let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
            let credentials = ["WRONGPASS", "NOAUTH", "NOPERM", "ERR invalid password"]
                .iter()
                .any(|p| text.starts_with(p));
            return Err(if credentials {
                UpstreamError::Auth(text)
            } else {
                UpstreamError::Rejected(text)
            });
        }
    }
    Ok((read, write))
}

/// Checks once that Redis is reachable with the proxy's settings and
/// answers a PING, so that a missing or wrong credential shows in the log
/// at start instead of only in clients' errors.
///
/// # Errors
///
/// What went wrong, in words for the log.
pub async fn probe(settings: &UpstreamSettings) -> Result<(), String> {
    let (mut read, mut write) = connect(settings).await.map_err(|e| e.to_string())?;
    let ping = encode_command(&[b"PING"]);
    let reply = tokio::time::timeout(
        settings.connect_timeout,
        round_trip(&mut read, &mut write, &ping),
    )
    .await
    .map_err(|_| "PING timed out".to_string())?
    .map_err(|e| e.to_string())?;
    if reply.starts_with(b"-NOAUTH") {
        return Err(
            "Redis requires authentication: set upstream.password_file or upstream.password_env"
                .into(),
        );
    }
    if reply.first() == Some(&b'-') {
        return Err(format!(
            "PING answered {}",
            String::from_utf8_lossy(&reply[1..]).trim_end()
        ));
    }
    Ok(())
}

/// What the proxy sends on a new upstream connection (and again after a
/// client's `RESET`): `AUTH` if it has credentials, `SELECT` of the
/// configured database unless it is 0. The bytes hold the password: they
/// go to Redis only, never to a log or a client.
pub fn login_commands(settings: &UpstreamSettings) -> Vec<Bytes> {
    let mut out = Vec::new();
    if let Some(password) = &settings.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &settings.username {
            args.push(user.as_bytes());
        }
        args.push(password.expose().as_bytes());
        out.push(encode_command(&args));
    }
    if settings.database != 0 {
        let db = settings.database.to_string();
        out.push(encode_command(&[b"SELECT", db.as_bytes()]));
    }
    out
}

/// Sends one encoded command and reads its one RESP2 reply.
async fn round_trip(
    read: &mut UpstreamRead,
    write: &mut UpstreamWrite,
    command: &[u8],
) -> Result<Bytes, UpstreamError> {
    write
        .write_all(command)
        .await
        .map_err(|e| UpstreamError::Handshake(e.to_string()))?;
    let mut replies = ReplyReader::default();
    loop {
        if let Some(reply) = replies
            .next_reply(Proto::Resp2)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            return Ok(reply.raw);
        }
        let n = read
            .read_buf(replies.buffer())
            .await
            .map_err(|e| UpstreamError::Handshake(e.to_string()))?;
        if n == 0 {
            return Err(UpstreamError::Handshake("connection closed".into()));
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command(args: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out.freeze()
}
