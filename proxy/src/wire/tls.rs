//! The stream halves every connection is split into (plain or TLS, TCP or Unix socket), and the
//! constants of TLS negotiation. The TLS configuration itself is loaded with the settings
//! (`config::keys`).

use tokio::io::{AsyncRead, AsyncWrite};

/// One direction of a client or backend connection, plain or TLS, TCP or Unix socket.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Split any stream into boxed halves.
pub fn split<S>(stream: S) -> (Reader, Writer)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    (Box::new(r), Box::new(w))
}

/// The ALPN protocol name of the PostgreSQL protocol (defined with the TLS configuration).
pub use crate::config::keys::POSTGRESQL_ALPN;

/// The first byte of a TLS handshake record: a client starting TLS directly
/// (`sslnegotiation=direct`, PostgreSQL 17+) instead of with an SSLRequest.
pub const TLS_HANDSHAKE: u8 = 0x16;
