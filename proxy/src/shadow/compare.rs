//! Comparing a sample's two answers: kinds of mismatch, whether rows match in or out of order,
//! whether a concurrent commit explains a difference, and the normalized statement text results
//! are grouped by.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dual::outcome::{ResultKind, StatementResult};

/// Kinds of mismatch, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One side failed, the other did not.
    Error,
    /// Both failed, with SQLSTATEs of different classes.
    Sqlstate,
    /// Column types or formats differ.
    Types,
    /// Different number of rows.
    RowCount,
    /// Same number of rows, different rows.
    Rows,
    /// Same rows in a different order, for a query with ORDER BY.
    Order,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Error,
        Kind::Sqlstate,
        Kind::Types,
        Kind::RowCount,
        Kind::Rows,
        Kind::Order,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Sqlstate => "sqlstate",
            Kind::Types => "types",
            Kind::RowCount => "row_count",
            Kind::Rows => "rows",
            Kind::Order => "order",
        }
    }
}

/// When the secondary started on a sample (sent it, or finished the one before it on the
/// same connection), and how long it took from then to the answer's end: the server's time
/// on the statement, without the time the sample waited for its turn.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub started: Instant,
    /// `None` when not seen: the sample's answer reached the proxy together with the one
    /// before it, so when the server started on it is not known.
    pub took: Option<Duration>,
}

/// Where the secondary ran a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// In the session's secondary session, outside a transaction.
    Session,
    /// In the session's secondary session, inside the client's transaction (under a savepoint).
    Transaction,
    /// On a separate secondary connection: the session's own could not run it.
    Separate,
    /// On the secondary session shared by the sessions of one login that have no session
    /// state of their own, outside a transaction (see `lane`).
    Shared,
}

/// How a statement's answers matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Same rows (in the same order, where the query has ORDER BY).
    Rows,
    /// Same rows in another order, for a query without ORDER BY (not a difference).
    OtherOrder,
    /// Only the row counts could be compared: the primary stopped at its row limit, the
    /// secondary had more rows than that, and without ORDER BY each side may return other
    /// rows first.
    CountOnly,
}

/// Compare one statement's answers.
///
/// A row-limited read the primary stopped at its limit N (PortalSuspended) ran on the
/// secondary with limit N + 1 (see `unit`). When the secondary completed within N rows, its
/// whole result is known, and with equal data the primary's N rows are exactly that result:
/// they are compared as a multiset (in order with ORDER BY). When the secondary has more than
/// N rows, the first N are compared in order with ORDER BY, and only counted without.
pub fn compare(p: &StatementResult, s: &StatementResult, ordered: bool) -> Result<Match, Kind> {
    match (&p.kind, &s.kind) {
        (ResultKind::Error { code: a, .. }, ResultKind::Error { code: b, .. }) => {
            return if a.get(..2) == b.get(..2) {
                Ok(Match::Rows)
            } else {
                Err(Kind::Sqlstate)
            };
        }
        (ResultKind::Error { .. }, _) | (_, ResultKind::Error { .. }) => return Err(Kind::Error),
        _ => {}
    }
    if p.types != 0 && s.types != 0 && p.types != s.types {
        return Err(Kind::Types);
    }
    let (digest, unordered) = if p.kind == ResultKind::Suspended
        && s.kind == ResultKind::Suspended
        && s.rows == p.rows + 1
    {
        // More rows than the primary's limit on the secondary: its first N.
        if !ordered {
            return Ok(Match::CountOnly);
        }
        match s.head {
            Some(head) => head,
            None => return Ok(Match::CountOnly),
        }
    } else if p.kind == ResultKind::Suspended && s.kind == ResultKind::Suspended && !ordered {
        // Both stopped at the same limit (a sample not run with one row more).
        return if p.rows == s.rows {
            Ok(Match::CountOnly)
        } else {
            Err(Kind::RowCount)
        };
    } else {
        if p.rows != s.rows {
            return Err(Kind::RowCount);
        }
        (s.digest, s.unordered)
    };
    if p.unordered != unordered {
        return Err(Kind::Rows);
    }
    if p.digest != digest {
        return if ordered {
            Err(Kind::Order)
        } else {
            Ok(Match::OtherOrder)
        };
    }
    Ok(Match::Rows)
}

/// Whether a commit may have reached one side and not the other while a sampled read ran,
/// in a table the read names.
///
/// The primary's read saw every commit acknowledged before it was sent (`seen_at_send`), and
/// the sample ran on the secondary once those were applied (the watermark). Commits
/// acknowledged since, and units still in flight, are the doubt: one may have committed before
/// the primary's read and not yet reached the secondary, or reached the secondary though the
/// primary's read did not see it. `touched` is what they wrote (`CommitOrder::touched_since`).
/// When none of those tables is named in the read's text, the two sides read the same data.
pub fn concurrent(touched: &crate::dual::order::Touched, text: &str) -> bool {
    use crate::dual::order::Touched;
    match touched {
        Touched::Nothing => false,
        Touched::Unknown => true,
        Touched::Tables(tables) => {
            let words = words(text);
            tables.iter().any(|t| {
                let name = t.rsplit('.').next().unwrap_or(t).to_lowercase();
                words.contains(&name)
            })
        }
    }
}

/// The identifiers of a statement's text, lower-cased (quoted ones without their quotes).
fn words(text: &str) -> std::collections::HashSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether the statement text asks for an order (an `ORDER BY` outside strings and comments).
pub fn has_order_by(text: &str) -> bool {
    ordered(&normalize(text))
}

/// [`has_order_by`] of a [`normalize`]d text.
pub(crate) fn ordered(normalized: &str) -> bool {
    let mut words = normalized.split_whitespace();
    let mut prev = words.next();
    for w in words {
        if prev.is_some_and(|p| p.eq_ignore_ascii_case("order")) && w.eq_ignore_ascii_case("by") {
            return true;
        }
        prev = Some(w);
    }
    false
}

/// The statement with literals replaced by `?` and whitespace collapsed, for grouping.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(256));
    let mut chars = text.chars().peekable();
    let mut last_space = true;
    let mut prev_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // A string literal ('' inside is a quote).
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                        }
                        Some('\'') | None => break,
                        Some(_) => {}
                    }
                }
                out.push('?');
                last_space = false;
                prev_word = false;
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            c if c.is_ascii_digit() && !prev_word => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == 'E')
                {
                    chars.next();
                }
                out.push('?');
                last_space = false;
            }
            c if c.is_whitespace() => {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
                prev_word = false;
            }
            c => {
                out.push(c);
                last_space = false;
                prev_word = c.is_alphanumeric() || c == '_' || c == '$';
            }
        }
        if out.len() >= 300 {
            out.push('…');
            break;
        }
    }
    out.trim().to_string()
}
