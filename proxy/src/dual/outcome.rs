//! What a backend answered to one unit: each statement's result (command tag, empty, portal
//! suspended or error) with a digest of its returned rows, and the transaction status before
//! and after. The primary's outcome decides what the secondary does; comparing the two is how
//! divergence is found.

use std::hash::Hasher;

use bytes::BytesMut;

use crate::wire::protocol::{backend as b, error_fields};
use crate::wire::read::{read_message, MessageError};
use crate::wire::tls::Reader;

/// One statement's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultKind {
    Tag(String),
    Empty,
    Suspended,
    Error { code: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementResult {
    pub kind: ResultKind,
    pub rows: u64,
    /// Order-sensitive digest of the returned rows.
    pub digest: u64,
    /// Order-insensitive digest of the returned rows (sum of per-row hashes).
    pub unordered: u64,
    /// Digest of the row description (names, types, formats), 0 when none was sent.
    pub types: u64,
    /// `digest` and `unordered` of every row but the last, kept when the rows are (shadow
    /// reads: a sample run with one row more than the primary's limit compares the rest).
    pub head: Option<(u64, u64)>,
}

impl StatementResult {
    /// Same outcome, rows and rows digest (what a write's divergence check compares; row
    /// descriptions are not, since a client's Describe is not replayed).
    pub fn same_write(&self, other: &StatementResult) -> bool {
        self.kind == other.kind && self.rows == other.rows && self.digest == other.digest
    }

    /// A short text for logs and divergence records.
    pub fn describe(&self) -> String {
        match &self.kind {
            ResultKind::Tag(t) if self.rows > 0 => {
                format!("{t} (returned rows digest {:016x})", self.digest)
            }
            ResultKind::Tag(t) => t.clone(),
            ResultKind::Empty => "empty query".into(),
            ResultKind::Suspended => "portal suspended".into(),
            ResultKind::Error { code, message } => format!("ERROR {code} {message}"),
        }
    }
}

/// A backend's whole answer to one unit.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub results: Vec<StatementResult>,
    pub status_before: u8,
    pub status_after: u8,
    /// A CopyInResponse was seen (the backend waits for COPY data).
    pub copy_in: bool,
    /// The backend's time on the unit: from sending it (or, when it was sent behind others
    /// of the session, from the ReadyForQuery before it) to its ReadyForQuery (set for units
    /// routed to the secondary).
    pub elapsed: std::time::Duration,
    /// When its ReadyForQuery arrived (set for units routed to the secondary).
    pub answered: Option<std::time::Instant>,
    /// Commits the primary had acknowledged when the unit was sent (a mark for
    /// `CommitOrder::acks_settled_to`: every one of them is visible to it).
    pub seen_at_send: u64,
    /// The first returned rows (DataRow bodies), kept for shadow-read mismatch logs.
    pub sample: Vec<bytes::Bytes>,
    /// Commits the primary had acknowledged when it answered (a mark for
    /// `CommitOrder::acks_settled_to`; see `order`).
    pub seen: u64,
}

impl Outcome {
    pub fn error(&self) -> Option<(&str, &str)> {
        self.results.iter().find_map(|r| match &r.kind {
            ResultKind::Error { code, message } => Some((code.as_str(), message.as_str())),
            _ => None,
        })
    }

    pub fn tag(&self, i: usize) -> Option<&str> {
        match self.results.get(i).map(|r| &r.kind) {
            Some(ResultKind::Tag(t)) => Some(t),
            _ => None,
        }
    }
}

/// Builds an [`Outcome`] from backend messages as they pass.
#[derive(Default)]
pub struct Collector {
    outcome: Outcome,
    rows: u64,
    hasher: Option<std::collections::hash_map::DefaultHasher>,
    unordered: u64,
    types: u64,
    keep: bool,
    head: Option<(u64, u64)>,
}

/// Rows kept per outcome when sampling (see [`Collector::keep_rows`]).
const SAMPLE_ROWS: usize = 20;
/// Larger rows are not kept.
const SAMPLE_ROW_BYTES: usize = 2048;

/// First OID of user-defined objects: their OIDs differ between two databases.
const FIRST_NORMAL_OID: u32 = 16384;

/// Digest of a RowDescription without what legitimately differs between two databases
/// (table OIDs, column numbers, OIDs of user-defined types).
pub fn types_digest(body: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let n = body
        .get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let mut pos = 2;
    h.write_i16(n);
    for _ in 0..n.max(0) {
        let Some(end) = body[pos.min(body.len())..].iter().position(|c| *c == 0) else {
            break;
        };
        h.write(&body[pos..pos + end]);
        pos += end + 1;
        let Some(f) = body.get(pos..pos + 18) else {
            break;
        };
        let type_oid = u32::from_be_bytes([f[6], f[7], f[8], f[9]]);
        h.write_u32(if type_oid >= FIRST_NORMAL_OID {
            0
        } else {
            type_oid
        });
        h.write(&f[10..18]); // typlen, typmod, format
        pos += 18;
    }
    h.finish() | 1
}

/// Backend message tags an outcome needs to see whole.
pub fn wanted(tag: u8, with_rows: bool) -> bool {
    matches!(
        tag,
        b::READY_FOR_QUERY | b::ERROR_RESPONSE | b::COMMAND_COMPLETE | b'I' | b's' | b'G'
    ) || (with_rows && matches!(tag, b'D' | b'T'))
}

impl Collector {
    pub fn begin(&mut self, status_before: u8) {
        self.outcome = Outcome {
            status_before,
            ..Outcome::default()
        };
        self.rows = 0;
        self.hasher = None;
        self.unordered = 0;
        self.types = 0;
        self.keep = false;
        self.head = None;
    }

    /// The statement results seen so far in this outcome.
    pub fn results(&self) -> &[StatementResult] {
        &self.outcome.results
    }

    /// Keep the first rows of this outcome (for shadow reads).
    pub fn keep_rows(&mut self, keep: bool) {
        self.keep = keep;
    }

    fn close(&mut self, kind: ResultKind) {
        let digest = self.hasher.take().map(|h| h.finish()).unwrap_or(0);
        self.outcome.results.push(StatementResult {
            kind,
            rows: self.rows,
            digest,
            unordered: self.unordered,
            types: self.types,
            head: self.head.take(),
        });
        self.rows = 0;
        self.unordered = 0;
        self.types = 0;
    }

    /// Feed one whole message. Returns the finished outcome at ReadyForQuery.
    pub fn message(&mut self, tag: u8, body: &[u8]) -> Option<Outcome> {
        match tag {
            b'D' => {
                self.rows += 1;
                if self.keep {
                    let before = self.hasher.as_ref().map(|h| h.finish()).unwrap_or(0);
                    self.head = Some((before, self.unordered));
                }
                self.hasher.get_or_insert_with(Default::default).write(body);
                let mut row = std::collections::hash_map::DefaultHasher::new();
                row.write(body);
                self.unordered = self.unordered.wrapping_add(row.finish());
                if self.keep
                    && self.outcome.sample.len() < SAMPLE_ROWS
                    && body.len() <= SAMPLE_ROW_BYTES
                {
                    self.outcome
                        .sample
                        .push(bytes::Bytes::copy_from_slice(body));
                }
            }
            b'T' => self.types = types_digest(body),
            b::COMMAND_COMPLETE => {
                let end = body.iter().position(|c| *c == 0).unwrap_or(body.len());
                self.close(ResultKind::Tag(
                    String::from_utf8_lossy(&body[..end]).into_owned(),
                ));
            }
            b'I' => self.close(ResultKind::Empty),
            b's' => self.close(ResultKind::Suspended),
            b'G' => self.outcome.copy_in = true,
            b::ERROR_RESPONSE => {
                let (code, message) = error_fields(body);
                self.close(ResultKind::Error { code, message });
            }
            b::READY_FOR_QUERY => {
                self.outcome.status_after = body.first().copied().unwrap_or(b'I');
                return Some(std::mem::take(&mut self.outcome));
            }
            _ => {}
        }
        None
    }
}

/// SQLSTATEs of failures that depend on the moment, not on the record: connection trouble
/// (08), serialization failures and deadlocks (40), insufficient resources (53), a lock not
/// available (55P03), cancels and shutdowns (57), system errors (58).
pub(crate) fn transient(code: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "55P03"
}

/// Errors a read gets from its own session's state rather than from the data: `0A000`
/// (cached plan must not change result type), `25P02` (the transaction already failed),
/// `26000` (no such prepared statement), `34000` (no such cursor), `42P03` (cursor exists),
/// `08P01` (protocol violation).
pub fn session_bound_error(code: &str) -> bool {
    matches!(
        code,
        "0A000" | "25P02" | "26000" | "34000" | "42P03" | "08P01"
    )
}

/// Read a backend's answer to one unit, up to its ReadyForQuery, keeping the first rows when
/// `keep` (shadow reads).
pub async fn read_outcome(
    reader: &mut Reader,
    buf: &mut BytesMut,
    keep: bool,
) -> Result<Outcome, MessageError> {
    let mut c = Collector::default();
    c.begin(b'I');
    c.keep_rows(keep);
    loop {
        let (tag, body) = read_message(reader, buf, 1 << 30).await?;
        if let Some(o) = c.message(tag, &body) {
            return Ok(o);
        }
    }
}
