//! TLS toward clients, and the stream halves every connection is split into.

use std::sync::Arc;

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

/// The ALPN protocol name of the PostgreSQL protocol.
pub const POSTGRESQL_ALPN: &[u8] = b"postgresql";

/// The first byte of a TLS handshake record: a client starting TLS directly
/// (`sslnegotiation=direct`, PostgreSQL 17+) instead of with an SSLRequest.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// TLS toward clients: the server configuration, and the `tls-server-end-point` channel
/// binding data of its certificate when it has one (for SCRAM-SHA-256-PLUS).
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ServerConfig>,
    pub end_point: Option<Arc<[u8]>>,
}

/// Server-side TLS from PEM files.
pub fn client_tls(cert: &str, key: &str) -> Result<ClientTls, dualwrite_common::tls::TlsError> {
    let certs = dualwrite_common::tls::load_certs("tls.cert", std::path::Path::new(cert))?;
    let end_point = certs
        .first()
        .and_then(|c| dualwrite_common::tls::server_end_point(c))
        .map(Arc::from);
    Ok(ClientTls {
        config: server_config(cert, key)?,
        end_point,
    })
}

/// Server-side TLS configuration from PEM files.
pub fn server_config(
    cert: &str,
    key: &str,
) -> Result<Arc<rustls::ServerConfig>, dualwrite_common::tls::TlsError> {
    let certs = dualwrite_common::tls::load_certs("tls.cert", std::path::Path::new(cert))?;
    let key = dualwrite_common::tls::load_key("tls.key", std::path::Path::new(key))?;
    let mut config = rustls::ServerConfig::builder_with_provider(dualwrite_common::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // As PostgreSQL 17+: a client that offers ALPN must offer "postgresql"; direct TLS
    // (`sslnegotiation=direct`) requires it.
    config.alpn_protocols = vec![POSTGRESQL_ALPN.to_vec()];
    Ok(Arc::new(config))
}
