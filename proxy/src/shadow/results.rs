//! The proxy-wide shadow state: the sampling rate and queue bound, and per-statement results
//! and latencies, reported by `/shadow` and logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::dual::outcome::{Outcome, ResultKind};
use crate::shadow::compare::{compare, normalize, ordered, Context, Kind, Match, Span};
use crate::shadow::report::{render_row, Percentiles, ShadowReport, StatementReport};

/// Latencies of one side, in microseconds (the last `CAP` executions).
#[derive(Default)]
pub(crate) struct Reservoir {
    values: Vec<u32>,
    next: usize,
}

impl Reservoir {
    const CAP: usize = 2048;

    pub(crate) fn add(&mut self, d: Duration) {
        let v = d.as_micros().min(u32::MAX as u128) as u32;
        if self.values.len() < Self::CAP {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
            self.next = (self.next + 1) % Self::CAP;
        }
    }

    pub(crate) fn percentiles(&self) -> Percentiles {
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

#[derive(Default)]
struct StatementStats {
    executions: u64,
    mismatches: HashMap<Kind, u64>,
    order_only: u64,
    count_only: u64,
    separate: u64,
    shared: u64,
    primary: Reservoir,
    secondary: Reservoir,
    wait: Reservoir,
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
    count_only: AtomicU64,
    /// Skipped samples by reason.
    skips: Mutex<std::collections::BTreeMap<&'static str, u64>>,
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
            count_only: AtomicU64::new(0),
            skips: Mutex::new(Default::default()),
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

    /// A sample not compared, and why (see docs/proxy.md, Shadow reads, for each reason).
    pub fn skip(&self, reason: &'static str) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        *self
            .skips
            .lock()
            .expect("shadow lock poisoned")
            .entry(reason)
            .or_default() += 1;
        metrics::counter!("dualwrite_shadow_dropped_total", "reason" => reason).increment(1);
    }

    /// Compare a sample's answers and record the result; returns the mismatches found.
    ///
    /// `unproven`, asked only when the answers differ: why the difference would not be one
    /// the data proves, if it would not: a commit to a table the read names may have reached
    /// one side and not the other while the read ran (`concurrent_write`, see [`concurrent`]),
    /// or the statement calls a function that gives each server its own value
    /// (`nondeterministic`: `now()`, `random()`, `pg_backend_pid()`, ...). The sample is then
    /// skipped with that reason instead.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        text: &str,
        results: &[usize],
        primary: &Outcome,
        secondary: &Outcome,
        span: Span,
        unproven: impl FnOnce() -> Option<&'static str>,
        context: Context,
        log_params: bool,
        params: &str,
    ) -> Vec<Kind> {
        let key = normalize(text);
        let ordered = ordered(&key);
        let mut kinds = Vec::new();
        let mut order_only = false;
        let mut count_only = false;
        for (i, &pi) in results.iter().enumerate() {
            let (Some(p), Some(s)) = (primary.results.get(pi), secondary.results.get(i)) else {
                if primary.results.get(pi).is_some() != secondary.results.get(i).is_some() {
                    kinds.push(Kind::Error);
                }
                continue;
            };
            match compare(p, s, ordered) {
                Ok(Match::Rows) => {}
                Ok(Match::OtherOrder) => order_only = true,
                Ok(Match::CountOnly) => count_only = true,
                Err(k) => {
                    if !kinds.contains(&k) {
                        kinds.push(k)
                    }
                }
            }
        }
        if let Some(reason) = (!kinds.is_empty()).then(unproven).flatten() {
            self.skip(reason);
            return Vec::new();
        }
        self.executions.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dualwrite_shadow_executions_total").increment(1);
        metrics::histogram!("dualwrite_shadow_duration_seconds", "side" => "primary")
            .record(primary.elapsed.as_secs_f64());
        if let Some(took) = span.took {
            metrics::histogram!("dualwrite_shadow_duration_seconds", "side" => "secondary")
                .record(took.as_secs_f64());
        }
        // From the primary's answer to the secondary starting on the sample: the watermark,
        // the session's queue, the shared session's batching and the samples before it.
        let wait = primary
            .answered
            .map(|a| span.started.saturating_duration_since(a))
            .unwrap_or_default();
        metrics::histogram!("dualwrite_shadow_wait_seconds").record(wait.as_secs_f64());
        for k in &kinds {
            metrics::counter!("dualwrite_shadow_mismatches_total", "kind" => k.name()).increment(1);
        }
        let count_only = count_only && kinds.is_empty();
        if count_only {
            self.count_only.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dualwrite_shadow_count_only_total").increment(1);
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
        if let Some(took) = span.took {
            st.secondary.add(took);
        }
        st.wait.add(wait);
        st.order_only += order_only as u64;
        st.count_only += count_only as u64;
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
                count_only: st.count_only,
                separate_connection: st.separate,
                shared_connection: st.shared,
                primary_ms: st.primary.percentiles(),
                secondary_ms: st.secondary.percentiles(),
                secondary_wait_ms: st.wait.percentiles(),
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
            count_only: self.count_only.load(Ordering::Relaxed),
            skips: self
                .skips
                .lock()
                .expect("shadow lock poisoned")
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
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
pub(crate) fn differing_rows(p: &Outcome, s: &Outcome) -> (Vec<String>, Vec<String>) {
    let only = |a: &[bytes::Bytes], b: &[bytes::Bytes]| -> Vec<String> {
        a.iter()
            .filter(|r| !b.contains(r))
            .take(5)
            .map(|r| render_row(r))
            .collect()
    };
    (only(&p.sample, &s.sample), only(&s.sample, &p.sample))
}
