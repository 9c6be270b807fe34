//! One client connection: startup and TLS negotiation, authentication, the backend session,
//! then the relay until either side ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};

use crate::config::{AuthMethod, Mode, TlsMode};
use crate::session::relay::{self, End};
use crate::session::shared::Shared;
use crate::wire::auth::{self, AuthError};
use crate::wire::backend;
use crate::wire::protocol::{self, ProxyError, Startup, StartupError};
use crate::wire::tls::{split, Reader, Writer};

/// How long a client may take to send its startup packet and authenticate.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle time before a silent client is probed.
const CLIENT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Entry point for an accepted connection.
pub async fn handle(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, id: u64) {
    let span = tracing::info_span!("session", id, %peer, user = tracing::field::Empty);
    async move {
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay");
        }
        // A client whose host vanished (no FIN, no reset) is noticed after about two minutes,
        // so its backend sessions close and an open transaction of it cannot hold a cutover.
        let probes = socket2::TcpKeepalive::new()
            .with_time(CLIENT_KEEPALIVE_IDLE)
            .with_interval(Duration::from_secs(10))
            .with_retries(6);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&probes) {
            debug!(error = %e, "client keepalive");
        }
        run(stream, shared, id).await;
    }
    .instrument(span)
    .await
}

/// What the startup phase produced.
struct Client {
    reader: Reader,
    writer: Writer,
    tls: bool,
    minor: u16,
    params: Vec<(String, String)>,
    unsupported_options: Vec<String>,
}

async fn send_error(w: &mut Writer, e: &ProxyError) {
    let _ = w.write_all(&e.to_bytes()).await;
    let _ = w.flush().await;
}

async fn run(stream: TcpStream, shared: Arc<Shared>, id: u64) {
    let metrics = &shared.metrics;
    let client = match tokio::time::timeout(STARTUP_TIMEOUT, startup(stream, &shared)).await {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => return, // cancel request or client gone during negotiation
        Ok(Err((mut w, e))) => {
            metrics.error(e.kind());
            debug!(error = %e, "startup refused");
            if let Some(w) = w.as_mut() {
                send_error(w, &e.to_client()).await;
            }
            return;
        }
        Err(_) => {
            metrics.error("startup_timeout");
            return;
        }
    };
    let Client {
        mut reader,
        mut writer,
        tls,
        minor,
        params,
        unsupported_options,
    } = client;
    let param = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let Some(user) = param("user") else {
        metrics.error("startup");
        send_error(
            &mut writer,
            &ProxyError::fatal(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            ),
        )
        .await;
        return;
    };
    let database = param("database").unwrap_or_else(|| user.clone());
    tracing::Span::current().record("user", user.as_str());
    if param("replication").is_some_and(|v| v != "false" && v != "0" && v != "off") {
        metrics.error("startup");
        send_error(
            &mut writer,
            &ProxyError::fatal(
                "0A000",
                "replication connections are not supported through dualwrite-proxy",
            )
            .with_hint("connect to the database server directly for replication"),
        )
        .await;
        return;
    }
    let settings = shared.settings();
    if settings.tls_mode == TlsMode::Require && !tls {
        metrics.error("tls_required");
        send_error(
            &mut writer,
            &ProxyError::fatal("28000", "the proxy requires TLS for all connections")
                .with_hint("connect with sslmode=require or stronger"),
        )
        .await;
        return;
    }
    let Ok(_permit) = shared.connection_slots.clone().try_acquire_owned() else {
        metrics.error("too_many_clients");
        send_error(
            &mut writer,
            &ProxyError::fatal("53300", "sorry, too many clients already")
                .with_hint("raise max_client_connections in the proxy's config; each client uses one backend connection per database"),
        )
        .await;
        return;
    };

    let mut buf = BytesMut::with_capacity(8192);
    let mut out = BytesMut::new();
    if minor > 0 || !unsupported_options.is_empty() {
        protocol::negotiate_protocol_version(&mut out, &unsupported_options);
        if writer.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }

    let user_entry = settings.users.get(&user).cloned();
    let authed = tokio::time::timeout(STARTUP_TIMEOUT, async {
        match settings.auth_method {
            AuthMethod::Trust => Ok(()),
            AuthMethod::Md5 => {
                auth::md5(
                    &mut reader,
                    &mut writer,
                    &mut buf,
                    &user,
                    user_entry.as_ref().and_then(|u| u.password.as_ref()),
                )
                .await
            }
            AuthMethod::ScramSha256 => {
                auth::scram(
                    &mut reader,
                    &mut writer,
                    &mut buf,
                    &user,
                    user_entry.as_ref().and_then(|u| u.scram.as_ref()),
                    settings.tls_end_point.as_deref().filter(|_| tls),
                )
                .await
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(AuthError::Protocol("authentication timed out".into())));
    if let Err(e) = authed {
        metrics.error("client_auth");
        info!(user = %user, error = %e, "client authentication failed");
        send_error(&mut writer, &e.to_client()).await;
        return;
    }

    let primary = settings.primary_backend().clone();
    let password = user_entry
        .as_ref()
        .and_then(|u| u.backend_password(primary.side).cloned())
        .or_else(|| {
            (primary.url.user == user)
                .then(|| primary.url.password.clone())
                .flatten()
        });
    let started = std::time::Instant::now();
    let conn = match backend::connect(
        &primary,
        &user,
        &database,
        password.as_ref(),
        &params,
        settings.connect_timeout,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            metrics.error(e.kind());
            match &e {
                backend::BackendError::Rejected { .. } => {
                    info!(error = %e, "backend refused session")
                }
                _ => warn!(error = %e, "backend session failed"),
            }
            let _ = writer.write_all(&e.to_client()).await;
            let _ = writer.flush().await;
            return;
        }
    };
    metrics.backend_connect(started.elapsed());

    // The backend's pid with a secret of our own, so a cancel comes to us (see `cancel`).
    let cancel_guard = conn.key.as_ref().map(|(pid, secret)| {
        shared
            .cancels
            .register(primary.clone(), *pid, secret.clone())
    });
    auth::ok(&mut out);
    out.extend_from_slice(&conn.greeting);
    if let Some(g) = &cancel_guard {
        protocol::backend_key_data(&mut out, g.pid, g.secret);
    }
    protocol::ready_for_query(&mut out, b'I');
    if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
        return;
    }
    drop(out);

    let _gauge = metrics.session_open();
    debug!(user = %user, database = %database, "session started");
    // The session's secondary, in dual-write mode: its own backend session on the other database.
    let info = crate::session::secondary::SessionInfo {
        id,
        user: user.clone(),
        database: database.clone(),
        params: params
            .iter()
            .filter(|(k, _)| k != "user" && k != "database")
            .cloned()
            .collect(),
    };
    let spawn_secondary =
        |settings: &crate::config::Settings| match (settings.mode, settings.secondary_backend()) {
            (Mode::DualWrite, Some(backend)) => Some(crate::session::secondary::Secondary::spawn(
                shared.clone(),
                backend.clone(),
                info.clone(),
            )),
            _ => None,
        };
    let secondary = spawn_secondary(&settings);
    let mut secondary = secondary;
    let mut primary = primary;
    let mut current = crate::wire::backend::Conn {
        reader: conn.reader,
        writer: conn.writer,
        buf: conn.leftover,
        key: conn.key.clone(),
        connected_at: conn.connected_at,
    };
    let mut client_buf = buf;
    let mut builder = crate::dual::unit::Builder::default();
    let flow = relay::Flow::default();
    flow.epoch
        .store(shared.gate.epoch(), std::sync::atomic::Ordering::Release);
    let end = loop {
        flow.primary_target.store(
            primary.side == crate::config::Side::Target,
            std::sync::atomic::Ordering::Release,
        );
        let end = relay::run(
            relay::Ends {
                client_reader: &mut reader,
                client_writer: &mut writer,
                backend_reader: &mut current.reader,
                backend_writer: &mut current.writer,
            },
            &mut client_buf,
            &mut current.buf,
            &mut builder,
            &flow,
            &shared,
            secondary.as_ref(),
        )
        .await;
        if !matches!(end, End::Reconfigure) {
            break end;
        }
        // Adopt changed settings at this idle point: swap backends after a cutover, start or
        // stop the secondary after a live mode change.
        let settings = shared.settings();
        flow.epoch
            .store(shared.gate.epoch(), std::sync::atomic::Ordering::Release);
        if settings.primary != primary.side {
            let Some(sec) = secondary.as_ref() else {
                break End::Switch("the session has no secondary to switch to".into());
            };
            match sec
                .swap(current, primary.clone(), builder.named_statements())
                .await
            {
                Ok((new, old_secondary_backend)) => {
                    if let (Some(g), Some((pid, secret))) = (&cancel_guard, &new.key) {
                        shared.cancels.retarget(
                            g,
                            old_secondary_backend.clone(),
                            *pid,
                            secret.clone(),
                        );
                    }
                    debug!(
                        from = primary.side.name(),
                        to = old_secondary_backend.side.name(),
                        "session switched primary"
                    );
                    current = new;
                    primary = old_secondary_backend;
                }
                Err(e) => match e.conn {
                    Some(c) => {
                        warn!(reason = %e.reason, "session could not switch primary");
                        current = *c;
                        break End::Switch(e.reason);
                    }
                    None => return,
                },
            }
        }
        let want_dual = settings.mode == Mode::DualWrite;
        if want_dual && secondary.is_none() {
            secondary = spawn_secondary(&settings);
        } else if !want_dual {
            // The worker finishes what is queued and closes its session.
            secondary = None;
        }
    };
    flow.release(&shared);
    if matches!(end, End::BackendGone) {
        // Its server may not have seen it end (a silent network): it could live on there,
        // holding the client's transaction's locks (see `abandoned`).
        if let Some((pid, _)) = &current.key {
            shared.abandoned.record(
                primary.side,
                *pid,
                &info.user,
                &info.database,
                current.connected_at,
            );
        }
    }
    let mut backend_writer = current.writer;
    let side = primary.side.name();
    let farewell = match &end {
        End::Terminated | End::ClientGone => None,
        End::BackendGone => Some(ProxyError::fatal(
            "08006",
            format!("the {side} database closed the connection unexpectedly"),
        )),
        End::Protocol(e) => {
            metrics.error("protocol");
            Some(ProxyError::fatal(
                "08P01",
                format!("invalid frontend message: {e}"),
            ))
        }
        End::Shutdown => Some(ProxyError::fatal(
            "57P01",
            "terminating connection because dualwrite-proxy is shutting down",
        )),
        End::Switch(reason) => Some(ProxyError::fatal("08006", format!("cutover: {reason}"))),
        End::Reconfigure => None,
    };
    debug!(?end, "session ended");
    if let Some(e) = farewell {
        if flow.client_at_boundary() {
            send_error(&mut writer, &e).await;
        }
        if !matches!(end, End::BackendGone) {
            // Politely end the backend session.
            let _ = backend_writer.write_all(b"X\0\0\0\x04").await;
        }
    }
    let _ = writer.shutdown().await;
}

/// The startup error and, when the client can still be written to, its writer.
#[derive(Debug, thiserror::Error)]
enum StartupFailure {
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("TLS was requested twice")]
    TlsTwice,
    #[error(
        "a client started TLS directly (sslnegotiation=direct) but the proxy's tls.mode is disable"
    )]
    DirectTlsDisabled,
    #[error("a client started TLS directly without negotiating ALPN \"postgresql\"")]
    DirectTlsWithoutAlpn,
}

impl StartupFailure {
    fn kind(&self) -> &'static str {
        match self {
            StartupFailure::Startup(_) | StartupFailure::TlsTwice => "startup",
            StartupFailure::Io(_) => "io",
            StartupFailure::Tls(_)
            | StartupFailure::DirectTlsDisabled
            | StartupFailure::DirectTlsWithoutAlpn => "tls",
        }
    }

    fn to_client(&self) -> ProxyError {
        match self {
            StartupFailure::Startup(StartupError::UnsupportedProtocol { .. }) => {
                ProxyError::fatal("0A000", self.to_string())
            }
            _ => ProxyError::fatal("08P01", self.to_string()),
        }
    }
}

type StartupResult = Result<Option<Client>, (Option<Writer>, StartupFailure)>;

/// Negotiate TLS (and refuse GSSAPI encryption) until a StartupMessage or CancelRequest.
async fn startup(stream: TcpStream, shared: &Shared) -> StartupResult {
    let settings = shared.settings();
    let (mut reader, mut writer): (Reader, Writer) = {
        let (r, w) = stream.into_split();
        (Box::new(r), Box::new(w))
    };
    let mut tls = false;
    let mut first = true;
    loop {
        let mut len = [0u8; 4];
        let got =
            if std::mem::take(&mut first) {
                // A client may start TLS at once (`sslnegotiation=direct`): its first byte then
                // opens a TLS handshake record, which no startup packet length does.
                match reader.read_exact(&mut len[..1]).await {
                    Ok(_) if len[0] == crate::wire::tls::TLS_HANDSHAKE => {
                        let Some(config) = settings.tls.clone().filter(|_| {
                            matches!(settings.tls_mode, TlsMode::Allow | TlsMode::Require)
                        }) else {
                            // It expects TLS from the first byte: no plain error can reach it.
                            return Err((None, StartupFailure::DirectTlsDisabled));
                        };
                        let prefixed: Reader = Box::new(
                            std::io::Cursor::new([crate::wire::tls::TLS_HANDSHAKE]).chain(reader),
                        );
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        match acceptor.accept(rejoin(prefixed, writer)).await {
                            Ok(t) => {
                                if t.get_ref().1.alpn_protocol()
                                    != Some(crate::wire::tls::POSTGRESQL_ALPN)
                                {
                                    return Err((None, StartupFailure::DirectTlsWithoutAlpn));
                                }
                                (reader, writer) = split(t);
                                tls = true;
                                continue;
                            }
                            Err(e) => return Err((None, StartupFailure::Tls(e))),
                        }
                    }
                    Ok(_) => reader.read_exact(&mut len[1..]).await,
                    Err(e) => Err(e),
                }
            } else {
                reader.read_exact(&mut len).await
            };
        if let Err(e) = got {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(None)
            } else {
                Err((None, StartupFailure::Io(e)))
            };
        }
        let len = match protocol::startup_len(len) {
            Ok(l) => l,
            Err(e) => return Err((Some(writer), e.into())),
        };
        let mut packet = vec![0u8; len];
        packet[..4].copy_from_slice(&(len as i32).to_be_bytes());
        if let Err(e) = reader.read_exact(&mut packet[4..]).await {
            return Err((None, StartupFailure::Io(e)));
        }
        match protocol::parse_startup(&packet) {
            Err(e) => return Err((Some(writer), e.into())),
            Ok(Startup::Ssl) => {
                if tls {
                    return Err((Some(writer), StartupFailure::TlsTwice));
                }
                match (&settings.tls, settings.tls_mode) {
                    (Some(config), TlsMode::Allow | TlsMode::Require) => {
                        if let Err(e) = writer.write_all(b"S").await {
                            return Err((None, StartupFailure::Io(e)));
                        }
                        // Rejoin the halves for the handshake.
                        let stream = rejoin(reader, writer);
                        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                        match acceptor.accept(stream).await {
                            Ok(t) => {
                                (reader, writer) = split(t);
                                tls = true;
                            }
                            Err(e) => return Err((None, StartupFailure::Tls(e))),
                        }
                    }
                    _ => {
                        if let Err(e) = writer.write_all(b"N").await {
                            return Err((None, StartupFailure::Io(e)));
                        }
                    }
                }
            }
            Ok(Startup::GssEnc) => {
                if let Err(e) = writer.write_all(b"N").await {
                    return Err((None, StartupFailure::Io(e)));
                }
            }
            Ok(Startup::Cancel { pid, secret }) => {
                shared
                    .cancels
                    .cancel(pid, &secret, &shared.metrics, settings.connect_timeout)
                    .await;
                return Ok(None);
            }
            Ok(Startup::Session {
                minor,
                params,
                unsupported_options,
            }) => {
                return Ok(Some(Client {
                    reader,
                    writer,
                    tls,
                    minor,
                    params,
                    unsupported_options,
                }))
            }
        }
    }
}

/// Join a reader and writer back into one stream for a TLS handshake.
fn rejoin(reader: Reader, writer: Writer) -> tokio::io::Join<Reader, Writer> {
    tokio::io::join(reader, writer)
}
