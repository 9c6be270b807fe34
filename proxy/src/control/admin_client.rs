//! The CLI's side of the admin API: a minimal HTTP/1.1 request to `admin_listen`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the proxy's admin API at {addr} (is the proxy running?): {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API at {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the config has no admin_listen: the CLI talks to a running proxy through it")]
    NoAdmin,
}

/// Send `method path` with an optional JSON body; returns the status code and body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), AdminError> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| AdminError::Connect { addr, source })?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let io = |source| AdminError::Io { addr, source };
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(io)?;
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
