//! The lexer: one pass over the SQL text that knows Postgres quoting (nested block comments,
//! `E'...'` escapes, dollar quoting, quoted identifiers) and yields words and punctuation.

/// Token kinds. Strings, numbers and parameters are only skipped over; words and punctuation
/// drive classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum K {
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
pub(super) struct Tok {
    pub(super) k: K,
    /// Byte range in the text.
    pub(super) s: usize,
    pub(super) e: usize,
    /// For `(` the index of its `)` and for `)` the index of its `(`; `NONE` when unmatched.
    pub(super) mate: usize,
}

pub(super) const NONE: usize = usize::MAX;

pub(super) struct Lexed {
    pub(super) toks: Vec<Tok>,
    /// Start of an unterminated string, quoted identifier, dollar quote or comment.
    pub(super) unterminated: Option<usize>,
}

pub(super) fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

pub(super) fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Scan a quoted run closed by `quote` (doubling escapes it) from `from`, the byte after the
/// opening quote; with `backslash`, `\` escapes the next byte. Returns the end (after the closing
/// quote) and whether it was closed.
pub(super) fn scan_quoted(b: &[u8], from: usize, quote: u8, backslash: bool) -> (usize, bool) {
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
pub(super) fn dollar_tag_end(b: &[u8], i: usize) -> Option<usize> {
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

pub(super) fn lex(sql: &str) -> Lexed {
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
