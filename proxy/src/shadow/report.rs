//! The shadow report: what `/shadow` returns and `dualwrite-proxy shadow` prints.

use serde::{Deserialize, Serialize};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
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
    /// Samples not compared (the secondary detached or unreachable, the primary's read
    /// cancelled or failed on its session's own state, ...): the total of `skips`.
    pub skipped: u64,
    /// Skipped samples by reason.
    #[serde(default)]
    pub skips: Vec<(String, u64)>,
    /// Samples compared by row count only (see [`Match::CountOnly`]); the rest of
    /// `executions` were compared row by row.
    #[serde(default)]
    pub count_only: u64,
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
    /// Compared by row count only (see [`Match::CountOnly`]).
    #[serde(default)]
    pub count_only: u64,
    pub separate_connection: u64,
    /// Run on the login's shared secondary session.
    #[serde(default)]
    pub shared_connection: u64,
    /// The server's time on the statement, per side (from sending it, or from the answer
    /// before it on the same connection, to its ReadyForQuery).
    pub primary_ms: Percentiles,
    pub secondary_ms: Percentiles,
    /// How long samples waited between the primary's answer and the secondary starting on
    /// them (not part of `secondary_ms`).
    #[serde(default)]
    pub secondary_wait_ms: Percentiles,
}

/// The report as a table, for `dualwrite-proxy shadow`.
pub fn render(r: &ShadowReport) -> String {
    let mut out = format!(
        "shadow reads: rate {}, {} compared ({} by row count only), {} dropped (queue full), {} skipped\n",
        r.sample_rate, r.executions, r.count_only, r.dropped, r.skipped
    );
    if !r.skips.is_empty() {
        let skips: Vec<String> = r.skips.iter().map(|(k, n)| format!("{k}={n}")).collect();
        out.push_str(&format!("skipped: {}\n", skips.join(" ")));
    }
    if !r.mismatches.is_empty() {
        let kinds: Vec<String> = r
            .mismatches
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        out.push_str(&format!("mismatches: {}\n", kinds.join(" ")));
    }
    out.push_str(&format!(
        "\n{:>8}  {:>9}  {:>10}  {:<24}  {:>23}  {:>23}  {:>17}  statement\n",
        "execs",
        "mismatch",
        "count-only",
        "kinds",
        "primary p50/p95/p99 ms",
        "target p50/p95/p99 ms",
        "wait p50/p99 ms"
    ));
    for s in &r.statements {
        let kinds: Vec<String> = s
            .mismatches
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let pct = |p: &Percentiles| format!("{:.2}/{:.2}/{:.2}", p.p50, p.p95, p.p99);
        out.push_str(&format!(
            "{:>8}  {:>9}  {:>10}  {:<24}  {:>23}  {:>23}  {:>17}  {}\n",
            s.executions,
            s.mismatched,
            s.count_only,
            kinds.join(","),
            pct(&s.primary_ms),
            pct(&s.secondary_ms),
            format!(
                "{:.2}/{:.2}",
                s.secondary_wait_ms.p50, s.secondary_wait_ms.p99
            ),
            s.statement.chars().take(120).collect::<String>()
        ));
    }
    out
}
