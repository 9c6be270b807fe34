//! Statement classification for dual-write routing.
//!
//! In dual-write mode every client statement goes to the primary, and every statement that can
//! change data or session state must also reach the secondary. [`classify`] decides which, from
//! the SQL text alone, in one pass of a small lexer that knows Postgres's quoting rules (nested
//! block comments, `E'...'` escapes, dollar quoting, quoted identifiers). It runs for every simple
//! Query and every Parse, so it avoids regexes and per-token allocation: keywords are compared
//! case-insensitively or lower-cased into a stack buffer.
//!
//! The rule throughout is "when unsure, send it": a wrong guess may cost the secondary some load,
//! never a missed write. A read is `PrimaryOnly` only when every function it calls is a known
//! side-effect-free built-in and nothing in it locks rows or stores a result.

use std::collections::HashSet;

mod analyzer;
mod functions;
mod keywords;
mod lexer;

use analyzer::*;
use functions::*;
use keywords::*;
use lexer::*;

/// Where a statement (or a multi-statement query string) must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A pure read: the primary alone answers it.
    PrimaryOnly,
    /// It may change data or session state: the secondary must run it too.
    Both,
}

/// Transaction control found in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    /// No transaction control.
    None,
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    /// `SAVEPOINT s`.
    Savepoint,
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] s`.
    RollbackToSavepoint,
    /// `RELEASE [SAVEPOINT] s`.
    ReleaseSavepoint,
    /// `PREPARE TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK PREPARED`.
    Prepared,
    /// Several statements with transaction control, or transaction control mixed with other
    /// statements.
    Mixed,
}

/// What [`classify`] found in a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Where the text must go.
    pub route: Route,
    /// Number of non-empty statements in the text.
    pub statements: usize,
    /// The single statement's transaction-control kind when the text is exactly one such
    /// statement; `Mixed` when transaction control appears together with other statements;
    /// `None` when there is none.
    pub tx: TxControl,
    /// The text contains `COPY ... FROM STDIN` (the client will send CopyData next).
    pub copy_from_stdin: bool,
    /// Some statement changes session state: `SET` (including `SET LOCAL`), `RESET`, `DISCARD`,
    /// `PREPARE`, `DEALLOCATE`, `LISTEN`, `UNLISTEN`, `LOAD`, `DECLARE ... WITH HOLD`,
    /// `CREATE TEMP ...`, `SELECT ... INTO TEMP ...`.
    pub session_state: bool,
    /// A shadow sample can run it on its own and compare its answer: false when a statement is
    /// a COPY (its data is streamed, not digested) or works on a cursor (DECLARE, FETCH, MOVE,
    /// CLOSE: a cursor lives only in the primary's session).
    pub shadowable: bool,
    /// Tables written, normalized: unquoted identifiers lower-cased, quoted ones verbatim,
    /// `schema.table` when qualified. Deduplicated, in order of appearance.
    pub tables: Vec<String>,
    /// Known non-deterministic functions called (lower-case, deduplicated, in order of
    /// appearance), whether the statement reads or writes.
    pub nondeterministic: Vec<&'static str>,
    /// Some statement may change data or schema, beyond the session and its transaction: not
    /// so for transaction control, `SET`/`RESET`/`DISCARD`/`PREPARE`/`DEALLOCATE`/`LISTEN`/
    /// `UNLISTEN`/`LOAD`, `LOCK`, `SELECT ... FOR UPDATE` and reads. When unsure, true. A
    /// transaction with no such statement has nothing to apply or journal on the secondary.
    pub effect: bool,
    /// Another statement may be appended to the text and run in the same implicit transaction:
    /// none of it must run outside a transaction block (VACUUM, `CONCURRENTLY`, databases,
    /// tablespaces, `ALTER SYSTEM`, subscriptions, CALL and DO, which may commit), and the text
    /// ends outside any string or comment.
    pub appendable: bool,
}

impl Classification {
    /// True when the text must also reach the secondary.
    pub fn is_write(&self) -> bool {
        self.route == Route::Both
    }
}

/// Classify a simple-Query string or a Parse statement text.
pub fn classify(sql: &str) -> Classification {
    let lexed = lex(sql);
    let toks = &lexed.toks;
    let mut an = Analyzer {
        sql,
        toks,
        tables: Vec::new(),
        seen_tables: HashSet::new(),
        session_state: false,
        copy_from_stdin: false,
        unshadowable: false,
        nesting: 0,
        effect: false,
        writes: 0,
    };

    let mut route = Route::PrimaryOnly;
    let mut statements = 0usize;
    let mut single_tx = TxControl::None;
    let mut any_tx = false;
    let mut depth = 0usize;
    let mut lo = 0usize;
    let mut inner_semicolon = false;
    for i in 0..=toks.len() {
        let at_end = i == toks.len();
        if !at_end {
            match toks[i].k {
                K::LParen => depth += 1,
                K::RParen => depth = depth.saturating_sub(1),
                K::Semi if depth > 0 => inner_semicolon = true,
                _ => {}
            }
        }
        if at_end || (toks[i].k == K::Semi && depth == 0) {
            if i > lo {
                statements += 1;
                let (r, tx) = an.statement(lo, i);
                // A `;` that did not split (inside parentheses) means the text is not what it
                // seems; send it.
                if r == Route::Both || inner_semicolon {
                    route = Route::Both;
                }
                if inner_semicolon {
                    an.effect = true;
                }
                if tx != TxControl::None {
                    any_tx = true;
                }
                single_tx = tx;
            }
            lo = i + 1;
            inner_semicolon = false;
        }
    }

    let tx = match statements {
        0 => TxControl::None,
        1 => single_tx,
        _ if any_tx => TxControl::Mixed,
        _ => TxControl::None,
    };

    if let Some(pos) = lexed.unterminated {
        if route == Route::PrimaryOnly && mentions_write_keyword(&sql[pos..]) {
            route = Route::Both;
            an.effect = true;
        }
    }

    Classification {
        route,
        statements,
        tx,
        copy_from_stdin: an.copy_from_stdin,
        session_state: an.session_state,
        shadowable: !an.unshadowable,
        tables: an.tables,
        nondeterministic: nondeterministic_calls(sql, toks),
        effect: an.effect,
        appendable: tx == TxControl::None
            && lexed.unterminated.is_none()
            && runs_in_a_block(sql, toks),
    }
}

/// No statement of the text must run outside a transaction block (see
/// `Classification::appendable`).
fn runs_in_a_block(sql: &str, toks: &[Tok]) -> bool {
    let word = |i: usize| -> String {
        toks.get(i)
            .filter(|t| t.k == K::Word)
            .map(|t| sql[t.s..t.e].to_ascii_lowercase())
            .unwrap_or_default()
    };
    let mut start = true;
    for (i, t) in toks.iter().enumerate() {
        if t.k == K::Semi {
            start = true;
            continue;
        }
        if t.k == K::Word && word(i) == "concurrently" {
            return false;
        }
        if !start {
            continue;
        }
        start = false;
        let (first, second) = (word(i), word(i + 1));
        let outside = match first.as_str() {
            "vacuum" | "call" | "do" | "reindex" | "cluster" | "copy" | "checkpoint" => true,
            "create" | "drop" | "alter" => matches!(
                second.as_str(),
                "database" | "tablespace" | "subscription" | "system"
            ),
            _ => false,
        };
        if outside {
            return false;
        }
    }
    true
}

/// Lower-case an ASCII keyword into `buf`; `None` when too long to be any keyword we know.
fn lower<'b>(word: &str, buf: &'b mut [u8; 48]) -> Option<&'b str> {
    let bytes = word.as_bytes();
    if bytes.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..bytes.len()];
    for (o, c) in out.iter_mut().zip(bytes) {
        *o = c.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

fn in_list(list: &[&str], word: &str) -> bool {
    list.binary_search(&word).is_ok()
}

/// Crude check of an unterminated tail: does any word in it look like a write?
fn mentions_write_keyword(tail: &str) -> bool {
    const WRITES: &[&str] = &[
        "alter", "call", "copy", "create", "delete", "do", "drop", "grant", "insert", "lock",
        "merge", "reset", "revoke", "set", "truncate", "update",
    ];
    tail.split(|c: char| !c.is_ascii_alphabetic()).any(|w| {
        let mut buf = [0u8; 48];
        lower(w, &mut buf).is_some_and(|w| in_list(WRITES, w))
    })
}

/// Non-deterministic functions called anywhere in the text, in order of first appearance.
fn nondeterministic_calls(sql: &str, toks: &[Tok]) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.k != K::Word {
            continue;
        }
        let mut buf = [0u8; 48];
        let Some(w) = lower(&sql[t.s..t.e], &mut buf) else {
            continue;
        };
        let called = toks.get(i + 1).is_some_and(|n| n.k == K::LParen);
        let bare = in_list(BARE_NONDETERMINISTIC, w);
        if !called && !bare {
            continue;
        }
        // `other_schema.now()` is somebody else's function; `pg_catalog.now()` is the built-in.
        if i >= 2 && toks[i - 1].k == K::Dot {
            let q = toks[i - 2];
            if q.k != K::Word || !sql[q.s..q.e].eq_ignore_ascii_case("pg_catalog") {
                continue;
            }
        }
        if let Ok(idx) = NONDETERMINISTIC.binary_search(&w) {
            let name = NONDETERMINISTIC[idx];
            if !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

#[cfg(test)]
mod cases;
#[cfg(test)]
mod tests;
