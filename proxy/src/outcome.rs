//! What a backend answered to one unit: each statement's result (command tag, empty, portal
//! suspended or error) with a digest of its returned rows, and the transaction status before
//! and after. The primary's outcome decides what the secondary does; comparing the two is how
//! divergence is found.

use std::hash::Hasher;

use crate::protocol::{backend as b, error_fields};

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
    pub digest: u64,
}

impl StatementResult {
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
}

/// Backend message tags an outcome needs to see whole.
pub fn wanted(tag: u8, with_rows: bool) -> bool {
    matches!(
        tag,
        b::READY_FOR_QUERY | b::ERROR_RESPONSE | b::COMMAND_COMPLETE | b'I' | b's' | b'G'
    ) || (with_rows && tag == b'D')
}

impl Collector {
    pub fn begin(&mut self, status_before: u8) {
        self.outcome = Outcome {
            status_before,
            ..Outcome::default()
        };
        self.rows = 0;
        self.hasher = None;
    }

    fn close(&mut self, kind: ResultKind) {
        let digest = self.hasher.take().map(|h| h.finish()).unwrap_or(0);
        self.outcome.results.push(StatementResult {
            kind,
            rows: self.rows,
            digest,
        });
        self.rows = 0;
    }

    /// Feed one whole message. Returns the finished outcome at ReadyForQuery.
    pub fn message(&mut self, tag: u8, body: &[u8]) -> Option<Outcome> {
        match tag {
            b'D' => {
                self.rows += 1;
                self.hasher.get_or_insert_with(Default::default).write(body);
            }
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
