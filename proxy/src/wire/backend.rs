//! Opening a session on a backend as the client's user: TCP or Unix socket, TLS per the URL's
//! `sslmode`, startup, authentication, and the greeting up to the first ReadyForQuery.

use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use dualwrite_common::pgurl::{ChannelBinding as ChannelBindingMode, Host, Liveness};
use dualwrite_common::Secret;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::config::Backend;
use crate::wire::protocol::{self, backend as msg, frontend, ProxyError, SSL_REQUEST};
use crate::wire::read::{read_message, MessageError};
use crate::wire::tls::{split, Reader, Writer};

/// A backend session: its halves, bytes read but not yet consumed, and its cancel key.
pub struct Conn {
    pub reader: Reader,
    pub writer: Writer,
    pub buf: BytesMut,
    pub key: Option<(i32, Bytes)>,
    pub connected_at: Instant,
}

/// A logged-in backend session, ready for queries.
pub struct BackendConn {
    pub reader: Reader,
    pub writer: Writer,
    /// BackendKeyData (pid, secret) for cancel requests.
    pub key: Option<(i32, Bytes)>,
    /// When the session was ready (its server process started a moment before).
    pub connected_at: std::time::Instant,
    /// ParameterStatus and NoticeResponse frames of the greeting, to relay to the client.
    pub greeting: BytesMut,
    /// Bytes already read past the first ReadyForQuery (normally none).
    pub leftover: BytesMut,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to the {side} database at {endpoint}: {source}")]
    Connect {
        side: &'static str,
        endpoint: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to the {side} database at {endpoint}")]
    Timeout {
        side: &'static str,
        endpoint: String,
    },
    #[error("TLS with the {side} database at {endpoint} failed: {reason}")]
    Tls {
        side: &'static str,
        endpoint: String,
        reason: String,
    },
    /// The server refused the session with this ErrorResponse (relayed to the client as is).
    #[error("the {side} database refused the session: {code} {message}")]
    Rejected {
        side: &'static str,
        code: String,
        message: String,
        frame: Bytes,
    },
    #[error("no password is configured for user \"{user}\" on the {side} database")]
    NoPassword { side: &'static str, user: String },
    #[error("authentication with the {side} database failed: {reason}")]
    Auth { side: &'static str, reason: String },
    #[error("the {side} database closed the connection during startup: {source}")]
    Io {
        side: &'static str,
        source: MessageError,
    },
}

impl BackendError {
    /// What the client sees: the server's own error when it sent one, else 08001 without
    /// addresses or credentials.
    pub fn to_client(&self) -> Bytes {
        match self {
            BackendError::Rejected { frame, .. } => frame.clone(),
            BackendError::NoPassword { .. } => {
                ProxyError::fatal("28P01", self.to_string()).to_bytes()
            }
            BackendError::Connect { side, .. }
            | BackendError::Timeout { side, .. }
            | BackendError::Tls { side, .. }
            | BackendError::Auth { side, .. }
            | BackendError::Io { side, .. } => ProxyError::fatal(
                "08001",
                format!("the proxy could not open a session on the {side} database"),
            )
            .with_hint("the proxy's log has the details")
            .to_bytes(),
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Connect { .. } => "connect",
            BackendError::Timeout { .. } => "timeout",
            BackendError::Tls { .. } => "tls",
            BackendError::Rejected { .. } => "rejected",
            BackendError::NoPassword { .. } | BackendError::Auth { .. } => "auth",
            BackendError::Io { .. } => "io",
        }
    }
}

/// Keepalive probes and `TCP_USER_TIMEOUT` on a backend socket, so that a server that went
/// silent (host down, packets dropped) fails the connection instead of holding it for ever.
fn set_liveness(s: &TcpStream, live: &Liveness) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(s);
    if live.keepalives {
        sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(live.idle)
                .with_interval(live.interval)
                .with_retries(live.count),
        )?;
    }
    sock.set_tcp_user_timeout(live.user_timeout)
}

/// A connected transport, before startup, with the server certificate's channel binding data
/// (`tls-server-end-point`) when it is TLS.
async fn transport(
    backend: &Backend,
    timeout: std::time::Duration,
) -> Result<(Reader, Writer, Option<Vec<u8>>), BackendError> {
    let side = backend.side.name();
    let url = &backend.url;
    let endpoint = url.endpoint();
    let connect = async {
        match &url.host {
            Host::Tcp(host) => {
                let s = TcpStream::connect((host.as_str(), url.port)).await?;
                s.set_nodelay(true)?;
                set_liveness(&s, &url.liveness)?;
                Ok::<_, std::io::Error>(Stream::Tcp(s))
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", url.port));
                Ok(Stream::Unix(UnixStream::connect(path).await?))
            }
        }
    };
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| BackendError::Timeout {
            side,
            endpoint: endpoint.clone(),
        })?
        .map_err(|source| BackendError::Connect {
            side,
            endpoint: endpoint.clone(),
            source,
        })?;
    let Some(tls) = &backend.tls else {
        let (r, w) = stream.split();
        return Ok((r, w, None));
    };
    let tls_err = |reason: String| BackendError::Tls {
        side,
        endpoint: endpoint.clone(),
        reason,
    };
    let mut stream = stream;
    let mut req = BytesMut::new();
    req.put_i32(8);
    req.put_i32(SSL_REQUEST);
    let answer = async {
        stream.write_all(&req).await?;
        stream.read_u8().await
    };
    let answer = tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| tls_err("no answer to SSLRequest".into()))?
        .map_err(|e| tls_err(e.to_string()))?;
    match answer {
        b'S' => {
            let name = dualwrite_common::tls::server_name(&backend.url)
                .map_err(|e| tls_err(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(tls.clone());
            fn bound<S>(t: tokio_rustls::client::TlsStream<S>) -> (Reader, Writer, Option<Vec<u8>>)
            where
                S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
            {
                let end_point = t
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| dualwrite_common::tls::server_end_point(c));
                let (r, w) = split(t);
                (r, w, end_point)
            }
            let handshake = async {
                match stream {
                    Stream::Tcp(s) => connector.connect(name, s).await.map(bound),
                    Stream::Unix(s) => connector.connect(name, s).await.map(bound),
                }
            };
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| tls_err("handshake timed out".into()))?
                .map_err(|e| tls_err(e.to_string()))
        }
        b'N' if !url.sslmode.requires_tls() => {
            let (r, w) = stream.split();
            Ok((r, w, None))
        }
        b'N' => Err(tls_err(
            "the server does not support TLS but sslmode requires it".into(),
        )),
        other => Err(tls_err(format!(
            "unexpected answer {:?} to SSLRequest",
            other as char
        ))),
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn split(self) -> (Reader, Writer) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        }
    }

    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(b).await,
            Stream::Unix(s) => s.write_all(b).await,
        }
    }

    async fn read_u8(&mut self) -> std::io::Result<u8> {
        match self {
            Stream::Tcp(s) => s.read_u8().await,
            Stream::Unix(s) => s.read_u8().await,
        }
    }
}

/// Open a session on `backend` as `user` on `database`, passing the client's other startup
/// parameters (application_name, options, DateStyle...) through.
pub async fn connect(
    backend: &Backend,
    user: &str,
    database: &str,
    password: Option<&Secret>,
    params: &[(String, String)],
    timeout: std::time::Duration,
) -> Result<BackendConn, BackendError> {
    let side = backend.side.name();
    let (mut reader, mut writer, end_point) = transport(backend, timeout).await?;
    let io = |source| BackendError::Io { side, source };
    let binding = backend.url.channel_binding;
    // Whether the server authenticated with SCRAM bound to this TLS connection.
    let mut bound = false;

    let mut startup: Vec<(&str, &str)> = vec![("user", user), ("database", database)];
    startup.extend(
        params
            .iter()
            .filter(|(k, _)| k != "user" && k != "database")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut out = BytesMut::new();
    protocol::startup_message(&mut out, &startup);
    writer
        .write_all(&out)
        .await
        .map_err(|e| io(MessageError::Io(e)))?;
    out.clear();

    let mut buf = BytesMut::with_capacity(8192);
    let mut greeting = BytesMut::new();
    let mut key = None;
    let mut scram: Option<ScramSha256> = None;
    let need_password = || {
        password.ok_or_else(|| BackendError::NoPassword {
            side,
            user: user.to_string(),
        })
    };
    let handshake = async {
        loop {
            let (tag, mut body) = read_message(&mut reader, &mut buf, 1 << 20)
                .await
                .map_err(io)?;
            match tag {
                msg::AUTHENTICATION => {
                    if body.len() < 4 {
                        return Err(BackendError::Auth {
                            side,
                            reason: "short authentication message".into(),
                        });
                    }
                    let code = body.get_i32();
                    match code {
                        0 if binding == ChannelBindingMode::Require && !bound => {
                            return Err(BackendError::Auth {
                                side,
                                reason: "channel_binding=require, but the server authenticated the proxy without channel binding".into(),
                            })
                        }
                        0 => {}
                        3 => {
                            let mut pw = need_password()?.expose().as_bytes().to_vec();
                            pw.push(0);
                            protocol::frontend_message(&mut out, frontend::PASSWORD, &pw);
                        }
                        5 => {
                            if body.len() < 4 {
                                return Err(BackendError::Auth {
                                    side,
                                    reason: "short md5 salt".into(),
                                });
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                need_password()?.expose().as_bytes(),
                                salt,
                            );
                            let mut pw = hash.into_bytes();
                            pw.push(0);
                            protocol::frontend_message(&mut out, frontend::PASSWORD, &pw);
                        }
                        10 => {
                            let offers = |name: &[u8]| body.split(|b| *b == 0).any(|m| m == name);
                            // As libpq: bind to the TLS connection when the server offers
                            // SCRAM-SHA-256-PLUS (unless channel_binding=disable); say 'y'
                            // (could bind, server did not offer) over TLS otherwise.
                            let plus = match &end_point {
                                Some(data)
                                    if binding != ChannelBindingMode::Disable
                                        && offers(b"SCRAM-SHA-256-PLUS") =>
                                {
                                    Some(data.clone())
                                }
                                _ => None,
                            };
                            if plus.is_none() && binding == ChannelBindingMode::Require {
                                return Err(BackendError::Auth {
                                    side,
                                    reason: if end_point.is_none() {
                                        "channel_binding=require, but the connection does not use TLS (or its certificate's signature algorithm has no channel binding)".into()
                                    } else {
                                        "channel_binding=require, but the server does not offer SCRAM-SHA-256-PLUS".into()
                                    },
                                });
                            }
                            if plus.is_none() && !offers(b"SCRAM-SHA-256") {
                                return Err(BackendError::Auth {
                                    side,
                                    reason: "server offers no SASL mechanism the proxy supports"
                                        .into(),
                                });
                            }
                            let (mechanism, cb): (&[u8], _) = match plus {
                                Some(data) => (
                                    b"SCRAM-SHA-256-PLUS\0",
                                    ChannelBinding::tls_server_end_point(data),
                                ),
                                None if end_point.is_some()
                                    && binding != ChannelBindingMode::Disable =>
                                {
                                    (b"SCRAM-SHA-256\0", ChannelBinding::unrequested())
                                }
                                None => (b"SCRAM-SHA-256\0", ChannelBinding::unsupported()),
                            };
                            bound = mechanism == b"SCRAM-SHA-256-PLUS\0";
                            let s = ScramSha256::new(need_password()?.expose().as_bytes(), cb);
                            let mut payload = BytesMut::new();
                            payload.put_slice(mechanism);
                            payload.put_i32(s.message().len() as i32);
                            payload.put_slice(s.message());
                            protocol::frontend_message(&mut out, frontend::PASSWORD, &payload);
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| BackendError::Auth {
                                side,
                                reason: "SASL continue without start".into(),
                            })?;
                            s.update(&body).map_err(|e| BackendError::Auth {
                                side,
                                reason: e.to_string(),
                            })?;
                            protocol::frontend_message(&mut out, frontend::PASSWORD, s.message());
                        }
                        12 => {
                            let mut s = scram.take().ok_or_else(|| BackendError::Auth {
                                side,
                                reason: "SASL final without start".into(),
                            })?;
                            s.finish(&body).map_err(|e| BackendError::Auth {
                                side,
                                reason: format!("server signature: {e}"),
                            })?;
                        }
                        other => {
                            return Err(BackendError::Auth {
                                side,
                                reason: format!("unsupported authentication method {other}"),
                            })
                        }
                    }
                    if !out.is_empty() {
                        writer
                            .write_all(&out)
                            .await
                            .map_err(|e| io(MessageError::Io(e)))?;
                        out.clear();
                    }
                }
                msg::ERROR_RESPONSE => {
                    let (code, message) = protocol::error_fields(&body);
                    let mut frame = BytesMut::new();
                    protocol::frontend_message(&mut frame, msg::ERROR_RESPONSE, &body);
                    return Err(BackendError::Rejected {
                        side,
                        code,
                        message,
                        frame: frame.freeze(),
                    });
                }
                msg::BACKEND_KEY_DATA => {
                    if body.len() >= 8 {
                        let pid = body.get_i32();
                        key = Some((pid, body));
                    }
                }
                msg::PARAMETER_STATUS | msg::NOTICE_RESPONSE => {
                    protocol::frontend_message(&mut greeting, tag, &body);
                }
                msg::NEGOTIATE_PROTOCOL_VERSION => {}
                msg::READY_FOR_QUERY => return Ok(()),
                other => {
                    return Err(BackendError::Auth {
                        side,
                        reason: format!("unexpected message {:?} during startup", other as char),
                    })
                }
            }
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| BackendError::Timeout {
            side,
            endpoint: backend.url.endpoint(),
        })??;
    Ok(BackendConn {
        reader,
        writer,
        key,
        connected_at: std::time::Instant::now(),
        greeting,
        leftover: buf,
    })
}

/// Send a CancelRequest for backend session `(pid, secret)` on its own connection.
pub async fn cancel(
    backend: &Backend,
    pid: i32,
    secret: &[u8],
    timeout: std::time::Duration,
) -> Result<(), BackendError> {
    let (mut reader, mut writer, _) = transport(backend, timeout).await?;
    let mut out = BytesMut::new();
    out.put_i32(12 + secret.len() as i32);
    out.put_i32(protocol::CANCEL_REQUEST);
    out.put_i32(pid);
    out.put_slice(secret);
    let side = backend.side.name();
    writer.write_all(&out).await.map_err(|e| BackendError::Io {
        side,
        source: MessageError::Io(e),
    })?;
    let _ = writer.flush().await;
    // The server closes the connection when it has processed the request.
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(timeout, reader.read(&mut sink)).await;
    Ok(())
}
