//! Progress of a copy or CSV load: a live bar on a terminal (units, rows, MB, rows/s, ETA),
//! a plain line per finished unit otherwise, nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Quiet,
}

impl Mode {
    /// A bar when stderr is a terminal, lines otherwise, nothing when `quiet`.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// Counters of one run, shared by its workers.
pub struct Progress {
    mode: Mode,
    bar: ProgressBar,
    noun: &'static str,
    total_units: AtomicU64,
    /// Units finished before this run (a resumed plan).
    done_before: u64,
    done: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Estimated rows of the units this run has left, when known.
    est_rows_left: Option<u64>,
    started: Instant,
}

impl Progress {
    /// Progress over `total_units` units (`noun`: "units", "batches"), `done_before` of them
    /// already done.
    pub fn new(
        mode: Mode,
        noun: &'static str,
        total_units: u64,
        done_before: u64,
        est_rows_left: Option<u64>,
    ) -> Arc<Progress> {
        let bar = ProgressBar::with_draw_target(
            Some(total_units),
            if mode == Mode::Bar {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:20}} {{pos}}/{{len}} {noun} {{msg}}"
        )) {
            bar.set_style(style);
        }
        bar.set_position(done_before);
        Arc::new(Progress {
            mode,
            bar,
            noun,
            total_units: AtomicU64::new(total_units),
            done_before,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            est_rows_left,
            started: Instant::now(),
        })
    }

    /// Redraw the bar's message four times a second until the returned handle is aborted.
    pub fn start_ticker(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.mode != Mode::Bar {
            return None;
        }
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            loop {
                me.bar.set_message(me.message());
                me.bar.tick();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }))
    }

    /// More units found (a CSV file is split as it is read).
    pub fn add_units(&self, n: u64) {
        self.total_units.fetch_add(n, Ordering::Relaxed);
        self.bar.inc_length(n);
    }

    /// Rows and bytes streamed (live; taken back with [`Progress::unstream`] when a unit
    /// is rolled back).
    pub fn stream(&self, rows: u64, bytes: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Forget rows and bytes of a unit that was rolled back.
    pub fn unstream(&self, rows: u64, bytes: u64) {
        self.rows.fetch_sub(rows, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A unit committed.
    pub fn unit_done(&self, label: &str, rows: u64, bytes: u64, took: Duration) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.inc(1);
        if self.mode == Mode::Lines {
            eprintln!(
                "[{}/{}] {label}: {} rows, {} in {:.1}s; {}",
                self.done_before + n,
                self.total_units.load(Ordering::Relaxed),
                group(rows),
                mb(bytes),
                took.as_secs_f64(),
                self.message()
            );
        }
    }

    /// A unit failed for good.
    pub fn unit_failed(&self, label: &str, error: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.bar.inc(1);
        if self.mode != Mode::Quiet {
            self.bar.suspend(|| eprintln!("FAILED {label}: {error}"));
        }
    }

    /// A unit found done already (a CSV batch loaded by an earlier run).
    pub fn skip(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.bar.inc(1);
    }

    /// Units skipped as done already.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// A message outside the bar (a retry, a warning).
    pub fn note(&self, text: &str) {
        if self.mode != Mode::Quiet {
            self.bar.suspend(|| eprintln!("{text}"));
        }
    }

    /// Rows streamed by this run.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Bytes streamed by this run.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Units this run finished.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Units this run gave up on.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// "1,234 rows, 5.6 MB, 7,890 rows/s, ETA 1m 2s".
    pub fn message(&self) -> String {
        let rows = self.rows();
        let bytes = self.bytes();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = rows as f64 / secs;
        let mut s = format!(
            "{} rows, {}, {} rows/s",
            group(rows),
            mb(bytes),
            group(rate as u64)
        );
        // ETA from the estimated rows when known, else from units.
        let done = self.done() + self.failed() + self.skipped();
        let left_units = self
            .total_units
            .load(Ordering::Relaxed)
            .saturating_sub(self.done_before)
            .saturating_sub(done);
        let eta = match self.est_rows_left {
            Some(est) if est > 0 && rate > 0.0 => Some(est.saturating_sub(rows) as f64 / rate),
            _ if done > 0 => Some(secs / done as f64 * left_units as f64),
            _ => None,
        };
        if let Some(eta) = eta.filter(|_| left_units > 0) {
            s.push_str(&format!(", ETA {}", duration(eta)));
        }
        s
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// The noun of the units.
    pub fn noun(&self) -> &'static str {
        self.noun
    }
}

/// 1234567 as "1,234,567".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let parts: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    parts.join(",")
}

/// Bytes as "12.3 MB".
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Seconds as "1h 2m", "3m 4s" or "5s".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h {}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group(100), "100");
        assert_eq!(mb(1_500_000), "1.5 MB");
        assert_eq!(duration(3725.0), "1h 2m");
        assert_eq!(duration(65.0), "1m 5s");
    }
}
