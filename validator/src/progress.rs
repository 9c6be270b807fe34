//! A progress bar on stderr: units done, rows checked, rows per second. Hidden when stderr is
//! not a terminal or with `--quiet`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of one run.
pub struct Progress {
    bar: ProgressBar,
    rows: AtomicU64,
    started: Instant,
}

impl Progress {
    /// A bar over `units` units; drawn only when `visible` and stderr is a terminal.
    pub fn new(units: u64, visible: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(
            Some(units),
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} units {msg}",
        ) {
            bar.set_style(style);
        }
        Progress {
            bar,
            rows: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Add more units to the total (bisection finds work as it goes).
    pub fn add_units(&self, n: u64) {
        self.bar.inc_length(n);
    }

    /// Count finished units and the rows they covered (both sides).
    pub fn done(&self, units: u64, rows: u64) {
        let total = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{total} rows checked, {:.0} rows/s",
            total as f64 / secs
        ));
        self.bar.inc(units);
    }

    /// Rows checked so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
