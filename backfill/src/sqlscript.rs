//! A lossless lexer and statement splitter for the SQL scripts `pg_dump`/`pg_dumpall` write,
//! so dumps are edited on statements and tokens (never inside string literals, comments or COPY
//! data), and the pieces concatenate back to the exact original text.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Spaces, tabs, newlines.
    Space,
    /// `-- ...` (to the end of the line) or `/* ... */` (nested).
    Comment,
    /// A keyword, unquoted identifier, number or `$1` parameter.
    Word,
    /// `"..."`.
    QuotedIdent,
    /// `'...'`, `E'...'` (the `E` included), or `$tag$...$tag$`.
    Str,
    /// Any other single character (`;`, `(`, `.`, `\`, ...).
    Punct,
}

/// A token: its kind and its byte range in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's text.
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }

    /// Whitespace or a comment.
    pub fn is_trivia(&self) -> bool {
        matches!(self.kind, TokenKind::Space | TokenKind::Comment)
    }

    /// An unquoted word equal to `keyword`, ignoring case.
    pub fn is_keyword(&self, sql: &str, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text(sql).eq_ignore_ascii_case(keyword)
    }

    /// A punctuation character.
    pub fn is_punct(&self, sql: &str, c: char) -> bool {
        self.kind == TokenKind::Punct && self.text(sql).starts_with(c)
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// `$tag$` at the start of `s` (tag empty or an identifier), if any.
fn dollar_tag(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('$')?;
    let end = rest.find('$')?;
    let tag = &rest[..end];
    let ok = tag.is_empty()
        || (tag
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || !c.is_ascii())
            && tag
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || !c.is_ascii()));
    ok.then(|| &s[..end + 2])
}

/// Split `sql` into tokens covering every byte. Unterminated strings and comments run to the end.
pub fn tokenize(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        let t = next_token(sql, i);
        i = t.end;
        out.push(t);
    }
    out
}

/// The token starting at byte `i` (`i < sql.len()`, on a char boundary).
pub fn next_token(sql: &str, i: usize) -> Token {
    let rest = &sql[i..];
    let c = rest.chars().next().expect("i is inside the text");
    let (kind, len) = if c.is_whitespace() {
        let n = rest
            .char_indices()
            .find(|(_, ch)| !ch.is_whitespace())
            .map_or(rest.len(), |(k, _)| k);
        (TokenKind::Space, n)
    } else if rest.starts_with("--") {
        (TokenKind::Comment, rest.find('\n').unwrap_or(rest.len()))
    } else if rest.starts_with("/*") {
        let rb = rest.as_bytes();
        let (mut depth, mut k, mut n) = (0usize, 0, rest.len());
        while k < rb.len() {
            if rb[k..].starts_with(b"/*") {
                depth += 1;
                k += 2;
            } else if rb[k..].starts_with(b"*/") {
                depth -= 1;
                k += 2;
                if depth == 0 {
                    n = k;
                    break;
                }
            } else {
                k += 1;
            }
        }
        (TokenKind::Comment, n)
    } else if c == '\'' {
        (TokenKind::Str, quoted_len(rest, b'\'', false))
    } else if (c == 'E' || c == 'e') && rest[1..].starts_with('\'') {
        (TokenKind::Str, 1 + quoted_len(&rest[1..], b'\'', true))
    } else if c == '"' {
        (TokenKind::QuotedIdent, quoted_len(rest, b'"', false))
    } else if let Some(tag) = (c == '$').then(|| dollar_tag(rest)).flatten() {
        let n = rest[tag.len()..]
            .find(tag)
            .map_or(rest.len(), |k| tag.len() + k + tag.len());
        (TokenKind::Str, n)
    } else if is_word_char(c) {
        let n = rest
            .char_indices()
            .find(|(_, ch)| !is_word_char(*ch))
            .map_or(rest.len(), |(k, _)| k);
        (TokenKind::Word, n)
    } else {
        (TokenKind::Punct, c.len_utf8())
    };
    Token {
        kind,
        start: i,
        end: i + len,
    }
}

/// Length of a quoted token starting at `s[0] == quote`; a doubled quote stays inside, and so
/// does a backslash-escaped character when `backslash` is set.
fn quoted_len(s: &str, quote: u8, backslash: bool) -> usize {
    let b = s.as_bytes();
    let mut k = 1;
    while k < b.len() {
        if backslash && b[k] == b'\\' {
            k += 2;
            continue;
        }
        if b[k] == quote {
            if b.get(k + 1) == Some(&quote) {
                k += 2;
                continue;
            }
            return k + 1;
        }
        k += 1;
    }
    b.len()
}

/// What a piece of a script is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceKind {
    /// Whitespace and comments between statements.
    Gap,
    /// One SQL statement, from its first token to its `;` (included).
    Statement,
    /// A psql meta-command line (`\connect`, `\restrict`), newline included.
    Meta,
    /// The data lines after `COPY ... FROM stdin;`, the `\.` line included.
    CopyData,
}

/// A piece of a script; concatenating all pieces gives the script back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    pub kind: PieceKind,
    pub text: &'a str,
}

/// Split a psql script into statements, gaps, meta-commands and COPY data, as psql reads it:
/// a `;` ends a statement outside parentheses and outside the `BEGIN ... END` body of a
/// `CREATE FUNCTION`/`PROCEDURE`.
pub fn split(script: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut push = |kind, from: usize, to: usize| {
        if to > from {
            pieces.push(Piece {
                kind,
                text: &script[from..to],
            });
        }
    };
    let mut pos = 0; // start of the piece not yet emitted
    let mut in_stmt = false;
    let mut words: Vec<String> = Vec::new(); // the words of the current statement
    let (mut paren, mut block) = (0i32, 0i32);
    let mut i = 0;
    while i < script.len() {
        let t = next_token(script, i);
        i = t.end;
        if t.is_trivia() {
            continue;
        }
        if !in_stmt {
            push(PieceKind::Gap, pos, t.start);
            pos = t.start;
            if t.is_punct(script, '\\') {
                let end = line_end(script, t.start);
                push(PieceKind::Meta, t.start, end);
                pos = end;
                i = end;
                continue;
            }
            in_stmt = true;
            words.clear();
            paren = 0;
            block = 0;
        }
        if t.kind == TokenKind::Word {
            words.push(t.text(script).to_ascii_uppercase());
        }
        if t.is_punct(script, '(') {
            paren += 1;
        } else if t.is_punct(script, ')') {
            paren -= 1;
        } else if t.kind == TokenKind::Word && is_routine(&words) {
            let w = t.text(script);
            if w.eq_ignore_ascii_case("BEGIN") || (block > 0 && w.eq_ignore_ascii_case("CASE")) {
                block += 1;
            } else if block > 0 && w.eq_ignore_ascii_case("END") {
                block -= 1;
            }
        } else if t.is_punct(script, ';') && paren <= 0 && block <= 0 {
            push(PieceKind::Statement, pos, t.end);
            pos = t.end;
            in_stmt = false;
            if is_copy_from_stdin(&words) {
                // The data starts on the next line and ends with a line holding only `\.`.
                let data_start = line_end(script, t.end);
                push(PieceKind::Gap, pos, data_start);
                let data_end = copy_data_end(script, data_start);
                push(PieceKind::CopyData, data_start, data_end);
                pos = data_end;
                i = data_end;
            }
        }
    }
    push(
        if in_stmt {
            PieceKind::Statement
        } else {
            PieceKind::Gap
        },
        pos,
        script.len(),
    );
    pieces
}

/// Just past the end of the line holding byte `from`.
fn line_end(script: &str, from: usize) -> usize {
    script[from..]
        .find('\n')
        .map_or(script.len(), |k| from + k + 1)
}

fn is_routine(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["CREATE", "FUNCTION" | "PROCEDURE", ..]
            | ["CREATE", "OR", "REPLACE", "FUNCTION" | "PROCEDURE", ..]
    )
}

fn is_copy_from_stdin(words: &[String]) -> bool {
    words.first().is_some_and(|w| w == "COPY")
        && words.windows(2).any(|p| p[0] == "FROM" && p[1] == "STDIN")
}

/// End of the COPY data starting at `from`: just past the `\.` line, or the end of the script.
fn copy_data_end(script: &str, from: usize) -> usize {
    let mut k = from;
    while k < script.len() {
        let end = line_end(script, k);
        if script[k..end].trim_end_matches(['\n', '\r']) == "\\." {
            return end;
        }
        k = end;
    }
    script.len()
}

/// The meaningful tokens of a statement (no whitespace or comments).
pub fn words(sql: &str) -> Vec<Token> {
    tokenize(sql)
        .into_iter()
        .filter(|t| !t.is_trivia())
        .collect()
}

/// A role or other name as a token spells it: a quoted identifier unquoted, a word folded to
/// lower case.
pub fn ident_value(sql: &str, t: &Token) -> String {
    let text = t.text(sql);
    match t.kind {
        TokenKind::QuotedIdent => text
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(text)
            .replace("\"\"", "\""),
        _ => text.to_lowercase(),
    }
}

/// A statement shortened to its first line, for messages.
pub fn short(stmt: &str) -> String {
    let line = stmt.trim().lines().next().unwrap_or("");
    if line.chars().count() > 120 {
        let cut: String = line.chars().take(117).collect();
        format!("{cut}...")
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(script: &str) -> Vec<(PieceKind, &str)> {
        split(script)
            .into_iter()
            .map(|p| (p.kind, p.text))
            .collect()
    }

    #[test]
    fn splits_losslessly() {
        let script = "-- head\n\\restrict abc\nSET a = 'x;y';\n/* c; /* n; */ */ SELECT \"a;\"\"b\" FROM t;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END;\nDO $x$ BEGIN PERFORM 1; END $x$;\nCOPY \"t\" (\"a\") FROM stdin;\n1;2\n\\.\nSELECT E'it\\'s;';\nSELECT 1";
        let got = kinds(script);
        let joined: String = got.iter().map(|(_, t)| *t).collect();
        assert_eq!(joined, script);
        let stmts: Vec<&str> = got
            .iter()
            .filter(|(k, _)| *k == PieceKind::Statement)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(
            stmts,
            vec![
                "SET a = 'x;y';",
                "SELECT \"a;\"\"b\" FROM t;",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END;",
                "DO $x$ BEGIN PERFORM 1; END $x$;",
                "COPY \"t\" (\"a\") FROM stdin;",
                "SELECT E'it\\'s;';",
                "SELECT 1",
            ]
        );
        assert!(got.contains(&(PieceKind::Meta, "\\restrict abc\n")));
        assert!(got.contains(&(PieceKind::CopyData, "1;2\n\\.\n")));
    }

    #[test]
    fn names() {
        let sql = "ALTER ROLE \"We\"\"ird\" WITH Login";
        let w = words(sql);
        assert_eq!(ident_value(sql, &w[2]), "We\"ird");
        assert_eq!(ident_value(sql, &w[4]), "login");
    }
}
