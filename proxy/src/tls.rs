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

/// Server-side TLS configuration from PEM files.
pub fn server_config(
    cert: &str,
    key: &str,
) -> Result<Arc<rustls::ServerConfig>, dualwrite_common::tls::TlsError> {
    let certs = dualwrite_common::tls::load_certs("tls.cert", std::path::Path::new(cert))?;
    let key = dualwrite_common::tls::load_key("tls.key", std::path::Path::new(key))?;
    let config = rustls::ServerConfig::builder_with_provider(dualwrite_common::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}
