//! Shadow reads: a sample of the client's reads also runs on the secondary, off the client's
//! path, and the two answers are compared.
//!
//! - Sampling is per execution: each read Query, or each Bind/Execute batch of a read prepared
//!   statement, is shadowed with probability `shadow_reads`. The read goes through the
//!   session's secondary worker, after the session's earlier writes, in the secondary session
//!   (so inside a transaction it sees the transaction's own writes); when that session cannot
//!   run it (its transaction failed), it runs on a separate secondary connection and is marked
//!   `separate`. A read outside any transaction, from a session without session state of its
//!   own (no SET, temporary table, ...), runs on one secondary session shared by all such
//!   sessions of the same login (`lane`), after the session's earlier writes were applied.
//! - At most `shadow_queue` samples are in flight; past that a sample is dropped and counted.
//!   Samples never hold the client: the primary's answer is forwarded as it arrives, and the
//!   comparison happens once both answers are in (in the worker, or on the shared session's
//!   task).
//! - Each statement's answers are compared by error (and SQLSTATE class), column types,
//!   row count, an order-insensitive digest and an order-sensitive digest of the rows. Same
//!   rows in another order is kind `order`: a mismatch only when the query has ORDER BY.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::outcome::{Outcome, ResultKind, StatementResult};

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

/// Compare one statement's answers. `Ok(order_only)` when they match (`order_only`: same rows
/// in another order, which is fine without ORDER BY).
pub fn compare(p: &StatementResult, s: &StatementResult, ordered: bool) -> Result<bool, Kind> {
    match (&p.kind, &s.kind) {
        (ResultKind::Error { code: a, .. }, ResultKind::Error { code: b, .. }) => {
            return if a.get(..2) == b.get(..2) {
                Ok(false)
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
    if p.rows != s.rows {
        return Err(Kind::RowCount);
    }
    let partial = p.kind == ResultKind::Suspended || s.kind == ResultKind::Suspended;
    if partial && !ordered {
        // An Execute with a row limit stopped before the end: without ORDER BY, each side may
        // return a different first few rows of the same result. Only the counts compare.
        return Ok(false);
    }
    if p.unordered != s.unordered {
        return Err(Kind::Rows);
    }
    if p.digest != s.digest {
        return if ordered { Err(Kind::Order) } else { Ok(true) };
    }
    Ok(false)
}

/// Whether the statement text asks for an order (an `ORDER BY` outside strings and comments).
pub fn has_order_by(text: &str) -> bool {
    ordered(&normalize(text))
}

/// [`has_order_by`] of a [`normalize`]d text.
fn ordered(normalized: &str) -> bool {
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

/// Latencies of one side, in microseconds (the last `CAP` executions).
#[derive(Default)]
struct Reservoir {
    values: Vec<u32>,
    next: usize,
}

impl Reservoir {
    const CAP: usize = 2048;

    fn add(&mut self, d: Duration) {
        let v = d.as_micros().min(u32::MAX as u128) as u32;
        if self.values.len() < Self::CAP {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
            self.next = (self.next + 1) % Self::CAP;
        }
    }

    fn percentiles(&self) -> Percentiles {
        let mut v = self.values.clone();
        v.sort_unstable();
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i] as f64 / 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Default)]
struct StatementStats {
    executions: u64,
    mismatches: HashMap<Kind, u64>,
    order_only: u64,
    separate: u64,
    shared: u64,
    primary: Reservoir,
    secondary: Reservoir,
    last_log: Option<Instant>,
}

/// Distinct statements tracked; the rest are counted under one entry.
const MAX_STATEMENTS: usize = 1000;
const OTHER: &str = "<other statements>";
/// At most one mismatch log line per statement per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The proxy-wide shadow state.
pub struct Shadow {
    rate_bits: AtomicU64,
    in_flight: AtomicUsize,
    executions: AtomicU64,
    dropped: AtomicU64,
    skipped: AtomicU64,
    statements: Mutex<HashMap<String, StatementStats>>,
}

impl Shadow {
    pub fn new(rate: f64) -> Shadow {
        Shadow {
            rate_bits: AtomicU64::new(rate.to_bits()),
            in_flight: AtomicUsize::new(0),
            executions: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            statements: Mutex::new(HashMap::new()),
        }
    }

    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    pub fn set_rate(&self, rate: f64) {
        self.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Take a place in the shadow queue, or count a drop.
    pub fn admit(&self, cap: usize) -> bool {
        let ok = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dualwrite_shadow_dropped_total", "reason" => "queue_full")
                .increment(1);
        }
        ok
    }

    /// A sample left the queue (compared, or skipped).
    pub fn done(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// A sample the secondary could not run (detached, unreachable).
    pub fn skip(&self, reason: &'static str) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dualwrite_shadow_dropped_total", "reason" => reason).increment(1);
    }

    /// Compare a sample's answers and record the result; returns the mismatches found.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        text: &str,
        results: &[usize],
        primary: &Outcome,
        secondary: &Outcome,
        secondary_elapsed: Duration,
        context: Context,
        log_params: bool,
        params: &str,
    ) -> Vec<Kind> {
        self.executions.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dualwrite_shadow_executions_total").increment(1);
        metrics::histogram!("dualwrite_shadow_duration_seconds", "side" => "primary")
            .record(primary.elapsed.as_secs_f64());
        metrics::histogram!("dualwrite_shadow_duration_seconds", "side" => "secondary")
            .record(secondary_elapsed.as_secs_f64());
        let key = normalize(text);
        let ordered = ordered(&key);
        let mut kinds = Vec::new();
        let mut order_only = false;
        for (i, &pi) in results.iter().enumerate() {
            let (Some(p), Some(s)) = (primary.results.get(pi), secondary.results.get(i)) else {
                if primary.results.get(pi).is_some() != secondary.results.get(i).is_some() {
                    kinds.push(Kind::Error);
                }
                continue;
            };
            match compare(p, s, ordered) {
                Ok(o) => order_only |= o,
                Err(k) => {
                    if !kinds.contains(&k) {
                        kinds.push(k)
                    }
                }
            }
        }
        for k in &kinds {
            metrics::counter!("dualwrite_shadow_mismatches_total", "kind" => k.name()).increment(1);
        }
        let mut map = self.statements.lock().expect("shadow lock poisoned");
        let key = if map.contains_key(&key) || map.len() < MAX_STATEMENTS {
            key
        } else {
            OTHER.to_string()
        };
        let st = map.entry(key.clone()).or_default();
        st.executions += 1;
        st.primary.add(primary.elapsed);
        st.secondary.add(secondary_elapsed);
        st.order_only += order_only as u64;
        st.separate += (context == Context::Separate) as u64;
        st.shared += (context == Context::Shared) as u64;
        for k in &kinds {
            *st.mismatches.entry(*k).or_default() += 1;
        }
        let log = !kinds.is_empty() && st.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if log {
            st.last_log = Some(Instant::now());
        }
        drop(map);
        if log {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            let shown_params = if log_params { params } else { "<redacted>" };
            let (only_primary, only_secondary) = differing_rows(primary, secondary);
            tracing::warn!(
                statement = %key,
                params = %shown_params,
                kinds = ?names,
                context = ?context,
                primary = %describe(primary),
                secondary = %describe(secondary),
                rows_only_on_primary = ?only_primary,
                rows_only_on_secondary = ?only_secondary,
                "shadow read mismatch"
            );
        }
        kinds
    }

    /// The summary `GET /shadow` serves.
    pub fn report(&self) -> ShadowReport {
        let map = self.statements.lock().expect("shadow lock poisoned");
        let mut statements: Vec<StatementReport> = map
            .iter()
            .map(|(text, st)| StatementReport {
                statement: text.clone(),
                executions: st.executions,
                mismatches: Kind::ALL
                    .iter()
                    .filter_map(|k| st.mismatches.get(k).map(|n| (k.name().to_string(), *n)))
                    .collect(),
                mismatched: st.mismatches.values().sum(),
                same_rows_other_order: st.order_only,
                separate_connection: st.separate,
                shared_connection: st.shared,
                primary_ms: st.primary.percentiles(),
                secondary_ms: st.secondary.percentiles(),
            })
            .collect();
        statements.sort_by(|a, b| {
            b.mismatched
                .cmp(&a.mismatched)
                .then(b.executions.cmp(&a.executions))
                .then(a.statement.cmp(&b.statement))
        });
        let mut mismatches: HashMap<String, u64> = HashMap::new();
        for st in map.values() {
            for (k, n) in &st.mismatches {
                *mismatches.entry(k.name().to_string()).or_default() += n;
            }
        }
        ShadowReport {
            sample_rate: self.rate(),
            executions: self.executions.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            mismatches: mismatches.into_iter().collect(),
            statements,
        }
    }
}

fn describe(o: &Outcome) -> String {
    o.results
        .iter()
        .map(|r| match &r.kind {
            ResultKind::Error { code, message } => format!("ERROR {code} {message}"),
            _ => format!("{} row(s)", r.rows),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rows in one sample and not the other (a few of each, rendered as text).
fn differing_rows(p: &Outcome, s: &Outcome) -> (Vec<String>, Vec<String>) {
    let only = |a: &[bytes::Bytes], b: &[bytes::Bytes]| -> Vec<String> {
        a.iter()
            .filter(|r| !b.contains(r))
            .take(5)
            .map(|r| render_row(r))
            .collect()
    };
    (only(&p.sample, &s.sample), only(&s.sample, &p.sample))
}

/// A DataRow body as `(a, b, NULL)`; binary values as hex.
pub fn render_row(body: &[u8]) -> String {
    let mut out = String::from("(");
    let n = body
        .get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let mut pos = 2;
    for i in 0..n.max(0) {
        if i > 0 {
            out.push_str(", ");
        }
        let Some(len) = body
            .get(pos..pos + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            break;
        };
        pos += 4;
        if len < 0 {
            out.push_str("NULL");
            continue;
        }
        let v = body.get(pos..pos + len as usize).unwrap_or_default();
        pos += len as usize;
        match std::str::from_utf8(v) {
            Ok(t) if t.chars().all(|c| !c.is_control()) => {
                let t: String = t.chars().take(60).collect();
                out.push_str(&t);
            }
            _ => {
                out.push_str("\\x");
                for b in v.iter().take(30) {
                    out.push_str(&format!("{b:02x}"));
                }
            }
        }
    }
    out.push(')');
    out
}

/// `GET /shadow`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShadowReport {
    pub sample_rate: f64,
    pub executions: u64,
    /// Samples dropped because the shadow queue was full.
    pub dropped: u64,
    /// Samples the secondary could not run (detached or unreachable).
    pub skipped: u64,
    pub in_flight: usize,
    pub mismatches: Vec<(String, u64)>,
    pub statements: Vec<StatementReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatementReport {
    pub statement: String,
    pub executions: u64,
    pub mismatched: u64,
    pub mismatches: Vec<(String, u64)>,
    /// Same rows in another order, for a query without ORDER BY (not a mismatch).
    pub same_rows_other_order: u64,
    pub separate_connection: u64,
    /// Run on the login's shared secondary session.
    #[serde(default)]
    pub shared_connection: u64,
    pub primary_ms: Percentiles,
    pub secondary_ms: Percentiles,
}

/// The report as a table, for `dualwrite-proxy shadow`.
pub fn render(r: &ShadowReport) -> String {
    let mut out = format!(
        "shadow reads: rate {}, {} compared, {} dropped (queue full), {} skipped (secondary detached or unreachable, or batch failed or cancelled on the primary)\n",
        r.sample_rate, r.executions, r.dropped, r.skipped
    );
    if !r.mismatches.is_empty() {
        let kinds: Vec<String> = r
            .mismatches
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        out.push_str(&format!("mismatches: {}\n", kinds.join(" ")));
    }
    out.push_str(&format!(
        "\n{:>8}  {:>9}  {:<24}  {:>23}  {:>23}  statement\n",
        "execs", "mismatch", "kinds", "primary p50/p95/p99 ms", "target p50/p95/p99 ms"
    ));
    for s in &r.statements {
        let kinds: Vec<String> = s
            .mismatches
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let pct = |p: &Percentiles| format!("{:.2}/{:.2}/{:.2}", p.p50, p.p95, p.p99);
        out.push_str(&format!(
            "{:>8}  {:>9}  {:<24}  {:>23}  {:>23}  {}\n",
            s.executions,
            s.mismatched,
            kinds.join(","),
            pct(&s.primary_ms),
            pct(&s.secondary_ms),
            s.statement.chars().take(120).collect::<String>()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(rows: u64, digest: u64, unordered: u64) -> StatementResult {
        StatementResult {
            kind: ResultKind::Tag(format!("SELECT {rows}")),
            rows,
            digest,
            unordered,
            types: 7,
        }
    }

    #[test]
    fn a_suspended_portal_compares_contents_only_when_ordered() {
        let suspended = |digest, unordered| StatementResult {
            kind: ResultKind::Suspended,
            ..rows(1, digest, unordered)
        };
        // Different first rows of a larger result: not a difference without ORDER BY.
        assert_eq!(
            compare(&suspended(1, 1), &suspended(2, 2), false),
            Ok(false)
        );
        assert_eq!(compare(&suspended(1, 1), &rows(1, 2, 2), false), Ok(false));
        // With ORDER BY the first rows must be the same ones.
        assert_eq!(
            compare(&suspended(1, 1), &suspended(2, 2), true),
            Err(Kind::Rows)
        );
        assert_eq!(compare(&suspended(1, 1), &suspended(1, 1), true), Ok(false));
        // Fewer rows than the limit on one side is always a difference.
        assert_eq!(
            compare(&suspended(1, 1), &rows(0, 0, 0), false),
            Err(Kind::RowCount)
        );
    }

    #[test]
    fn kinds_in_order() {
        let err = |code: &str| StatementResult {
            kind: ResultKind::Error {
                code: code.into(),
                message: "m".into(),
            },
            rows: 0,
            digest: 0,
            unordered: 0,
            types: 0,
        };
        assert_eq!(compare(&rows(1, 1, 1), &rows(1, 1, 1), true), Ok(false));
        assert_eq!(
            compare(&rows(1, 1, 1), &err("42P01"), false),
            Err(Kind::Error)
        );
        assert_eq!(compare(&err("42P01"), &err("42703"), false), Ok(false));
        assert_eq!(
            compare(&err("42P01"), &err("22012"), false),
            Err(Kind::Sqlstate)
        );
        assert_eq!(
            compare(&rows(2, 1, 1), &rows(1, 1, 1), false),
            Err(Kind::RowCount)
        );
        assert_eq!(
            compare(&rows(2, 1, 1), &rows(2, 1, 2), false),
            Err(Kind::Rows)
        );
        assert_eq!(
            compare(&rows(2, 1, 5), &rows(2, 2, 5), true),
            Err(Kind::Order)
        );
        assert_eq!(compare(&rows(2, 1, 5), &rows(2, 2, 5), false), Ok(true));
        let mut t = rows(1, 1, 1);
        t.types = 8;
        assert_eq!(compare(&rows(1, 1, 1), &t, false), Err(Kind::Types));
    }

    #[test]
    fn normalizes_literals_and_comments() {
        assert_eq!(
            normalize("SELECT abalance FROM  pgbench_accounts\n WHERE aid = 4711 -- x\n"),
            "SELECT abalance FROM pgbench_accounts WHERE aid = ?"
        );
        assert_eq!(
            normalize("select * from t1 where s = 'it''s' and x in (1.5, 2e3) /* c */"),
            "select * from t1 where s = ? and x in (?, ?)"
        );
        assert_eq!(normalize("SELECT $1::int"), "SELECT $1::int");
        assert!(has_order_by("select a from t\norder  by a"));
        assert!(!has_order_by("select 'order by' from t"));
        assert!(!has_order_by("select a from t -- order by a"));
    }

    #[test]
    fn renders_rows() {
        let mut body = vec![0, 3];
        body.extend_from_slice(&1i32.to_be_bytes());
        body.push(b'7');
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(&[0, 1]);
        assert_eq!(render_row(&body), "(7, NULL, \\x0001)");
    }

    #[test]
    fn lists_rows_found_on_one_side_only() {
        let row = |v: &[u8]| {
            let mut b = vec![0, 1];
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v);
            bytes::Bytes::from(b)
        };
        let p = Outcome {
            sample: vec![row(b"1"), row(b"2"), row(b"3")],
            ..Outcome::default()
        };
        let s = Outcome {
            sample: vec![row(b"1"), row(b"3"), row(b"4")],
            ..Outcome::default()
        };
        assert_eq!(
            differing_rows(&p, &s),
            (vec!["(2)".to_string()], vec!["(4)".to_string()])
        );
    }

    #[test]
    fn queue_bound_and_percentiles() {
        let s = Shadow::new(1.0);
        assert!(s.admit(2));
        assert!(s.admit(2));
        assert!(!s.admit(2));
        s.done();
        assert!(s.admit(2));
        assert_eq!(s.report().dropped, 1);
        let mut r = Reservoir::default();
        for ms in 1..=100 {
            r.add(Duration::from_millis(ms));
        }
        let p = r.percentiles();
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
    }
}
