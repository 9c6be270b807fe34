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

// ---------------------------------------------------------------------------------------------
// Lexer

/// Token kinds. Strings, numbers and parameters are only skipped over; words and punctuation
/// drive classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    /// Unquoted identifier or keyword.
    Word,
    /// `"quoted identifier"`.
    QIdent,
    /// Any string constant, including dollar-quoted bodies.
    Str,
    Num,
    /// `$1`.
    Param,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Semi,
    Dot,
    /// `::`.
    Cast,
    /// Any other operator character.
    Op,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    k: K,
    /// Byte range in the text.
    s: usize,
    e: usize,
    /// For `(` the index of its `)` and for `)` the index of its `(`; `NONE` when unmatched.
    mate: usize,
}

const NONE: usize = usize::MAX;

struct Lexed {
    toks: Vec<Tok>,
    /// Start of an unterminated string, quoted identifier, dollar quote or comment.
    unterminated: Option<usize>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Scan a quoted run closed by `quote` (doubling escapes it) from `from`, the byte after the
/// opening quote; with `backslash`, `\` escapes the next byte. Returns the end (after the closing
/// quote) and whether it was closed.
fn scan_quoted(b: &[u8], from: usize, quote: u8, backslash: bool) -> (usize, bool) {
    let mut j = from;
    while j < b.len() {
        let c = b[j];
        if backslash && c == b'\\' {
            j += 2;
        } else if c == quote {
            if b.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return (j + 1, true);
            }
        } else {
            j += 1;
        }
    }
    (b.len(), false)
}

/// The closing `$` of a dollar-quote opening tag starting at `i` (`$$` or `$tag$`).
fn dollar_tag_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    match b.get(j) {
        Some(b'$') => return Some(j),
        Some(&c) if is_ident_start(c) => {}
        _ => return None,
    }
    while j < b.len() && (is_ident_start(b[j]) || b[j].is_ascii_digit()) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j)
}

fn lex(sql: &str) -> Lexed {
    let b = sql.as_bytes();
    let n = b.len();
    let mut toks: Vec<Tok> = Vec::with_capacity(n / 5 + 4);
    let mut open: Vec<usize> = Vec::new();
    let mut unterminated = None;
    let mut i = 0;

    macro_rules! push {
        ($k:expr, $s:expr, $e:expr) => {
            toks.push(Tok {
                k: $k,
                s: $s,
                e: $e,
                mate: NONE,
            })
        };
    }

    while i < n {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => i += 1,
            b'-' if next == Some(b'-') => {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                let start = i;
                let mut depth = 1usize;
                i += 2;
                loop {
                    if i >= n {
                        unterminated = Some(start);
                        break;
                    }
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                let (e, closed) = scan_quoted(b, i + 1, b'\'', false);
                if !closed {
                    unterminated = Some(i);
                }
                push!(K::Str, i, e);
                i = e;
            }
            b'"' => {
                let (e, closed) = scan_quoted(b, i + 1, b'"', false);
                if !closed {
                    unterminated = Some(i);
                }
                push!(K::QIdent, i, e);
                i = e;
            }
            b'$' => {
                if next.is_some_and(|d| d.is_ascii_digit()) {
                    let mut j = i + 1;
                    while j < n && b[j].is_ascii_digit() {
                        j += 1;
                    }
                    push!(K::Param, i, j);
                    i = j;
                } else if let Some(tag_end) = dollar_tag_end(b, i) {
                    let tag = &sql[i..=tag_end];
                    let body = tag_end + 1;
                    let e = match sql[body..].find(tag) {
                        Some(p) => body + p + tag.len(),
                        None => {
                            unterminated = Some(i);
                            n
                        }
                    };
                    push!(K::Str, i, e);
                    i = e;
                } else {
                    push!(K::Op, i, i + 1);
                    i += 1;
                }
            }
            b'0'..=b'9' => {
                let mut j = i + 1;
                while j < n && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.') {
                    j += 1;
                }
                push!(K::Num, i, j);
                i = j;
            }
            b'.' if next.is_some_and(|d| d.is_ascii_digit()) => {
                let mut j = i + 1;
                while j < n && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                push!(K::Num, i, j);
                i = j;
            }
            b'(' => {
                open.push(toks.len());
                push!(K::LParen, i, i + 1);
                i += 1;
            }
            b')' => {
                let idx = toks.len();
                push!(K::RParen, i, i + 1);
                if let Some(o) = open.pop() {
                    toks[o].mate = idx;
                    toks[idx].mate = o;
                }
                i += 1;
            }
            b'[' => {
                push!(K::LBrack, i, i + 1);
                i += 1;
            }
            b']' => {
                push!(K::RBrack, i, i + 1);
                i += 1;
            }
            b',' => {
                push!(K::Comma, i, i + 1);
                i += 1;
            }
            b';' => {
                push!(K::Semi, i, i + 1);
                i += 1;
            }
            b'.' => {
                push!(K::Dot, i, i + 1);
                i += 1;
            }
            b':' if next == Some(b':') => {
                push!(K::Cast, i, i + 2);
                i += 2;
            }
            _ if is_ident_start(c) => {
                let lower = c | 0x20;
                if lower == b'e' && next == Some(b'\'') {
                    let (e, closed) = scan_quoted(b, i + 2, b'\'', true);
                    if !closed {
                        unterminated = Some(i);
                    }
                    push!(K::Str, i, e.min(n));
                    i = e.min(n);
                } else if matches!(lower, b'b' | b'x' | b'n') && next == Some(b'\'') {
                    let (e, closed) = scan_quoted(b, i + 2, b'\'', false);
                    if !closed {
                        unterminated = Some(i);
                    }
                    push!(K::Str, i, e);
                    i = e;
                } else if lower == b'u'
                    && next == Some(b'&')
                    && matches!(b.get(i + 2), Some(b'\'') | Some(b'"'))
                {
                    let quote = b[i + 2];
                    let (e, closed) = scan_quoted(b, i + 3, quote, false);
                    if !closed {
                        unterminated = Some(i);
                    }
                    push!(if quote == b'"' { K::QIdent } else { K::Str }, i, e);
                    i = e;
                } else {
                    let mut j = i + 1;
                    while j < n && is_ident_cont(b[j]) {
                        j += 1;
                    }
                    push!(K::Word, i, j);
                    i = j;
                }
            }
            _ => {
                // Operator characters and anything else: one byte each (always ASCII here,
                // since every byte >= 0x80 starts an identifier).
                push!(K::Op, i, i + 1);
                i += 1;
            }
        }
    }
    Lexed { toks, unterminated }
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

// ---------------------------------------------------------------------------------------------
// Statements

struct Analyzer<'a> {
    sql: &'a str,
    toks: &'a [Tok],
    tables: Vec<String>,
    seen_tables: HashSet<String>,
    session_state: bool,
    copy_from_stdin: bool,
    /// A statement is a COPY or works on a cursor (see `Classification::shadowable`).
    unshadowable: bool,
    /// Statements being classified inside one another (EXPLAIN ANALYZE, COPY, DECLARE).
    nesting: u32,
    /// Some statement may change data or schema (see `Classification::effect`).
    effect: bool,
    /// Data-changing parts seen in query-shaped statements (DML, SELECT INTO, unsafe calls).
    writes: usize,
}

/// Deepest statement nesting classified; deeper text is sent to both.
const MAX_NESTING: u32 = 16;

impl<'a> Analyzer<'a> {
    fn text(&self, i: usize) -> &'a str {
        let t = self.toks[i];
        &self.sql[t.s..t.e]
    }

    fn kind(&self, i: usize, hi: usize) -> Option<K> {
        (i < hi).then(|| self.toks[i].k)
    }

    /// Is token `i` (below `hi`) the unquoted keyword `kw` (lower-case)?
    fn is_kw(&self, i: usize, hi: usize, kw: &str) -> bool {
        i < hi && self.toks[i].k == K::Word && self.text(i).eq_ignore_ascii_case(kw)
    }

    /// End of the parenthesised group opened at `i`, clamped to `hi`.
    fn close_of(&self, i: usize, hi: usize) -> usize {
        let m = self.toks[i].mate;
        if m == NONE || m > hi {
            hi
        } else {
            m
        }
    }

    /// Classify one statement `lo..hi` (no top-level `;`).
    fn statement(&mut self, lo: usize, hi: usize) -> (Route, TxControl) {
        // `EXPLAIN ANALYZE EXPLAIN ANALYZE ...` and `DECLARE ... FOR DECLARE ...` nest; bound
        // the recursion instead of trusting the text.
        if self.nesting >= MAX_NESTING {
            self.effect = true;
            return (Route::Both, TxControl::None);
        }
        self.nesting += 1;
        let out = self.statement_inner(lo, hi);
        self.nesting -= 1;
        out
    }

    fn statement_inner(&mut self, lo: usize, hi: usize) -> (Route, TxControl) {
        use Route::{Both, PrimaryOnly};
        let mut p = lo;
        while p < hi && self.toks[p].k == K::LParen {
            p += 1;
        }
        if p >= hi || self.toks[p].k != K::Word {
            self.effect = true;
            return (Both, TxControl::None);
        }
        let mut buf = [0u8; 48];
        let kw = lower(self.text(p), &mut buf).unwrap_or("");
        let next = p + 1;
        let tx = match kw {
            "begin" => TxControl::Begin,
            "start" if self.is_kw(next, hi, "transaction") => TxControl::Begin,
            "commit" if self.is_kw(next, hi, "prepared") => TxControl::Prepared,
            "commit" | "end" => TxControl::Commit,
            "abort" => TxControl::Rollback,
            "rollback" => {
                let mut q = next;
                if self.is_kw(q, hi, "prepared") {
                    TxControl::Prepared
                } else {
                    if self.is_kw(q, hi, "work") || self.is_kw(q, hi, "transaction") {
                        q += 1;
                    }
                    if self.is_kw(q, hi, "to") {
                        TxControl::RollbackToSavepoint
                    } else {
                        TxControl::Rollback
                    }
                }
            }
            "savepoint" => TxControl::Savepoint,
            "release" => TxControl::ReleaseSavepoint,
            "prepare" if self.is_kw(next, hi, "transaction") => TxControl::Prepared,
            _ => TxControl::None,
        };
        if tx != TxControl::None {
            return (Both, tx);
        }

        let writes_before = self.writes;
        let route = match kw {
            "select" | "values" | "table" | "with" | "insert" | "update" | "delete" | "merge" => {
                self.query(p, hi)
            }
            "show" | "fetch" | "move" | "close" => {
                self.unshadowable |= kw != "show";
                if self.toks[p..hi].iter().any(|t| t.k == K::Semi) {
                    Both
                } else {
                    PrimaryOnly
                }
            }
            "explain" => self.explain(next, hi),
            "truncate" => {
                self.truncate(next, hi);
                Both
            }
            "copy" => {
                self.unshadowable = true;
                self.copy(next, hi)
            }
            "declare" => {
                self.unshadowable = true;
                self.declare(next, hi)
            }
            "set" | "reset" | "discard" | "prepare" | "deallocate" | "listen" | "unlisten"
            | "load" => {
                self.session_state = true;
                Both
            }
            "create" => {
                let mut q = next;
                while q < hi && self.toks[q].k == K::Word {
                    let mut b2 = [0u8; 48];
                    match lower(self.text(q), &mut b2).unwrap_or("") {
                        "temp" | "temporary" => {
                            self.session_state = true;
                            break;
                        }
                        "or" | "replace" | "global" | "local" | "unlogged" => q += 1,
                        _ => break,
                    }
                }
                Both
            }
            // DDL, maintenance, EXECUTE, CALL, DO, LOCK, NOTIFY, CHECKPOINT and anything unknown.
            _ => Both,
        };
        self.effect |= match kw {
            "select" | "values" | "table" | "with" | "insert" | "update" | "delete" | "merge" => {
                self.writes > writes_before
            }
            // The statement inside decides (classified on its own above).
            "explain" | "declare" => false,
            "set" | "reset" | "discard" | "prepare" | "deallocate" | "listen" | "unlisten"
            | "load" | "lock" => false,
            _ => route == Both,
        };
        (route, TxControl::None)
    }

    /// `EXPLAIN [ANALYZE] [VERBOSE] stmt` or `EXPLAIN (option [value], ...) stmt`, from just
    /// after `EXPLAIN`. Only an analyzing EXPLAIN executes its statement.
    fn explain(&mut self, mut p: usize, hi: usize) -> Route {
        let mut analyze = false;
        if self.kind(p, hi) == Some(K::LParen) {
            let close = self.close_of(p, hi);
            let mut q = p + 1;
            while q < close {
                if self.is_kw(q, close, "analyze") || self.is_kw(q, close, "analyse") {
                    analyze = match self.kind(q + 1, close) {
                        Some(K::Word) | Some(K::Num) | Some(K::Str) => {
                            let v = self.text(q + 1).trim_matches('\'');
                            !["false", "off", "0", "no"]
                                .iter()
                                .any(|f| v.eq_ignore_ascii_case(f))
                        }
                        _ => true,
                    };
                }
                q += 1;
            }
            p = close + 1;
        } else {
            loop {
                if self.is_kw(p, hi, "analyze") || self.is_kw(p, hi, "analyse") {
                    analyze = true;
                    p += 1;
                } else if self.is_kw(p, hi, "verbose") {
                    p += 1;
                } else {
                    break;
                }
            }
        }
        if !analyze {
            return Route::PrimaryOnly;
        }
        if p >= hi {
            return Route::Both;
        }
        self.statement(p, hi).0
    }

    /// `TRUNCATE [TABLE] [ONLY] name [*] [, ...]`, from after `TRUNCATE`: collect the tables.
    fn truncate(&mut self, mut p: usize, hi: usize) {
        if self.is_kw(p, hi, "table") {
            p += 1;
        }
        loop {
            if self.is_kw(p, hi, "only")
                && matches!(self.kind(p + 1, hi), Some(K::Word | K::QIdent))
            {
                p += 1;
            }
            let Some((name, after)) = self.qualified_name(p, hi) else {
                return;
            };
            self.add_table(name);
            p = after;
            if self.kind(p, hi) == Some(K::Op) && self.text(p) == "*" {
                p += 1;
            }
            if self.kind(p, hi) != Some(K::Comma) {
                return;
            }
            p += 1;
        }
    }

    /// `COPY table [(cols)] FROM|TO ...` or `COPY (query) TO ...`, from just after `COPY`.
    fn copy(&mut self, mut p: usize, hi: usize) -> Route {
        if self.kind(p, hi) == Some(K::LParen) {
            let close = self.close_of(p, hi);
            if self.is_kw(close + 1, hi, "to") && p + 1 < close {
                return self.query_statement(p + 1, close);
            }
            return Route::Both;
        }
        if self.is_kw(p, hi, "binary") && matches!(self.kind(p + 1, hi), Some(K::Word | K::QIdent))
        {
            p += 1;
        }
        let Some((name, after)) = self.qualified_name(p, hi) else {
            return Route::Both;
        };
        p = after;
        if self.kind(p, hi) == Some(K::LParen) {
            p = self.close_of(p, hi) + 1;
        }
        if self.is_kw(p, hi, "to") {
            return Route::PrimaryOnly;
        }
        if self.is_kw(p, hi, "from") {
            self.add_table(name);
            if self.is_kw(p + 1, hi, "stdin") {
                self.copy_from_stdin = true;
            }
        }
        Route::Both
    }

    /// The query inside `COPY (...)` or after `DECLARE ... FOR`: a read or a write.
    fn query_statement(&mut self, lo: usize, hi: usize) -> Route {
        let (route, tx) = self.statement(lo, hi);
        if tx == TxControl::None {
            route
        } else {
            Route::Both
        }
    }

    /// `DECLARE name [options] CURSOR [WITH | WITHOUT HOLD] FOR query`, from after `DECLARE`.
    fn declare(&mut self, p: usize, hi: usize) -> Route {
        let mut hold = false;
        let mut route = Route::Both;
        let mut q = p;
        while q < hi {
            if self.is_kw(q, hi, "with") && self.is_kw(q + 1, hi, "hold") {
                hold = true;
            } else if self.is_kw(q, hi, "for") {
                route = if q + 1 < hi {
                    self.query_statement(q + 1, hi)
                } else {
                    Route::Both
                };
                break;
            }
            q += 1;
        }
        if hold {
            self.session_state = true;
            return Route::Both;
        }
        route
    }

    /// A query-shaped statement (SELECT, VALUES, TABLE, WITH, or INSERT/UPDATE/DELETE/MERGE,
    /// which may carry CTEs and subqueries of their own). Collects written tables on the way.
    fn query(&mut self, lo: usize, hi: usize) -> Route {
        let mut route = Route::PrimaryOnly;
        let mut i = lo;
        while i < hi {
            let t = self.toks[i];
            match t.k {
                K::Semi => {
                    route = Route::Both;
                    self.writes += 1;
                }
                K::Word => {
                    let mut buf = [0u8; 48];
                    let w = lower(self.text(i), &mut buf).unwrap_or("");
                    let statement_position =
                        i == lo || matches!(self.toks[i - 1].k, K::LParen | K::RParen);
                    match w {
                        "insert" | "update" | "delete" | "merge" if statement_position => {
                            route = Route::Both;
                            self.writes += 1;
                            i = self.dml_target(w == "update", w == "delete", i + 1, hi);
                            continue;
                        }
                        "for" if self.locking_clause(i + 1, hi) => route = Route::Both,
                        "into" => {
                            // SELECT ... INTO [TEMP | UNLOGGED] [TABLE] name
                            route = Route::Both;
                            self.writes += 1;
                            i = self.select_into_target(i + 1, hi);
                            continue;
                        }
                        _ => {}
                    }
                    if self.kind(i + 1, hi) == Some(K::LParen) && self.is_unsafe_call(i, lo, hi) {
                        route = Route::Both;
                        self.writes += 1;
                    }
                }
                K::QIdent
                    if self.kind(i + 1, hi) == Some(K::LParen)
                        && self.is_unsafe_call(i, lo, hi) =>
                {
                    route = Route::Both;
                    self.writes += 1;
                }
                _ => {}
            }
            i += 1;
        }
        route
    }

    /// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE`, from after `FOR`.
    fn locking_clause(&self, p: usize, hi: usize) -> bool {
        self.is_kw(p, hi, "update")
            || self.is_kw(p, hi, "share")
            || (self.is_kw(p, hi, "no")
                && self.is_kw(p + 1, hi, "key")
                && self.is_kw(p + 2, hi, "update"))
            || (self.is_kw(p, hi, "key") && self.is_kw(p + 1, hi, "share"))
    }

    /// Target of INSERT INTO / UPDATE [ONLY] / DELETE FROM [ONLY] / MERGE INTO [ONLY], from
    /// after the verb. Returns where scanning continues.
    fn dml_target(&mut self, update: bool, delete: bool, mut p: usize, hi: usize) -> usize {
        if !update {
            let want = if delete { "from" } else { "into" };
            if !self.is_kw(p, hi, want) {
                return p;
            }
            p += 1;
        }
        if self.is_kw(p, hi, "only") && matches!(self.kind(p + 1, hi), Some(K::Word | K::QIdent)) {
            p += 1;
        }
        match self.qualified_name(p, hi) {
            Some((name, after)) => {
                self.add_table(name);
                after
            }
            None => p,
        }
    }

    fn select_into_target(&mut self, mut p: usize, hi: usize) -> usize {
        loop {
            if self.is_kw(p, hi, "temp") || self.is_kw(p, hi, "temporary") {
                self.session_state = true;
                p += 1;
            } else if self.is_kw(p, hi, "unlogged")
                || self.is_kw(p, hi, "table")
                || self.is_kw(p, hi, "local")
                || self.is_kw(p, hi, "global")
            {
                p += 1;
            } else {
                break;
            }
        }
        match self.qualified_name(p, hi) {
            Some((name, after)) => {
                self.add_table(name);
                after
            }
            None => p,
        }
    }

    /// `name` or `schema.name` (any number of parts) at `p`, normalized.
    fn qualified_name(&self, mut p: usize, hi: usize) -> Option<(String, usize)> {
        let mut name = String::new();
        loop {
            match self.kind(p, hi) {
                Some(K::Word) => name.push_str(&self.text(p).to_ascii_lowercase()),
                Some(K::QIdent) => {
                    let raw = self.text(p);
                    let start = if raw.starts_with('"') { 1 } else { 3 }; // U&"..."
                    let inner = raw.get(start..raw.len().saturating_sub(1)).unwrap_or("");
                    name.push_str(&inner.replace("\"\"", "\""));
                }
                _ => return None,
            }
            p += 1;
            if self.kind(p, hi) == Some(K::Dot)
                && matches!(self.kind(p + 1, hi), Some(K::Word | K::QIdent))
            {
                name.push('.');
                p += 1;
            } else {
                return Some((name, p));
            }
        }
    }

    fn add_table(&mut self, name: String) {
        if self.seen_tables.insert(name.clone()) {
            self.tables.push(name);
        }
    }

    /// Token `i` (a word or quoted identifier followed by `(`): is it a call of a function that
    /// is not known to be side-effect free?
    fn is_unsafe_call(&self, i: usize, lo: usize, hi: usize) -> bool {
        let is_name = |k: K| matches!(k, K::Word | K::QIdent);
        // Walk back over `schema.` qualifiers.
        let mut start = i;
        while start >= lo + 2 && self.toks[start - 1].k == K::Dot && is_name(self.toks[start - 2].k)
        {
            start -= 2;
        }
        let qualified = start != i;
        let tok = self.toks[i];
        let mut buf = [0u8; 48];
        let lowered = if tok.k == K::Word {
            lower(self.text(i), &mut buf)
        } else {
            None
        };

        if !qualified {
            if let Some(w) = lowered {
                if in_list(NOT_CALLS, w) || in_list(TYPE_NAMES, w) {
                    return false;
                }
            }
        }

        // What stands before the name tells aliases, casts and CTE names from calls.
        if start > lo {
            let prev = start - 1;
            let before_prev_is_item = start >= lo + 2
                && matches!(self.toks[start - 2].k, K::Word | K::QIdent | K::RParen);
            match self.toks[prev].k {
                // `x::numeric(10,2)`
                K::Cast => return false,
                K::Word => {
                    let mut pb = [0u8; 48];
                    let pw = lower(self.text(prev), &mut pb).unwrap_or("");
                    // `AS t(a, b)`, `CAST(x AS varchar(3))`, `WITH t(a) AS (...)`,
                    // `WITH ORDINALITY x(a, n)`
                    if matches!(pw, "as" | "with" | "recursive" | "ordinality") {
                        return false;
                    }
                    // `FROM tbl t(a, b)`: an alias after a table name.
                    if !in_list(KEYWORDS, pw) && before_prev_is_item {
                        return false;
                    }
                }
                K::QIdent if before_prev_is_item => return false,
                // `FROM f(x) t(a)` or `(VALUES ...) v(a)`, but not `DISTINCT ON (a) f(b)`.
                K::RParen => {
                    let open = self.toks[prev].mate;
                    let distinct_on = open != NONE && open > lo && self.is_kw(open - 1, hi, "on");
                    if !distinct_on {
                        return false;
                    }
                }
                _ => {}
            }
        }

        // `, name(a, b) AS (SELECT ...)` in a WITH list.
        let close = self.close_of(i + 1, hi);
        if self.is_kw(close + 1, hi, "as") {
            let mut q = close + 2;
            if self.is_kw(q, hi, "not") {
                q += 1;
            }
            if self.is_kw(q, hi, "materialized") {
                q += 1;
            }
            if self.kind(q, hi) == Some(K::LParen) {
                let starts_query = self.kind(q + 1, hi) == Some(K::LParen)
                    || [
                        "select", "values", "with", "table", "insert", "update", "delete", "merge",
                    ]
                    .iter()
                    .any(|kw| self.is_kw(q + 1, hi, kw));
                if starts_query {
                    return false;
                }
            }
        }

        if qualified {
            let schema = self.toks[i - 2];
            if !(schema.k == K::Word && self.text(i - 2).eq_ignore_ascii_case("pg_catalog")) {
                return true;
            }
        }
        match tok.k {
            K::Word => !lowered.is_some_and(|w| in_list(ALLOWED_FUNCTIONS, w)),
            _ => {
                let raw = self.text(i);
                let inner = raw
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .unwrap_or("");
                !in_list(ALLOWED_FUNCTIONS, inner)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Word lists

/// Built-in functions known to be side-effect free (immutable, stable, or volatile but read-only). Sorted.
const ALLOWED_FUNCTIONS: &[&str] = &[
    "abbrev",
    "abs",
    "acos",
    "age",
    "any_value",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_upper",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bernoulli",
    "bigint",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool",
    "bool_and",
    "bool_or",
    "boolean",
    "broadcast",
    "btrim",
    "bytea",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "cidr",
    "clock_timestamp",
    "coalesce",
    "col_description",
    "concat",
    "concat_ws",
    "convert_from",
    "convert_to",
    "corr",
    "cos",
    "cosh",
    "count",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "current_database",
    "current_date",
    "current_role",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "date",
    "date_add",
    "date_bin",
    "date_part",
    "date_subtract",
    "date_trunc",
    "daterange",
    "decode",
    "degrees",
    "dense_rank",
    "digest",
    "div",
    "encode",
    "every",
    "exists",
    "exp",
    "extract",
    "factorial",
    "family",
    "first",
    "first_value",
    "float4",
    "float8",
    "floor",
    "format",
    "format_type",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "get_bit",
    "get_byte",
    "greatest",
    "grouping",
    "has_column_privilege",
    "has_database_privilege",
    "has_function_privilege",
    "has_schema_privilege",
    "has_sequence_privilege",
    "has_table_privilege",
    "histogram",
    "hmac",
    "host",
    "hostmask",
    "inet",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "initcap",
    "int",
    "int2",
    "int4",
    "int4range",
    "int8",
    "int8range",
    "integer",
    "interpolate",
    "isempty",
    "isfinite",
    "json",
    "json_agg",
    "json_array",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_arrayagg",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_exists",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_objectagg",
    "json_populate_record",
    "json_populate_recordset",
    "json_query",
    "json_scalar",
    "json_serialize",
    "json_strip_nulls",
    "json_table",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "json_value",
    "jsonb",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_populate_record",
    "jsonb_populate_recordset",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last",
    "last_value",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "locf",
    "log",
    "log10",
    "lower",
    "lower_inc",
    "lower_inf",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "masklen",
    "max",
    "md5",
    "merge_action",
    "min",
    "min_scale",
    "mod",
    "mode",
    "money",
    "name",
    "netmask",
    "network",
    "normalize",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "numeric",
    "numrange",
    "obj_description",
    "octet_length",
    "oid",
    "overlay",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_column_size",
    "pg_database_size",
    "pg_encoding_to_char",
    "pg_function_is_visible",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_function_arguments",
    "pg_get_function_result",
    "pg_get_functiondef",
    "pg_get_indexdef",
    "pg_get_keywords",
    "pg_get_serial_sequence",
    "pg_get_triggerdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_has_role",
    "pg_indexes_size",
    "pg_is_in_recovery",
    "pg_postmaster_start_time",
    "pg_relation_size",
    "pg_size_bytes",
    "pg_size_pretty",
    "pg_sleep",
    "pg_table_is_visible",
    "pg_table_size",
    "pg_total_relation_size",
    "pg_type_is_visible",
    "pg_typeof",
    "phraseto_tsquery",
    "pi",
    "plainto_tsquery",
    "position",
    "pow",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "random_normal",
    "range_agg",
    "range_intersect_agg",
    "range_merge",
    "rank",
    "real",
    "regclass",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "regtype",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "session_user",
    "setweight",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "shobj_description",
    "sign",
    "sin",
    "sinh",
    "smallint",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strpos",
    "substr",
    "substring",
    "sum",
    "system",
    "system_rows",
    "system_time",
    "tan",
    "tanh",
    "text",
    "time_bucket",
    "time_bucket_gapfill",
    "timeofday",
    "timezone",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regnamespace",
    "to_regproc",
    "to_regprocedure",
    "to_regrole",
    "to_regtype",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim",
    "trim_array",
    "trim_scale",
    "trunc",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsrange",
    "tstzrange",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
    "uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "websearch_to_tsquery",
    "width_bucket",
    "xmlagg",
    "xmlattributes",
    "xmlcomment",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
    "xmltext",
    "xpath",
    "xpath_exists",
];

/// Keywords that take a parenthesised operand syntactically; `kw (` is not a function call. Sorted.
const NOT_CALLS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "between",
    "both",
    "by",
    "case",
    "cast",
    "check",
    "coalesce",
    "collate",
    "columns",
    "conflict",
    "cube",
    "default",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "escape",
    "except",
    "exists",
    "extract",
    "filter",
    "following",
    "for",
    "from",
    "greatest",
    "group",
    "having",
    "ilike",
    "in",
    "intersect",
    "into",
    "is",
    "join",
    "key",
    "lateral",
    "leading",
    "least",
    "like",
    "limit",
    "materialized",
    "not",
    "nullif",
    "offset",
    "on",
    "only",
    "operator",
    "or",
    "order",
    "ordinality",
    "over",
    "overlay",
    "partition",
    "placing",
    "position",
    "preceding",
    "range",
    "recursive",
    "references",
    "repeatable",
    "returning",
    "rollup",
    "row",
    "rows",
    "select",
    "set",
    "sets",
    "similar",
    "some",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "trim",
    "union",
    "unique",
    "update",
    "using",
    "values",
    "variadic",
    "when",
    "where",
    "window",
    "with",
    "within",
    "zone",
];

/// Type names whose `(` is a type modifier (`numeric(10,2)`, `varchar(20)`). Sorted.
const TYPE_NAMES: &[&str] = &[
    "bit",
    "char",
    "character",
    "dec",
    "decimal",
    "float",
    "interval",
    "nchar",
    "numeric",
    "time",
    "timestamp",
    "timestamptz",
    "timetz",
    "varbit",
    "varchar",
    "varying",
];

/// Keywords that may stand before an expression; a word not in this list directly before `name(` makes `name(...)` a FROM-item alias column list. Sorted.
const KEYWORDS: &[&str] = &[
    "absent",
    "all",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "at",
    "between",
    "both",
    "breadth",
    "by",
    "case",
    "cast",
    "check",
    "coalesce",
    "collate",
    "columns",
    "conflict",
    "content",
    "cross",
    "cube",
    "current",
    "cycle",
    "day",
    "default",
    "delete",
    "depth",
    "desc",
    "distinct",
    "do",
    "document",
    "else",
    "empty",
    "encoding",
    "end",
    "error",
    "escape",
    "except",
    "exclude",
    "exists",
    "extract",
    "false",
    "fetch",
    "filter",
    "first",
    "following",
    "for",
    "format",
    "from",
    "full",
    "greatest",
    "group",
    "grouping",
    "groups",
    "having",
    "hour",
    "ilike",
    "in",
    "inner",
    "insert",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "key",
    "keys",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "local",
    "locked",
    "matched",
    "materialized",
    "merge",
    "minute",
    "month",
    "name",
    "natural",
    "nested",
    "next",
    "no",
    "not",
    "nothing",
    "notnull",
    "nowait",
    "null",
    "nullif",
    "nulls",
    "of",
    "offset",
    "on",
    "only",
    "operator",
    "or",
    "order",
    "ordinality",
    "others",
    "outer",
    "over",
    "overlaps",
    "overlay",
    "partition",
    "passing",
    "path",
    "placing",
    "position",
    "preceding",
    "quotes",
    "range",
    "recursive",
    "ref",
    "references",
    "repeatable",
    "return",
    "returning",
    "right",
    "rollup",
    "row",
    "rows",
    "search",
    "second",
    "select",
    "set",
    "sets",
    "share",
    "similar",
    "skip",
    "some",
    "standalone",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "ties",
    "time",
    "to",
    "trailing",
    "trim",
    "true",
    "uescape",
    "unbounded",
    "union",
    "unique",
    "update",
    "using",
    "value",
    "values",
    "variadic",
    "version",
    "when",
    "where",
    "window",
    "with",
    "within",
    "without",
    "wrapper",
    "year",
    "zone",
];

/// Functions whose result differs between the two databases. Sorted.
const NONDETERMINISTIC: &[&str] = &[
    "array_sample",
    "array_shuffle",
    "clock_timestamp",
    "current_date",
    "current_time",
    "current_timestamp",
    "currval",
    "gen_random_bytes",
    "gen_random_uuid",
    "gen_salt",
    "inet_client_addr",
    "inet_client_port",
    "lastval",
    "localtime",
    "localtimestamp",
    "nextval",
    "now",
    "pg_backend_pid",
    "pg_conf_load_time",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_postmaster_start_time",
    "random",
    "random_normal",
    "setseed",
    "setval",
    "statement_timestamp",
    "timeofday",
    "transaction_timestamp",
    "txid_current",
    "txid_current_if_assigned",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
];

/// Non-deterministic SQL value functions callable without parentheses. Sorted.
const BARE_NONDETERMINISTIC: &[&str] = &[
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
];

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use Route::{Both as W, PrimaryOnly as R};

    /// One table row: the text, its route, and optionally more expectations.
    struct Case {
        sql: &'static str,
        route: Route,
        statements: Option<usize>,
        tx: Option<TxControl>,
        copy: Option<bool>,
        session: Option<bool>,
        tables: Option<&'static [&'static str]>,
        nondet: Option<&'static [&'static str]>,
    }

    const fn c(sql: &'static str, route: Route) -> Case {
        Case {
            sql,
            route,
            statements: None,
            tx: None,
            copy: None,
            session: None,
            tables: None,
            nondet: None,
        }
    }

    impl Case {
        const fn n(mut self, n: usize) -> Self {
            self.statements = Some(n);
            self
        }
        const fn tx(mut self, tx: TxControl) -> Self {
            self.tx = Some(tx);
            self
        }
        const fn copy(mut self) -> Self {
            self.copy = Some(true);
            self
        }
        const fn copy_false(mut self) -> Self {
            self.copy = Some(false);
            self
        }
        const fn session(mut self, s: bool) -> Self {
            self.session = Some(s);
            self
        }
        const fn tables(mut self, t: &'static [&'static str]) -> Self {
            self.tables = Some(t);
            self
        }
        const fn nondet(mut self, n: &'static [&'static str]) -> Self {
            self.nondet = Some(n);
            self
        }
    }

    use TxControl as T;

    const CASES: &[Case] = &[
        // Plain reads.
        c("SELECT 1", R).n(1).tx(T::None).session(false).tables(&[]).nondet(&[]),
        c("select * from t", R),
        c("SELECT a, b FROM public.t WHERE id = $1 AND s = $2", R),
        c("(SELECT 1) UNION ALL (SELECT 2)", R),
        c("SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (x)", R),
        c("SELECT * FROM t WHERE id IN (SELECT id FROM u) AND NOT EXISTS (SELECT 1)", R),
        c("SELECT * FROM t WHERE id = ANY($1) OR id = ANY (ARRAY[1,2]) OR x > ALL (SELECT 1)", R),
        c("SELECT count(*), sum(v), avg(v), min(v), max(v) FROM t GROUP BY k HAVING count(*) > 1", R),
        c("SELECT row_number() OVER (PARTITION BY k ORDER BY ts), lag(v, 1) OVER w FROM t WINDOW w AS (ORDER BY ts)", R),
        c("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v), count(*) FILTER (WHERE v > 0) FROM t", R),
        c("WITH x AS (SELECT 1) SELECT * FROM x", R).tables(&[]),
        c("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", R),
        c("WITH a AS MATERIALIZED (SELECT 1), b(x) AS NOT MATERIALIZED (SELECT 2) SELECT * FROM a, b", R),
        c("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.t = t.id LIMIT 1) x", R),
        c("SELECT * FROM t JOIN LATERAL generate_series(1, t.n) AS g(i) ON true", R),
        c("SELECT * FROM (SELECT 1) AS s(a), (VALUES (1, 2)) v(a, b)", R),
        c("SELECT * FROM unnest($1::int[]) WITH ORDINALITY AS u(x, n)", R),
        c("SELECT * FROM generate_series(1, 3) g(i) CROSS JOIN t t2(a, b)", R),
        c("SELECT v::numeric(10,2), ts::timestamp(3), s::varchar(20), c::character varying(5) FROM t", R),
        c("SELECT CAST(v AS numeric(12, 4)), CAST(s AS char(3)), x::pg_catalog.numeric(5) FROM t", R),
        c("SELECT interval '1 day', b::bit(8), d::decimal(6,2) FROM t", R),
        c("SELECT coalesce(a, b), nullif(a, 0), greatest(a, b), least(a, b) FROM t", R),
        c("SELECT extract(epoch FROM ts), date_trunc('hour', ts), time_bucket('5 minutes', ts) FROM t", R),
        c("SELECT substring(s FROM 2 FOR 3), position('a' IN s), trim(both ' ' from s), overlay(s placing 'x' from 1) FROM t", R),
        c("SELECT jsonb_build_object('a', 1), j->>'k', j #> '{a,b}', jsonb_set(j, '{a}', '1') FROM t", R),
        c("SELECT array_agg(x ORDER BY x), string_agg(s, ','), array_length(a, 1) FROM t", R),
        c("SELECT pg_catalog.lower(s), pg_catalog.pg_get_userbyid(o) FROM t", R),
        c("SELECT DISTINCT ON (k) k, upper(s) FROM t ORDER BY k, ts DESC", R),
        c("SELECT * FROM t GROUP BY ROLLUP (a, b), CUBE (c), GROUPING SETS ((a), ())", R),
        c("SELECT \"lower\"(s) FROM t", R),
        c("SELECT * FROM t TABLESAMPLE SYSTEM (10) REPEATABLE (42)", R),
        c("SELECT current_setting('search_path'), version(), pg_typeof(1)", R),
        c("SELECT pg_sleep(1)", R),
        c("VALUES (1, 'a'), (2, 'b')", R),
        c("SELECT * FROM ROWS FROM (generate_series(1, 2), unnest(ARRAY[1])) AS x(a, b)", R),
        c("SELECT * FROM (t JOIN u ON t.id = u.id) j(a, b)", R),
        c("SELECT * FROM jsonb_to_recordset($1) AS r(a int, b varchar(10))", R),
        c("SELECT x FROM t WHERE ts > CURRENT_TIMESTAMP - INTERVAL '1 day' ORDER BY lower(s) LIMIT (5)", R)
            .nondet(&["current_timestamp"]),
        c("SELECT CASE WHEN (a) THEN upper(b) ELSE (c) END, ARRAY(SELECT 1), ROW(1, 2) FROM t", R),
        c("SELECT collation for (s), s COLLATE \"C\" FROM t WHERE s SIMILAR TO 'a%' ESCAPE '!'", R),
        c("SELECT json_table.* FROM json_table('[]', '$[*]' COLUMNS (a int PATH '$.a'))", R),
        c("SELECT 1 OPERATOR(pg_catalog.+) 2", R),
        c("TABLE t", R),
        c("SHOW search_path", R).session(false),
        c("show ALL", R),
        // Non-deterministic reads: still reads, but reported.
        c("SELECT now(), current_timestamp, random()", R)
            .nondet(&["now", "current_timestamp", "random"]),
        c("SELECT clock_timestamp(), gen_random_uuid(), CURRENT_DATE, localtimestamp(3)", R)
            .nondet(&["clock_timestamp", "gen_random_uuid", "current_date", "localtimestamp"]),
        c("SELECT * FROM t WHERE ts > now() - interval '1 hour' AND ts < now()", R).nondet(&["now"]),
        c("SELECT 'now'::timestamp, now FROM t", R).nondet(&[]),
        // EXPLAIN.
        c("EXPLAIN SELECT * FROM t", R),
        c("EXPLAIN DELETE FROM t", R).tables(&[]),
        c("EXPLAIN (COSTS OFF, VERBOSE) INSERT INTO t VALUES (1)", R),
        c("EXPLAIN (ANALYZE false) UPDATE t SET a = 1", R),
        c("EXPLAIN ANALYZE SELECT * FROM t", R),
        c("EXPLAIN ANALYZE DELETE FROM t", W).tables(&["t"]),
        c("explain analyse verbose update t set a = 1", W).tables(&["t"]),
        c("EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)", W).tables(&["t"]),
        c("EXPLAIN (analyze true, buffers) MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", W)
            .tables(&["t"]),
        c("EXPLAIN ANALYZE SELECT nextval('s')", W).nondet(&["nextval"]),
        // Cursors.
        c("FETCH 10 FROM c", R),
        c("MOVE NEXT IN c", R),
        c("CLOSE c", R),
        c("DECLARE c CURSOR FOR SELECT * FROM t", R).session(false),
        c("DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT * FROM t", W).session(true),
        c("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", W),
        c("DECLARE c CURSOR FOR SELECT my_func(x) FROM t", W),
        // COPY.
        c("COPY t TO STDOUT", R).copy_false(),
        c("COPY public.t (a, b) TO STDOUT WITH (FORMAT csv)", R),
        c("COPY (SELECT * FROM t WHERE ts < now()) TO STDOUT (FORMAT binary)", R).nondet(&["now"]),
        c("COPY t FROM STDIN", W).copy().tables(&["t"]),
        c("copy \"Events\" (a, b) from stdin with (format csv)", W).copy().tables(&["Events"]),
        c("COPY s.t FROM '/tmp/data.csv'", W).copy_false().tables(&["s.t"]),
        c("COPY t FROM PROGRAM 'cat x'", W).tables(&["t"]),
        c("COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", W).tables(&["t"]),
        c("COPY (DELETE FROM t RETURNING id) TO STDOUT", W).tables(&["t"]),
        // pgbench.
        c("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;", W)
            .n(1)
            .tables(&["pgbench_accounts"]),
        c("SELECT abalance FROM pgbench_accounts WHERE aid = $1;", R).n(1).tables(&[]),
        c("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;", W)
            .tables(&["pgbench_tellers"]),
        c("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);", W)
            .tables(&["pgbench_history"])
            .nondet(&["current_timestamp"]),
        // Writes.
        c("INSERT INTO t VALUES (1)", W).tables(&["t"]).session(false).tx(T::None),
        c("insert into Public.Orders (id) select id from staging", W).tables(&["public.orders"]),
        c("INSERT INTO \"My Table\" AS m (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a", W)
            .tables(&["My Table"]),
        c("INSERT INTO t (id, ts) VALUES (nextval('t_id_seq'), now()) RETURNING id", W)
            .tables(&["t"])
            .nondet(&["nextval", "now"]),
        c("UPDATE ONLY s.t SET a = 1 FROM u WHERE u.id = t.id", W).tables(&["s.t"]),
        c("DELETE FROM t WHERE id = $1", W).tables(&["t"]),
        c("delete from only \"S\".\"T\" using u where true", W).tables(&["S.T"]),
        c("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)", W)
            .tables(&["t"]),
        c("TRUNCATE t", W).tables(&["t"]),
        c("TRUNCATE TABLE ONLY a, b.c RESTART IDENTITY CASCADE", W).tables(&["a", "b.c"]),
        c("truncate x *, \"Y\"", W).tables(&["x", "Y"]),
        // Data-modifying CTEs.
        c("WITH d AS (DELETE FROM t WHERE old RETURNING *) SELECT count(*) FROM d", W).tables(&["t"]),
        c("WITH x AS (SELECT 1), y AS (UPDATE u SET a = 1 RETURNING a) SELECT * FROM x, y", W)
            .tables(&["u"]),
        c("WITH a AS (SELECT 1) INSERT INTO log SELECT * FROM a", W).tables(&["log"]),
        c("WITH m AS MATERIALIZED (INSERT INTO a VALUES (1) RETURNING id), n AS (DELETE FROM b RETURNING id) SELECT * FROM m, n", W)
            .tables(&["a", "b"]),
        c("WITH x AS (SELECT * FROM (WITH y AS (MERGE INTO z USING q ON true WHEN MATCHED THEN DELETE) SELECT 1) s) SELECT 1", W)
            .tables(&["z"]),
        c("INSERT INTO t WITH d AS (DELETE FROM u RETURNING *) SELECT * FROM d", W).tables(&["t", "u"]),
        // SELECT INTO and locking reads.
        c("SELECT * INTO new_t FROM t", W).tables(&["new_t"]).session(false),
        c("SELECT a INTO TEMP TABLE tmp FROM t", W).tables(&["tmp"]).session(true),
        c("SELECT * FROM t WHERE id = 1 FOR UPDATE", W).tables(&[]),
        c("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", W),
        c("SELECT * FROM t FOR SHARE NOWAIT", W),
        c("select * from t for key share of t", W),
        c("SELECT * FROM t FOR UPDATE OF x SKIP LOCKED LIMIT 0", W),
        // Functions with side effects or unknown.
        c("SELECT nextval('s')", W).nondet(&["nextval"]),
        c("SELECT setval('s', 42, true)", W).nondet(&["setval"]),
        c("SELECT currval('s'), lastval()", W).nondet(&["currval", "lastval"]),
        c("SELECT set_config('app.user', '42', false)", W),
        c("SELECT pg_advisory_lock(1)", W),
        c("SELECT pg_try_advisory_xact_lock(1, 2)", W),
        c("SELECT pg_notify('ch', 'x')", W),
        c("SELECT lo_import('/tmp/x')", W),
        c("SELECT my_func(1)", W),
        c("SELECT app.audit_event($1)", W),
        c("SELECT public.lower(s) FROM t", W),
        c("SELECT \"MyFunc\"(x) FROM t", W),
        c("SELECT * FROM t WHERE id IN (SELECT f(id) FROM u)", W),
        c("SELECT DISTINCT ON (k) do_something(k) FROM t", W),
        c("SELECT * FROM t, dblink('conn', 'select 1') AS (a int)", W),
        c("SELECT create_hypertable('conditions', 'time')", W),
        c("SELECT add_retention_policy('conditions', INTERVAL '30 days')", W),
        c("SELECT add_compression_policy('metrics', INTERVAL '7 days')", W),
        c("SELECT compress_chunk(c) FROM show_chunks('metrics') c", W),
        c("SELECT drop_chunks('metrics', older_than => INTERVAL '3 months')", W),
        c("SELECT txid_current()", W).nondet(&["txid_current"]),
        c("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", W),
        c("SELECT setseed(0.5)", W).nondet(&["setseed"]),
        c("SELECT * FROM ROWS FROM (archive(1)) AS x(a)", W),
        c("SELECT * FROM t JOIN LATERAL purge(t.id) p ON true", W),
        c("SELECT * FROM t AS a, f(1) b", W),
        c("SELECT * FROM t WHERE a = 1 AND bump(a)", W),
        c("SELECT x FROM t ORDER BY rank_and_log(x) LIMIT 1", W),
        c("SELECT ARRAY[write_it(1)], (write_it(2))", W),
        c("SELECT xmlexists('//a' PASSING BY REF log_it(x)) FROM t", W),
        c("SELECT a.b.c(1)", W),
        c("SELECT pg_catalog.nextval('s'), pg_catalog.now()", W).nondet(&["nextval", "now"]),
        c("SELECT other.now()", W).nondet(&[]),
        c("VALUES (1, nextval('s'))", W),
        c("WITH f(x) AS (SELECT side_effect()) SELECT * FROM f", W),
        c("TABLE t; SELECT f()", W).n(2),
        // DDL and maintenance.
        c("CREATE TABLE t (id int PRIMARY KEY, v numeric(10,2))", W).session(false),
        c("CREATE TEMP TABLE tmp (id int)", W).session(true),
        c("create global temporary table tmp2 as select 1", W).session(true),
        c("CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", W),
        c("CREATE INDEX CONCURRENTLY i ON t (a)", W),
        c("ALTER TABLE t ADD COLUMN c text", W),
        c("DROP TABLE IF EXISTS t CASCADE", W),
        c("COMMENT ON TABLE t IS 'x'", W),
        c("GRANT SELECT ON t TO bob", W),
        c("REVOKE ALL ON t FROM bob", W),
        c("SECURITY LABEL ON TABLE t IS 'secret'", W),
        c("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", W),
        c("REINDEX TABLE t", W),
        c("CLUSTER t USING i", W),
        c("VACUUM (ANALYZE) t", W),
        c("ANALYZE t", W),
        c("IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO local", W),
        c("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", W),
        c("REASSIGN OWNED BY a TO b", W),
        c("DROP OWNED BY a", W),
        c("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W),
        c("CALL refresh_continuous_aggregate('cagg', NULL, NULL)", W),
        c("DO $$BEGIN PERFORM 1; END$$", W).n(1).tx(T::None),
        c("NOTIFY ch, 'payload'", W),
        c("CHECKPOINT", W),
        c("EXECUTE stmt(1, 2)", W),
        // Session state.
        c("SET search_path = app, public", W).session(true).tx(T::None),
        c("SET LOCAL statement_timeout = '5s'", W).session(true),
        c("set role admin", W).session(true),
        c("SET SESSION AUTHORIZATION bob", W).session(true),
        c("RESET ALL", W).session(true),
        c("DISCARD ALL", W).session(true),
        c("PREPARE q(int) AS SELECT * FROM t WHERE id = $1", W).session(true).tx(T::None),
        c("DEALLOCATE ALL", W).session(true),
        c("LISTEN ch", W).session(true),
        c("UNLISTEN *", W).session(true),
        c("LOAD 'auto_explain'", W).session(true),
        c("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", W).tx(T::None),
        c("SET CONSTRAINTS ALL DEFERRED", W).tx(T::None),
        // Transaction control.
        c("BEGIN", W).tx(T::Begin).n(1).session(false),
        c("begin;", W).tx(T::Begin).n(1),
        c("BEGIN WORK", W).tx(T::Begin),
        c("begin isolation level serializable", W).tx(T::Begin),
        c("START TRANSACTION", W).tx(T::Begin),
        c("start transaction isolation level serializable, read only", W).tx(T::Begin),
        c("COMMIT", W).tx(T::Commit),
        c("commit and chain", W).tx(T::Commit),
        c("COMMIT WORK", W).tx(T::Commit),
        c("END", W).tx(T::Commit),
        c("END TRANSACTION", W).tx(T::Commit),
        c("ROLLBACK", W).tx(T::Rollback),
        c("Rollback Transaction", W).tx(T::Rollback),
        c("ABORT", W).tx(T::Rollback),
        c("SAVEPOINT s1", W).tx(T::Savepoint),
        c("ROLLBACK TO SAVEPOINT s1", W).tx(T::RollbackToSavepoint),
        c("rollback work to s1", W).tx(T::RollbackToSavepoint),
        c("RELEASE SAVEPOINT s1", W).tx(T::ReleaseSavepoint),
        c("RELEASE s1", W).tx(T::ReleaseSavepoint),
        c("PREPARE TRANSACTION 'gx1'", W).tx(T::Prepared).session(false),
        c("COMMIT PREPARED 'gx1'", W).tx(T::Prepared),
        c("ROLLBACK PREPARED 'gx1'", W).tx(T::Prepared),
        c("BEGIN; UPDATE t SET a = 1; COMMIT;", W).n(3).tx(T::Mixed).tables(&["t"]),
        c("SAVEPOINT a; RELEASE a", W).n(2).tx(T::Mixed),
        // Multi-statement text.
        c("SELECT 1; SELECT 2", R).n(2).tx(T::None),
        c("SELECT 1; DELETE FROM t", W).n(2).tables(&["t"]),
        c("SET x = 1; SELECT 1", W).n(2).session(true),
        c("COPY t FROM STDIN; SELECT 1", W).n(2).copy(),
        c("INSERT INTO a VALUES (1); INSERT INTO b VALUES (2); INSERT INTO a VALUES (3)", W)
            .n(3)
            .tables(&["a", "b"]),
        // Tricky quoting.
        c("SELECT 1; /* ; */ DELETE FROM t", W).n(2).tables(&["t"]),
        c("SELECT $$;$$; INSERT INTO t VALUES (1)", W).n(2).tables(&["t"]),
        c("SELECT 'insert into t'", R).n(1).tables(&[]),
        c("SELECT \"insert\" FROM t", R),
        c("SELECT \"insert\", \"delete\", \"my;func\" FROM \"update;\"", R).n(1),
        c("SELECT 1 -- ; delete from t", R).n(1),
        c(r"SELECT e'\';delete from t'", R).n(1),
        c(r"SELECT E'it\'s; DROP TABLE t'", R).n(1),
        c(r"SELECT e'\\';delete from t", W).n(2).tables(&["t"]),
        c(r"SELECT 'a\'; DELETE FROM t", W).n(2),
        c("SELECT 'it''s; delete from t'", R).n(1),
        c("SELECT $$;DELETE FROM t;$$", R).n(1),
        c("SELECT $fn$ drop table t; $$ nested $$; $fn$ AS body", R).n(1),
        c("SELECT $a$ $b$ ; $b$ $a$; UPDATE t SET x = 1", W).n(2).tables(&["t"]),
        c("SELECT /* ; DROP TABLE t; /* nested */ still comment */ 1", R).n(1),
        c("SELECT /* /* */ ; DELETE FROM t */ 1", R).n(1),
        c("SELECT U&'d\\0061t\\+000061' FROM t", R),
        c("SELECT U&\"a;b\" FROM t", R).n(1),
        c("SELECT B'1010', X'1F', N'x'", R),
        c("SELECT $1, $2::text, a$b FROM t WHERE x = $10", R),
        c("SELECT x$$ FROM t; DELETE FROM u", W).n(2).tables(&["u"]),
        c("SELECT (1; DELETE FROM t)", W).n(1),
        c("SELECT 'unterminated; DELETE FROM t", W).n(1),
        c("SELECT 1 /* unterminated comment", R).n(1),
        c("SELECT $$ unterminated", R).n(1),
        // Empty.
        c("", R).n(0).tx(T::None).tables(&[]).nondet(&[]),
        c("  \n\t", R).n(0),
        c("-- only a comment", R).n(0),
        c("/* only /* nested */ a comment */", R).n(0),
        c(";;", R).n(0),
        c(" ; -- x\n ; ", R).n(0),
        // Unknown commands.
        c("FROBNICATE ALL THE THINGS", W).n(1),
        c("'select'", W),
        c("VACUUM", W),
    ];

    #[test]
    fn table() {
        assert!(CASES.len() >= 120, "only {} rows", CASES.len());
        let mut failures = Vec::new();
        for case in CASES {
            let got = classify(case.sql);
            let mut wrong = Vec::new();
            if got.route != case.route {
                wrong.push(format!("route {:?}", got.route));
            }
            if case.statements.is_some_and(|n| n != got.statements) {
                wrong.push(format!("statements {}", got.statements));
            }
            if case.tx.is_some_and(|t| t != got.tx) {
                wrong.push(format!("tx {:?}", got.tx));
            }
            if case.copy.is_some_and(|c| c != got.copy_from_stdin) {
                wrong.push(format!("copy_from_stdin {}", got.copy_from_stdin));
            }
            if case.session.is_some_and(|s| s != got.session_state) {
                wrong.push(format!("session_state {}", got.session_state));
            }
            if case.tables.is_some_and(|t| t != got.tables.as_slice()) {
                wrong.push(format!("tables {:?}", got.tables));
            }
            if case
                .nondet
                .is_some_and(|n| n != got.nondeterministic.as_slice())
            {
                wrong.push(format!("nondeterministic {:?}", got.nondeterministic));
            }
            if !wrong.is_empty() {
                failures.push(format!("{:?}: {}", case.sql, wrong.join(", ")));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} rows wrong:\n{}",
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn copies_and_cursor_statements_are_not_shadowable() {
        for sql in [
            "COPY t TO STDOUT",
            "/* report */ copy (SELECT 1) TO STDOUT",
            "DECLARE c CURSOR FOR SELECT * FROM t",
            "FETCH FORWARD 10 FROM c",
            "MOVE FORWARD $1 __asyncpg_portal_8__",
            "CLOSE c",
            "SELECT 1; FETCH 1 FROM c",
        ] {
            assert!(!classify(sql).shadowable, "{sql}");
        }
        for sql in [
            "SELECT * FROM t WHERE id = $1",
            "SHOW work_mem",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT 'FETCH 1 FROM c'",
        ] {
            assert!(classify(sql).shadowable, "{sql}");
        }
    }

    #[test]
    fn word_lists_are_sorted() {
        for list in [
            ALLOWED_FUNCTIONS,
            NOT_CALLS,
            TYPE_NAMES,
            KEYWORDS,
            NONDETERMINISTIC,
            BARE_NONDETERMINISTIC,
        ] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
        for f in [
            "nextval",
            "setval",
            "currval",
            "lastval",
            "set_config",
            "txid_current",
            "pg_notify",
        ] {
            assert!(!in_list(ALLOWED_FUNCTIONS, f), "{f} must not be allowed");
        }
    }

    #[test]
    fn never_panics_on_generated_text() {
        const FRAGMENTS: &[&str] = &[
            "'",
            "\"",
            "$$",
            "$a$",
            "$1",
            "/*",
            "*/",
            "--",
            "\n",
            ";",
            "(",
            ")",
            "E'",
            "e'",
            "\\",
            "U&'",
            "U&\"",
            "B'",
            "x'",
            "::",
            ".",
            ",",
            "[",
            "]",
            " ",
            "select",
            "insert into t",
            "update",
            "delete from",
            "with",
            "as",
            "for update",
            "into",
            "copy",
            "from stdin",
            "explain",
            "analyze",
            "begin",
            "commit",
            "rollback to",
            "now()",
            "f(",
            "pg_catalog.",
            "é",
            "日本",
            "$",
            "$ab",
            "0.5e",
            "declare c cursor",
            "set",
            "temp",
        ];
        // A small deterministic generator: no dependency needed.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let len = (next() % 24) as usize;
            let mut sql = String::new();
            for _ in 0..len {
                sql.push_str(FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize]);
            }
            let got = classify(&sql);
            // Anything with a write verb outside quoting may go either way, but the counts must
            // be coherent.
            if got.statements == 0 {
                assert_eq!(got.tx, TxControl::None, "{sql:?}");
            }
            assert!(got.statements <= sql.len(), "{sql:?}");
        }
    }

    #[test]
    fn large_query_is_linear() {
        let mut sql = String::from("SELECT ");
        while sql.len() < 1 << 20 {
            sql.push_str("coalesce(a, 'x;y') + lower(\"b\") /* c */ + $$d$$ + (e::numeric(5)),\n");
        }
        sql.push_str("1 FROM t; INSERT INTO big VALUES (1)");
        let start = std::time::Instant::now();
        let got = classify(&sql);
        let took = start.elapsed();
        assert_eq!(got.route, Route::Both);
        assert_eq!(got.statements, 2);
        assert_eq!(got.tables, vec!["big".to_string()]);
        // Linear work is a few milliseconds even unoptimized; quadratic would take minutes.
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");

        let nested = format!("{}SELECT 1", "EXPLAIN ANALYZE ".repeat(100_000));
        assert_eq!(classify(&nested).route, Route::Both);
        let nested = format!(
            "DECLARE c CURSOR FOR {}SELECT 1",
            "EXPLAIN ANALYZE ".repeat(3)
        );
        assert_eq!(classify(&nested).route, Route::PrimaryOnly);

        let many: String = "SELECT 1;".repeat(100_000);
        assert_eq!(classify(&many).statements, 100_000);
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(
            classify(&format!("SELECT {deep}")).route,
            Route::PrimaryOnly
        );
    }

    #[test]
    fn only_statements_that_may_change_data_have_an_effect() {
        let effect = [
            "insert into t values (1)",
            "update t set v = 1",
            "delete from t",
            "with x as (delete from t returning *) select * from x",
            "select nextval('s')",
            "select * into t2 from t",
            "create table t (id int)",
            "drop table t",
            "alter table t add column c int",
            "truncate t",
            "copy t from stdin",
            "call p()",
            "do $$ begin end $$",
            "execute stmt(1)",
            "explain analyze insert into t values (1)",
            "begin; insert into t values (1); commit",
            "frobnicate the table",
        ];
        for sql in effect {
            assert!(classify(sql).effect, "{sql} has an effect");
        }
        let none = [
            "select * from t",
            "select * from t for update",
            "begin",
            "commit",
            "rollback",
            "savepoint a",
            "set search_path = x",
            "reset all",
            "discard all",
            "prepare p as insert into t values (1)",
            "deallocate p",
            "listen ch",
            "lock table t in exclusive mode",
            "show work_mem",
            "explain select 1",
            "explain analyze select * from t",
            "declare c cursor with hold for select * from t",
            "begin; select 1; commit",
        ];
        for sql in none {
            assert!(!classify(sql).effect, "{sql} has no effect");
        }
    }

    #[test]
    fn statements_that_must_run_outside_a_transaction_block_are_not_appendable() {
        for sql in [
            "insert into t values (1)",
            "update t set v = 1 -- trailing comment",
            "insert into t values (1) on conflict (id) do update set v = case when true then 1 end",
            "create table t (id int); drop table u",
        ] {
            assert!(classify(sql).appendable, "{sql}");
        }
        for sql in [
            "vacuum t",
            "create index concurrently i on t (v)",
            "create database d",
            "alter system set work_mem = '1MB'",
            "call p()",
            "do $$ begin end $$",
            "begin; insert into t values (1); commit",
            "insert into t values ('unterminated",
            "insert into t values (1) /* open comment",
        ] {
            assert!(!classify(sql).appendable, "{sql}");
        }
    }
}
