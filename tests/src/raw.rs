//! A raw wire-protocol client for tests that send what no well-behaved driver would.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// A message from the server: tag and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&k, after)) = rest.split_first() {
            if k == 0 {
                break;
            }
            let end = after.iter().position(|b| *b == 0)?;
            if k == code {
                return Some(String::from_utf8_lossy(&after[..end]).into_owned());
            }
            rest = &after[end + 1..];
        }
        None
    }
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i32(196608);
    for (k, v) in params {
        b.put_slice(k.as_bytes());
        b.put_u8(0);
        b.put_slice(v.as_bytes());
        b.put_u8(0);
    }
    b.put_u8(0);
    let len = b.len() as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.to_vec()
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    b.extend_from_slice(body);
    b
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

impl RawClient {
    pub async fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to proxy");
        RawClient {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connect and log in (the proxy must use `trust`), up to the first ReadyForQuery.
    pub async fn login(port: u16, user: &str, db: &str) -> RawClient {
        let mut c = Self::connect(port).await;
        c.send(&startup_packet(&[("user", user), ("database", db)]))
            .await;
        let msgs = c.until(b'Z').await;
        assert!(
            msgs.iter().any(|m| m.tag == b'R'),
            "no AuthenticationOk: {msgs:?}"
        );
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to proxy");
    }

    /// Next message, or None at EOF/timeout.
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Some(Msg { tag, body });
                }
            }
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Messages up to and including the first with `tag` (panics at EOF first).
    pub async fn until(&mut self, tag: u8) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await.unwrap_or_else(|| {
                panic!("connection ended before {:?}; got {out:?}", tag as char)
            });
            let done = m.tag == tag;
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Messages until the server closes the connection.
    pub async fn until_closed(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            out.push(m);
        }
        out
    }
}
