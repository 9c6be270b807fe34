//! Reading one whole message from a connection (client or backend) into a reused buffer.

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use crate::wire::protocol::{self, FrameError, ProxyError};
use crate::wire::tls::Reader;

/// Reading one whole message failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("connection closed")]
    Eof,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("protocol violation: {0}")]
    Frame(#[from] FrameError),
}

impl MessageError {
    pub fn to_client(&self) -> ProxyError {
        match self {
            MessageError::Frame(e) => ProxyError::fatal("08P01", e.to_string()),
            other => ProxyError::fatal("08006", other.to_string()),
        }
    }
}

/// Read one whole message (`tag`, body) into `buf`, refusing lengths over `max`.
pub async fn read_message(
    r: &mut Reader,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(u8, Bytes), MessageError> {
    loop {
        if let Some(h) = protocol::header(buf, max)? {
            if buf.len() >= h.frame_len {
                let frame = buf.split_to(h.frame_len).freeze();
                return Ok((h.tag, frame.slice(5..)));
            }
            buf.reserve(h.frame_len - buf.len());
        } else {
            buf.reserve(8192);
        }
        if r.read_buf(buf).await.map_err(MessageError::Io)? == 0 {
            return Err(MessageError::Eof);
        }
    }
}
