//! Postgres wire-protocol framing: split frames off a buffer, decode only what a decision
//! needs, and build the few messages the proxy originates itself.
//!
//! Every message after startup is `tag: u8, len: i32 (including itself), body`. The proxy
//! forwards frames as the bytes they arrived as; see [`scan`].

use bytes::{BufMut, Bytes, BytesMut};

/// Protocol 3.0 startup code.
pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Postgres' own bound on a startup packet.
pub const MAX_STARTUP_LEN: usize = 10_000;
pub use crate::config::DEFAULT_MAX_MESSAGE_LEN;

/// Message tags sent by clients after startup.
pub mod frontend {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';

    /// Whether `tag` is a message a client may send once the session is up.
    pub fn is_valid(tag: u8) -> bool {
        matches!(
            tag,
            BIND | CLOSE
                | COPY_DATA
                | COPY_DONE
                | COPY_FAIL
                | DESCRIBE
                | EXECUTE
                | FLUSH
                | FUNCTION_CALL
                | PARSE
                | QUERY
                | SYNC
                | TERMINATE
        )
    }
}

/// Message tags sent by servers.
pub mod backend {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
}

/// A protocol violation by the peer; becomes SQLSTATE 08P01.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message length {len} exceeds the maximum of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("invalid frontend message type {0:?}")]
    UnknownType(char),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// Where a frame starts and how long it is, found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub tag: u8,
    /// The whole frame, header included.
    pub frame_len: usize,
}

/// Read the header at the start of `buf`, if 5 bytes are there.
pub fn header(buf: &[u8], max: usize) -> Result<Option<FrameHeader>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len as i64));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    Ok(Some(FrameHeader {
        tag: buf[0],
        frame_len: len + 1,
    }))
}

/// Streaming scanner over one direction of a connection: finds message boundaries so that
/// bytes can be forwarded as they arrive, while messages that need a decision are seen whole.
///
/// Bodies of messages that `wants` rejects are passed through in pieces as they arrive, so a
/// huge `DataRow` never has to fit in memory.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Body bytes of a passed-through message still to come.
    remaining: usize,
}

impl Scanner {
    /// Whether the scanner is between messages (nothing half-forwarded).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Scan `buf` and return how many leading bytes can be forwarded now. Calls `seen` for each
    /// whole message whose tag `wants` accepts, with its tag and body. Stops before a partial
    /// header or a partial wanted message; those stay in `buf` for the next read.
    pub fn scan(
        &mut self,
        buf: &[u8],
        max: usize,
        wants: impl Fn(u8) -> bool,
        mut seen: impl FnMut(u8, &[u8]) -> Result<(), FrameError>,
    ) -> Result<usize, FrameError> {
        self.scan_until(buf, max, wants, |t, b| seen(t, b).map(|()| true))
    }

    /// [`Scanner::scan`], where `seen` may also stop the scan before a wanted message by
    /// returning `false`: that message is not counted in the bytes to forward.
    pub fn scan_until(
        &mut self,
        buf: &[u8],
        max: usize,
        wants: impl Fn(u8) -> bool,
        mut seen: impl FnMut(u8, &[u8]) -> Result<bool, FrameError>,
    ) -> Result<usize, FrameError> {
        let mut pos = 0;
        if self.remaining > 0 {
            let n = self.remaining.min(buf.len());
            self.remaining -= n;
            pos = n;
        }
        while self.remaining == 0 {
            let Some(h) = header(&buf[pos..], max)? else {
                break;
            };
            if wants(h.tag) {
                if buf.len() - pos < h.frame_len {
                    break;
                }
                if !seen(h.tag, &buf[pos + 5..pos + h.frame_len])? {
                    break;
                }
                pos += h.frame_len;
            } else {
                let available = (buf.len() - pos).min(h.frame_len);
                self.remaining = h.frame_len - available;
                pos += available;
            }
        }
        Ok(pos)
    }
}

/// The parsed first packet of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: Vec<u8>,
    },
    /// Protocol 3.x with its parameters (`user`, `database`, `options`, ...). `minor` > 0 and
    /// `_pq_.` options are negotiated down to 3.0.
    Session {
        minor: u16,
        params: Vec<(String, String)>,
        unsupported_options: Vec<String>,
    },
}

/// Why a startup packet was refused; each maps to the SQLSTATE Postgres would send.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
}

/// Length of the startup packet whose first 4 bytes are `len_bytes`.
pub fn startup_len(len_bytes: [u8; 4]) -> Result<usize, StartupError> {
    let len = i32::from_be_bytes(len_bytes);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(StartupError::BadLength);
    }
    Ok(len as usize)
}

/// Parse a whole startup packet (length word included).
pub fn parse_startup(packet: &[u8]) -> Result<Startup, StartupError> {
    if packet.len() < 8 {
        return Err(StartupError::BadLength);
    }
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST => Ok(Startup::Ssl),
        GSSENC_REQUEST => Ok(Startup::GssEnc),
        CANCEL_REQUEST => {
            if body.len() < 8 || body.len() > 256 + 4 {
                return Err(StartupError::Malformed("cancel request"));
            }
            let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            Ok(Startup::Cancel {
                pid,
                secret: body[4..].to_vec(),
            })
        }
        code => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            let mut params = Vec::new();
            let mut unsupported_options = Vec::new();
            let mut rest = body;
            loop {
                let (key, after) = cstr(rest).ok_or(StartupError::Malformed("unterminated key"))?;
                if key.is_empty() {
                    if !after.is_empty() {
                        return Err(StartupError::Malformed("data after terminator"));
                    }
                    break;
                }
                let (value, after) =
                    cstr(after).ok_or(StartupError::Malformed("unterminated value"))?;
                let key = String::from_utf8_lossy(key).into_owned();
                let value = String::from_utf8_lossy(value).into_owned();
                if key.starts_with("_pq_.") {
                    unsupported_options.push(key);
                } else {
                    params.push((key, value));
                }
                rest = after;
            }
            Ok(Startup::Session {
                minor,
                params,
                unsupported_options,
            })
        }
    }
}

/// Split a NUL-terminated string off the front of `buf`.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|b| *b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

/// Start a message: tag and a length placeholder. Finish with [`end_message`].
fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    at
}

fn end_message(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// An ErrorResponse the proxy itself originates.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ProxyError {
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            severity: "FATAL",
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            severity: "ERROR",
            ..Self::fatal(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let at = begin(out, backend::ERROR_RESPONSE);
        let mut field = |code: u8, value: &str| {
            out.put_u8(code);
            // A NUL inside would end the field early; messages are ours, but be safe.
            out.put_slice(value.replace('\0', " ").as_bytes());
            out.put_u8(0);
        };
        field(b'S', self.severity);
        field(b'V', self.severity);
        field(b'C', self.code);
        field(b'M', &self.message);
        if let Some(d) = &self.detail {
            field(b'D', d);
        }
        if let Some(h) = &self.hint {
            field(b'H', h);
        }
        out.put_u8(0);
        end_message(out, at);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

/// `AuthenticationXxx` with a code and payload.
pub fn authentication(out: &mut BytesMut, code: i32, payload: &[u8]) {
    let at = begin(out, backend::AUTHENTICATION);
    out.put_i32(code);
    out.put_slice(payload);
    end_message(out, at);
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    let at = begin(out, backend::BACKEND_KEY_DATA);
    out.put_i32(pid);
    out.put_i32(secret);
    end_message(out, at);
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    let at = begin(out, backend::READY_FOR_QUERY);
    out.put_u8(status);
    end_message(out, at);
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` options. The version is the
/// whole protocol number (major << 16 | minor), as PostgreSQL sends it and libpq 18 reads it.
pub fn negotiate_protocol_version(out: &mut BytesMut, unsupported: &[String]) {
    let at = begin(out, backend::NEGOTIATE_PROTOCOL_VERSION);
    out.put_i32(3 << 16);
    out.put_i32(unsupported.len() as i32);
    for o in unsupported {
        out.put_slice(o.as_bytes());
        out.put_u8(0);
    }
    end_message(out, at);
}

/// A frontend message with a body (used when the proxy talks to a backend itself).
pub fn frontend_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    let at = begin(out, tag);
    out.put_slice(body);
    end_message(out, at);
}

/// A StartupMessage for protocol 3.0.
pub fn startup_message(out: &mut BytesMut, params: &[(&str, &str)]) {
    let at = out.len();
    out.put_i32(0);
    out.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        out.put_slice(k.as_bytes());
        out.put_u8(0);
        out.put_slice(v.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// The SQLSTATE and message of an ErrorResponse body, for logs and metrics.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    let mut rest = body;
    while let Some((&kind, after)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Some((value, after)) = cstr(after) else {
            break;
        };
        match kind {
            b'C' => code = String::from_utf8_lossy(value).into_owned(),
            b'M' => message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
        rest = after;
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_of_ready_for_query() {
        let h = header(b"Z\0\0\0\x05I", DEFAULT_MAX_MESSAGE_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            FrameHeader {
                tag: b'Z',
                frame_len: 6
            }
        );
        assert_eq!(header(b"Z\0\0", 100).unwrap(), None);
        assert_eq!(header(b"Z\0\0\0\x03", 100), Err(FrameError::BadLength(3)));
        assert_eq!(
            header(b"Q\0\0\x10\0", 100),
            Err(FrameError::TooLong {
                len: 4096,
                max: 100
            })
        );
    }

    #[test]
    fn scanner_streams_unwanted_bodies_and_holds_wanted_ones() {
        // DataRow (passed through) then a ReadyForQuery split across reads.
        let data_row = b"D\0\0\0\x0b\0\x01\0\0\0\x01x";
        let rfq = b"Z\0\0\0\x05I";
        let mut s = Scanner::default();
        let mut seen = Vec::new();
        let wants = |t| t == b'Z';
        // First 7 bytes of the DataRow: forwarded at once.
        let n = s
            .scan(&data_row[..7], 1 << 20, wants, |t, b| {
                seen.push((t, b.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 7);
        assert!(!s.at_boundary());
        // Rest of DataRow plus 3 bytes of Z: the rest is forwarded, Z waits.
        let mut buf = data_row[7..].to_vec();
        buf.extend_from_slice(&rfq[..3]);
        let n = s
            .scan(&buf, 1 << 20, wants, |t, b| {
                seen.push((t, b.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(n, data_row.len() - 7);
        assert!(s.at_boundary());
        let n = s
            .scan(rfq, 1 << 20, wants, |t, b| {
                seen.push((t, b.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(n, rfq.len());
        assert_eq!(seen, vec![(b'Z', b"I".to_vec())]);
    }

    #[test]
    fn startup_packets() {
        let mut out = BytesMut::new();
        startup_message(&mut out, &[("user", "app"), ("database", "db")]);
        assert_eq!(
            parse_startup(&out).unwrap(),
            Startup::Session {
                minor: 0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ],
                unsupported_options: vec![]
            }
        );
        assert_eq!(
            parse_startup(b"\0\0\0\x08\x04\xd2\x16\x2f").unwrap(),
            Startup::Ssl
        );
        assert_eq!(
            parse_startup(b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x07\0\0\0\x09").unwrap(),
            Startup::Cancel {
                pid: 7,
                secret: vec![0, 0, 0, 9]
            }
        );
        assert_eq!(
            parse_startup(b"\0\0\0\x08\0\x02\0\0"),
            Err(StartupError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        assert_eq!(
            parse_startup(b"\0\0\0\x0c\0\x03\0\x02user\0"),
            Err(StartupError::Malformed("unterminated value"))
        );
        assert_eq!(startup_len(*b"\0\0\0\x04"), Err(StartupError::BadLength));
        assert_eq!(startup_len(*b"\x7f\0\0\0"), Err(StartupError::BadLength));
    }

    #[test]
    fn error_response_round_trip() {
        let bytes = ProxyError::fatal("08P01", "bad").with_hint("h").to_bytes();
        assert_eq!(bytes[0], b'E');
        let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len());
        assert_eq!(error_fields(&bytes[5..]), ("08P01".into(), "bad".into()));
    }
}
