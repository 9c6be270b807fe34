//! The analyzer: walks the tokens statement by statement and decides what each may change.

use super::*;

pub(super) struct Analyzer<'a> {
    pub(super) sql: &'a str,
    pub(super) toks: &'a [Tok],
    pub(super) tables: Vec<String>,
    pub(super) seen_tables: HashSet<String>,
    pub(super) session_state: bool,
    pub(super) copy_from_stdin: bool,
    /// A statement is a COPY or works on a cursor (see `Classification::shadowable`).
    pub(super) unshadowable: bool,
    /// Statements being classified inside one another (EXPLAIN ANALYZE, COPY, DECLARE).
    pub(super) nesting: u32,
    /// Some statement may change data or schema (see `Classification::effect`).
    pub(super) effect: bool,
    /// Data-changing parts seen in query-shaped statements (DML, SELECT INTO, unsafe calls).
    pub(super) writes: usize,
}

/// Deepest statement nesting classified; deeper text is sent to both.
pub(super) const MAX_NESTING: u32 = 16;

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
    pub(super) fn statement(&mut self, lo: usize, hi: usize) -> (Route, TxControl) {
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
