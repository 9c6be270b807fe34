//! A raw wire-protocol client for tests that send what no well-behaved driver would.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    /// What the server sent after authentication, up to the first ReadyForQuery (after a login).
    pub greeting: Vec<Msg>,
}

/// A message from the server: tag and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// (process id, secret key) of a BackendKeyData.
    pub fn backend_key(&self) -> Option<(i32, Vec<u8>)> {
        (self.tag == b'K' && self.body.len() >= 8).then(|| {
            let pid = i32::from_be_bytes([self.body[0], self.body[1], self.body[2], self.body[3]]);
            (pid, self.body[4..].to_vec())
        })
    }

    /// (sender's process id, channel, payload) of a NotificationResponse.
    pub fn notification(&self) -> Option<(i32, String, String)> {
        if self.tag != b'A' || self.body.len() < 4 {
            return None;
        }
        let pid = i32::from_be_bytes([self.body[0], self.body[1], self.body[2], self.body[3]]);
        let mut parts = self.body[4..].split(|b| *b == 0);
        let channel = String::from_utf8_lossy(parts.next()?).into_owned();
        let payload = String::from_utf8_lossy(parts.next()?).into_owned();
        Some((pid, channel, payload))
    }

    /// The text of each column of a DataRow (None for NULL).
    pub fn columns(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D', "not a DataRow: {self:?}");
        let mut rest = &self.body[2..];
        let mut out = Vec::new();
        while rest.len() >= 4 {
            let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            rest = &rest[4..];
            if len < 0 {
                out.push(None);
            } else {
                let (v, after) = rest.split_at(len as usize);
                out.push(Some(String::from_utf8_lossy(v).into_owned()));
                rest = after;
            }
        }
        out
    }

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

/// Next message from `r` (bytes read past it stay in `buf`), or None at EOF or after 10 s of
/// silence.
pub async fn recv<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> Option<Msg> {
    loop {
        if buf.len() >= 5 {
            let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() > len {
                let tag = buf.get_u8();
                buf.advance(4);
                let body = buf.split_to(len - 4).to_vec();
                return Some(Msg { tag, body });
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), r.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

impl RawClient {
    pub async fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to proxy");
        RawClient {
            stream,
            buf: BytesMut::new(),
            greeting: Vec::new(),
        }
    }

    /// Connect and log in with SCRAM-SHA-256 (no channel binding), up to the first
    /// ReadyForQuery; the messages after AuthenticationOk are kept in `greeting`.
    pub async fn login_scram(port: u16, user: &str, password: &str, db: &str) -> RawClient {
        Self::connect(port).await.scram(user, password, db).await
    }

    /// Log in on a connected client with SCRAM-SHA-256 (see [`RawClient::login_scram`]).
    pub async fn scram(mut self, user: &str, password: &str, db: &str) -> RawClient {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        let c = &mut self;
        c.send(&startup_packet(&[("user", user), ("database", db)]))
            .await;
        let auth = |m: &Msg| -> (i32, Vec<u8>) {
            assert_eq!(m.tag, b'R', "expected an authentication request: {m:?}");
            let code = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
            (code, m.body[4..].to_vec())
        };
        let first = c.recv().await.expect("authentication request");
        let (code, mechanisms) = auth(&first);
        assert_eq!(code, 10, "expected SASL: {first:?}");
        assert!(
            String::from_utf8_lossy(&mechanisms).contains("SCRAM-SHA-256"),
            "{first:?}"
        );
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
        body.extend_from_slice(scram.message());
        c.send(&message(b'p', &body)).await;
        let cont = c.recv().await.expect("SASL continue");
        let (code, data) = auth(&cont);
        assert_eq!(code, 11, "expected SASLContinue: {cont:?}");
        scram.update(&data).expect("server-first message");
        c.send(&message(b'p', scram.message())).await;
        let fin = c.recv().await.expect("SASL final");
        let (code, data) = auth(&fin);
        assert_eq!(code, 12, "expected SASLFinal: {fin:?}");
        scram.finish(&data).expect("server signature");
        let ok = c.recv().await.expect("AuthenticationOk");
        assert_eq!(auth(&ok), (0, Vec::new()), "expected AuthenticationOk");
        c.greeting = c.until(b'Z').await;
        self
    }

    /// The BackendKeyData of the greeting: (process id, secret key).
    pub fn backend_key(&self) -> (i32, Vec<u8>) {
        self.greeting
            .iter()
            .find_map(Msg::backend_key)
            .unwrap_or_else(|| panic!("no BackendKeyData in {:?}", self.greeting))
    }

    /// Run a simple query; its messages up to ReadyForQuery, panicking on an ErrorResponse.
    pub async fn simple(&mut self, sql: &str) -> Vec<Msg> {
        self.send(&query(sql)).await;
        let msgs = self.until(b'Z').await;
        if let Some(e) = msgs.iter().find(|m| m.tag == b'E') {
            panic!("{sql}: {:?}", e.field(b'M'));
        }
        msgs
    }

    /// The first column of the first row of a simple query.
    pub async fn value(&mut self, sql: &str) -> String {
        let msgs = self.simple(sql).await;
        msgs.iter()
            .find(|m| m.tag == b'D')
            .and_then(|m| m.columns().into_iter().next().flatten())
            .unwrap_or_else(|| panic!("{sql}: no value in {msgs:?}"))
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
        c.greeting = msgs;
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to proxy");
    }

    /// Next message, or None at EOF/timeout.
    pub async fn recv(&mut self) -> Option<Msg> {
        recv(&mut self.stream, &mut self.buf).await
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
