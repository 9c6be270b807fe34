//! Which statements must reach the secondary (writes, session state) and which are pure reads.
//!
//! A single pass over the text: a lexer that understands comments (nested), string literals
//! (standard, E'', U&'', B''/X''), dollar quoting, quoted identifiers and parameters, split into
//! statements at top-level semicolons. Each statement is judged by its leading keywords and by
//! the functions it calls. When unsure, a statement goes to both: a wrong guess may cost load,
//! never a write.

/// Where a statement (or a multi-statement query string) must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    PrimaryOnly,
    Both,
}

/// Transaction control found in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    None,
    Begin,
    Commit,
    Rollback,
    Savepoint,
    RollbackToSavepoint,
    ReleaseSavepoint,
    /// PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED.
    Prepared,
    /// Several statements with transaction control, or control mixed with other statements.
    Mixed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub route: Route,
    /// Non-empty statements in the text.
    pub statements: usize,
    pub tx: TxControl,
    /// Contains `COPY ... FROM STDIN`: the client sends CopyData next.
    pub copy_from_stdin: bool,
    /// Changes session state (SET, RESET, DISCARD, PREPARE, LISTEN, temp tables...).
    pub session_state: bool,
    /// Tables written, as named in the text (unquoted parts lower-cased).
    pub tables: Vec<String>,
    /// Known non-deterministic functions called.
    pub nondeterministic: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Keyword or unquoted identifier (lower-cased in `text`).
    Word,
    /// Quoted identifier (verbatim in `text`).
    Quoted,
    /// String literal, number, parameter.
    Literal,
    /// Punctuation/operator: `text` holds it.
    Punct,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    text: String,
    depth: u32,
}

/// Split into statements of tokens (comments dropped, literals opaque).
fn lex(sql: &str) -> Vec<Vec<Token>> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut depth: u32 = 0;
    let mut statements = Vec::new();
    let mut cur: Vec<Token> = Vec::new();
    let n = b.len();
    while i < n {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if i + 1 < n && b[i + 1] == b'-' => {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if i + 1 < n && b[i + 1] == b'*' => {
                let mut level = 1;
                i += 2;
                while i < n && level > 0 {
                    if b[i] == b'/' && i + 1 < n && b[i + 1] == b'*' {
                        level += 1;
                        i += 2;
                    } else if b[i] == b'*' && i + 1 < n && b[i + 1] == b'/' {
                        level -= 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                i = skip_string(b, i + 1, false);
                cur.push(Token {
                    kind: Kind::Literal,
                    text: String::new(),
                    depth,
                });
            }
            b'e' | b'E' if i + 1 < n && b[i + 1] == b'\'' => {
                i = skip_string(b, i + 2, true);
                cur.push(Token {
                    kind: Kind::Literal,
                    text: String::new(),
                    depth,
                });
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if i + 1 < n && b[i + 1] == b'\'' => {
                i = skip_string(b, i + 2, false);
                cur.push(Token {
                    kind: Kind::Literal,
                    text: String::new(),
                    depth,
                });
            }
            b'u' | b'U'
                if i + 2 < n && b[i + 1] == b'&' && (b[i + 2] == b'\'' || b[i + 2] == b'"') =>
            {
                let quote = b[i + 2];
                if quote == b'\'' {
                    i = skip_string(b, i + 3, false);
                    cur.push(Token {
                        kind: Kind::Literal,
                        text: String::new(),
                        depth,
                    });
                } else {
                    let (end, text) = quoted_ident(b, i + 3);
                    i = end;
                    cur.push(Token {
                        kind: Kind::Quoted,
                        text,
                        depth,
                    });
                }
            }
            b'"' => {
                let (end, text) = quoted_ident(b, i + 1);
                i = end;
                cur.push(Token {
                    kind: Kind::Quoted,
                    text,
                    depth,
                });
            }
            b'$' => {
                // $1 parameter, or $tag$ ... $tag$ dollar quoting.
                if i + 1 < n && b[i + 1].is_ascii_digit() {
                    i += 1;
                    while i < n && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    cur.push(Token {
                        kind: Kind::Literal,
                        text: String::new(),
                        depth,
                    });
                } else {
                    let mut j = i + 1;
                    while j < n && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
                        j += 1;
                    }
                    if j < n && b[j] == b'$' {
                        let tag = &b[i..=j];
                        let body = j + 1;
                        i = find(b, body, tag).map(|p| p + tag.len()).unwrap_or(n);
                        cur.push(Token {
                            kind: Kind::Literal,
                            text: String::new(),
                            depth,
                        });
                    } else {
                        i += 1;
                        cur.push(Token {
                            kind: Kind::Punct,
                            text: "$".into(),
                            depth,
                        });
                    }
                }
            }
            b';' if depth == 0 => {
                if !cur.is_empty() {
                    statements.push(std::mem::take(&mut cur));
                }
                i += 1;
            }
            b'(' | b'[' => {
                cur.push(Token {
                    kind: Kind::Punct,
                    text: (c as char).to_string(),
                    depth,
                });
                depth += 1;
                i += 1;
            }
            b')' | b']' => {
                depth = depth.saturating_sub(1);
                cur.push(Token {
                    kind: Kind::Punct,
                    text: (c as char).to_string(),
                    depth,
                });
                i += 1;
            }
            c if c.is_ascii_digit() => {
                while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                    i += 1;
                }
                cur.push(Token {
                    kind: Kind::Literal,
                    text: String::new(),
                    depth,
                });
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < n
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                let word = String::from_utf8_lossy(&b[start..i]).to_lowercase();
                cur.push(Token {
                    kind: Kind::Word,
                    text: word,
                    depth,
                });
            }
            b':' if i + 1 < n && b[i + 1] == b':' => {
                cur.push(Token {
                    kind: Kind::Punct,
                    text: "::".into(),
                    depth,
                });
                i += 2;
            }
            _ => {
                cur.push(Token {
                    kind: Kind::Punct,
                    text: (c as char).to_string(),
                    depth,
                });
                i += 1;
            }
        }
    }
    if !cur.is_empty() {
        statements.push(cur);
    }
    statements
}

/// End of a '...' string starting at `i` (after the quote). `backslash`: E'' escapes.
fn skip_string(b: &[u8], mut i: usize, backslash: bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => i += 2,
            b'\'' if i + 1 < b.len() && b[i + 1] == b'\'' => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn quoted_ident(b: &[u8], mut i: usize) -> (usize, String) {
    let mut out = Vec::new();
    while i < b.len() {
        if b[i] == b'"' {
            if i + 1 < b.len() && b[i + 1] == b'"' {
                out.push(b'"');
                i += 2;
                continue;
            }
            return (i + 1, String::from_utf8_lossy(&out).into_owned());
        }
        out.push(b[i]);
        i += 1;
    }
    (b.len(), String::from_utf8_lossy(&out).into_owned())
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Built-in functions known to be free of side effects (immutable or stable). A SELECT calling
/// only these (and keywords that look like calls) is a read.
const READ_FUNCTIONS: &[&str] = &[
    "abs",
    "age",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_length",
    "array_lower",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_upper",
    "ascii",
    "avg",
    "bit_and",
    "bit_length",
    "bit_or",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "clock_timestamp",
    "coalesce",
    "col_description",
    "concat",
    "concat_ws",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_setting",
    "date_bin",
    "date_part",
    "date_trunc",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "encode",
    "every",
    "exp",
    "extract",
    "first_value",
    "floor",
    "format",
    "format_type",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "greatest",
    "has_schema_privilege",
    "has_table_privilege",
    "initcap",
    "isfinite",
    "json_agg",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object_agg",
    "json_typeof",
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
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last_value",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "log",
    "log10",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "max",
    "md5",
    "min",
    "mod",
    "mode",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "obj_description",
    "octet_length",
    "overlay",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_database_size",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_indexdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_relation_size",
    "pg_size_pretty",
    "pg_sleep",
    "pg_table_size",
    "pg_total_relation_size",
    "pg_typeof",
    "pi",
    "position",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "rank",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sign",
    "sin",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "sum",
    "time_bucket",
    "timeofday",
    "timezone",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regtype",
    "to_timestamp",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "unnest",
    "upper",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "width_bucket",
];

/// Words followed by `(` that are syntax, not function calls.
const SYNTAX_PARENS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "case",
    "cast",
    "char",
    "character",
    "cube",
    "decimal",
    "distinct",
    "else",
    "exists",
    "filter",
    "float",
    "from",
    "group",
    "grouping",
    "having",
    "in",
    "interval",
    "is",
    "join",
    "lateral",
    "like",
    "not",
    "numeric",
    "on",
    "or",
    "over",
    "partition",
    "row",
    "rollup",
    "select",
    "sets",
    "some",
    "then",
    "time",
    "timestamp",
    "union",
    "intersect",
    "except",
    "using",
    "values",
    "varchar",
    "bit",
    "varbit",
    "when",
    "where",
    "with",
    "within",
    "into",
    "limit",
    "offset",
    "only",
    "returning",
    "table",
    "ilike",
    "similar",
    "nulls",
    "tablesample",
    "precision",
    "varying",
    "rows",
    "range",
    "groups",
    "materialized",
    "recursive",
    "escape",
    "if",
    "zone",
    "copy",
    "stdin",
    "stdout",
    "system",
    "bernoulli",
    "conflict",
    "do",
    "set",
    "key",
    "references",
    "check",
    "unique",
    "primary",
    "default",
    "identity",
    "generated",
    "options",
    "analyze",
    "explain",
    "verbose",
    "costs",
    "buffers",
];

const NONDETERMINISTIC: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "transaction_timestamp",
    "statement_timestamp",
    "clock_timestamp",
    "timeofday",
    "random",
    "random_normal",
    "setseed",
    "nextval",
    "currval",
    "lastval",
    "setval",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "pg_backend_pid",
    "txid_current",
    "pg_current_xact_id",
    "inet_client_addr",
];

/// What one statement is.
struct Judged {
    write: bool,
    tx: TxControl,
    copy_from_stdin: bool,
    session_state: bool,
}

fn word(t: Option<&Token>) -> &str {
    match t {
        Some(Token {
            kind: Kind::Word,
            text,
            ..
        }) => text,
        _ => "",
    }
}

fn name_at(toks: &[Token], mut i: usize) -> Option<(String, usize)> {
    // schema.table or table; skips ONLY / IF EXISTS.
    while matches!(word(toks.get(i)), "only" | "if" | "exists" | "table") {
        i += 1;
    }
    let first = toks.get(i)?;
    if !matches!(first.kind, Kind::Word | Kind::Quoted) {
        return None;
    }
    let mut name = first.text.clone();
    i += 1;
    while toks
        .get(i)
        .is_some_and(|t| t.kind == Kind::Punct && t.text == ".")
    {
        let part = toks.get(i + 1)?;
        name.push('.');
        name.push_str(&part.text);
        i += 2;
    }
    Some((name, i))
}

fn judge(toks: &[Token], tables: &mut Vec<String>, nondet: &mut Vec<&'static str>) -> Judged {
    let w0 = word(toks.first());
    let w1 = word(toks.get(1));
    let mut j = Judged {
        write: true,
        tx: TxControl::None,
        copy_from_stdin: false,
        session_state: false,
    };
    let mut add_table = |name: Option<(String, usize)>| {
        if let Some((n, _)) = name {
            if !tables.contains(&n) {
                tables.push(n);
            }
        }
    };
    // Scan for function calls, non-deterministic functions, data-modifying keywords.
    let mut calls_unknown = false;
    let mut modifies = false;
    let mut locking = false;
    let mut select_into = false;
    for (k, t) in toks.iter().enumerate() {
        if t.kind != Kind::Word {
            continue;
        }
        let next_paren = toks
            .get(k + 1)
            .is_some_and(|n| n.kind == Kind::Punct && n.text == "(");
        let after_cast = k > 0 && toks[k - 1].kind == Kind::Punct && toks[k - 1].text == "::";
        let after_dot = k > 0 && toks[k - 1].kind == Kind::Punct && toks[k - 1].text == ".";
        if let Some(f) = NONDETERMINISTIC.iter().find(|f| **f == t.text) {
            if (next_paren
                || matches!(
                    t.text.as_str(),
                    "current_timestamp"
                        | "current_date"
                        | "current_time"
                        | "localtime"
                        | "localtimestamp"
                ))
                && !nondet.contains(f)
            {
                nondet.push(f);
            }
        }
        if next_paren
            && !after_cast
            && !SYNTAX_PARENS.contains(&t.text.as_str())
            && !READ_FUNCTIONS.contains(&t.text.as_str())
        {
            // `AS name(cols)` alias lists and `INSERT INTO t (cols)` are not calls.
            let prev = if k > 0 { word(toks.get(k - 1)) } else { "" };
            let prev2 = if k > 1 { word(toks.get(k - 2)) } else { "" };
            let prev_comma = k > 0 && toks[k - 1].kind == Kind::Punct && toks[k - 1].text == ",";
            let cte_name = matches!(prev, "with" | "recursive")
                || (w0 == "with" && t.depth == 0 && prev_comma);
            let alias = prev == "as" || (after_dot && prev2 == "as") || cte_name;
            if !alias && !matches!(prev, "into" | "table") {
                calls_unknown = true;
            }
        }
        match t.text.as_str() {
            "insert" | "update" | "delete" | "merge" if k > 0 => {
                // Inside a CTE or subquery: `WITH x AS (DELETE ...)`.
                let prev = &toks[k - 1];
                if (prev.kind == Kind::Punct && prev.text == "(")
                    || word(Some(prev)) == "as"
                    || (t.depth == 0 && w0 == "with")
                {
                    modifies = true;
                    let target = match t.text.as_str() {
                        "insert" | "merge" => name_at(toks, k + 2),
                        "delete" => name_at(toks, k + 2),
                        _ => name_at(toks, k + 1),
                    };
                    add_table(target);
                }
            }
            "insert" | "update" | "delete" | "merge" if t.depth == 0 && w0 == "with" => {
                modifies = true;
                let target = match t.text.as_str() {
                    "update" => name_at(toks, k + 1),
                    _ => name_at(toks, k + 2),
                };
                add_table(target);
            }
            "for" if t.depth == 0 => {
                let nxt = word(toks.get(k + 1));
                if matches!(nxt, "update" | "share" | "no" | "key") {
                    locking = true;
                }
            }
            "into" if t.depth == 0 && w0 == "select" => {
                select_into = true;
                add_table(
                    name_at(toks, k + 1)
                        .filter(|(n, _)| !matches!(n.as_str(), "temp" | "temporary" | "unlogged")),
                );
            }
            _ => {}
        }
    }
    let read_query = |j: &mut Judged| {
        j.write = calls_unknown || modifies || locking || select_into;
    };
    match w0 {
        "select" | "values" | "table" | "with" => read_query(&mut j),
        "show" | "fetch" | "move" => j.write = false,
        "close" => j.write = false,
        "explain" => {
            let analyze = toks
                .iter()
                .take(8)
                .any(|t| t.kind == Kind::Word && t.text == "analyze");
            j.write = analyze
                && (calls_unknown
                    || modifies
                    || toks.iter().any(|t| {
                        t.kind == Kind::Word
                            && matches!(
                                t.text.as_str(),
                                "insert" | "update" | "delete" | "merge" | "into"
                            )
                    }));
            if !analyze {
                j.write = false;
            }
        }
        "declare" => {
            let hold = toks
                .windows(2)
                .any(|w| word(Some(&w[0])) == "with" && word(Some(&w[1])) == "hold");
            read_query(&mut j);
            j.write |= hold;
            j.session_state = hold;
        }
        "copy" => {
            // COPY t FROM ... | COPY t TO ... | COPY (query) TO ...
            let from = toks
                .iter()
                .any(|t| t.depth == 0 && t.kind == Kind::Word && t.text == "from");
            if from {
                add_table(name_at(toks, 1));
                j.copy_from_stdin = toks
                    .iter()
                    .any(|t| t.depth == 0 && t.kind == Kind::Word && t.text == "stdin");
            } else {
                read_query(&mut j);
                j.write |= toks.iter().any(|t| {
                    t.kind == Kind::Word
                        && matches!(t.text.as_str(), "insert" | "update" | "delete" | "merge")
                });
            }
        }
        "insert" => add_table(name_at(toks, 2)),
        "update" => add_table(name_at(toks, 1)),
        "delete" => add_table(name_at(toks, 2)),
        "merge" => add_table(name_at(toks, 2)),
        "truncate" => {
            let mut i = 1;
            while let Some((n, next)) = name_at(toks, i) {
                if matches!(n.as_str(), "restart" | "continue" | "cascade" | "restrict") {
                    break;
                }
                add_table(Some((n, next)));
                if toks
                    .get(next)
                    .is_some_and(|t| t.kind == Kind::Punct && t.text == ",")
                {
                    i = next + 1;
                } else {
                    break;
                }
            }
        }
        "begin" | "start" => j.tx = TxControl::Begin,
        "commit" | "end" => {
            j.tx = if w1 == "prepared" {
                TxControl::Prepared
            } else {
                TxControl::Commit
            }
        }
        "abort" => j.tx = TxControl::Rollback,
        "rollback" => {
            j.tx = if w1 == "prepared" {
                TxControl::Prepared
            } else if toks.iter().any(|t| t.kind == Kind::Word && t.text == "to") {
                TxControl::RollbackToSavepoint
            } else {
                TxControl::Rollback
            }
        }
        "savepoint" => j.tx = TxControl::Savepoint,
        "release" => j.tx = TxControl::ReleaseSavepoint,
        "prepare" if w1 == "transaction" => j.tx = TxControl::Prepared,
        "set" | "reset" | "discard" | "prepare" | "deallocate" | "listen" | "unlisten" | "load" => {
            j.session_state = true
        }
        "create" => {
            let temp = toks
                .iter()
                .take(4)
                .any(|t| t.kind == Kind::Word && matches!(t.text.as_str(), "temp" | "temporary"));
            j.session_state = temp;
        }
        _ => {}
    }
    j
}

/// Classify a query string (one or more statements).
pub fn classify(sql: &str) -> Classification {
    let statements = lex(sql);
    let mut c = Classification {
        route: Route::PrimaryOnly,
        statements: statements.len(),
        tx: TxControl::None,
        copy_from_stdin: false,
        session_state: false,
        tables: Vec::new(),
        nondeterministic: Vec::new(),
    };
    let mut tx_seen = 0;
    for toks in &statements {
        let j = judge(toks, &mut c.tables, &mut c.nondeterministic);
        if j.write {
            c.route = Route::Both;
        }
        c.copy_from_stdin |= j.copy_from_stdin;
        c.session_state |= j.session_state;
        if j.tx != TxControl::None {
            tx_seen += 1;
            c.tx = j.tx;
        }
    }
    if tx_seen > 0 && statements.len() > 1 {
        c.tx = TxControl::Mixed;
    }
    c
}

#[cfg(test)]
mod tests;
