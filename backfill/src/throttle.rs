//! `--max-rows-per-second` across all workers of a process: a shared timeline on which each
//! streamed batch of rows reserves its share of time; a worker ahead of it sleeps.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate limit shared by the workers.
#[derive(Debug)]
pub struct Throttle {
    rows_per_second: f64,
    /// When the rows reserved so far may all have been sent.
    next: Mutex<Option<Instant>>,
}

/// After idling, up to this much time's worth of rows passes without sleeping.
const BURST: Duration = Duration::from_millis(200);

impl Throttle {
    /// A limit of `rows_per_second` (at least 1).
    pub fn new(rows_per_second: u64) -> Throttle {
        Throttle {
            rows_per_second: rows_per_second.max(1) as f64,
            next: Mutex::new(None),
        }
    }

    /// Account for `rows` just sent; returns how long to wait before sending more.
    pub fn reserve(&self, rows: u64) -> Duration {
        if rows == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let cost = Duration::from_secs_f64(rows as f64 / self.rows_per_second);
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        // Idle time banks no more credit than the burst allowance.
        let floor = now.checked_sub(BURST).unwrap_or(now);
        let start = match *next {
            Some(n) if n > floor => n,
            _ => floor,
        };
        let end = start + cost;
        *next = Some(end);
        end.saturating_duration_since(now)
    }

    /// Sleep as [`Throttle::reserve`] says.
    pub async fn take(&self, rows: u64) {
        let wait = self.reserve(rows);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_rate() {
        let t = Throttle::new(1000);
        // The first 200 ms worth passes at once, then each 100 rows costs 100 ms more.
        assert!(t.reserve(200).is_zero());
        let w = t.reserve(100);
        assert!(
            w > Duration::from_millis(80) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        let w = t.reserve(1000);
        assert!(w > Duration::from_millis(1000), "{w:?}");
    }
}
