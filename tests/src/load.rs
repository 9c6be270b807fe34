//! A steady write load through the proxy, for tests that break something under it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::DualWrite;

/// `n` clients inserting into `events (id bigint PRIMARY KEY, writer int, ...)` through the
/// proxy, every 2 ms, each tenth write in an explicit transaction when `transactions`, until
/// [`Writers::finish`]. Ids are `writer * 1_000_000 + i`.
pub struct Writers {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<i64>>,
}

impl Writers {
    pub async fn start(d: &DualWrite, n: i64, transactions: bool) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..n {
            let c = d.client().await;
            let (stop, errors, done) = (stop.clone(), errors.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let ins = c
                    .prepare("INSERT INTO events (id, writer) VALUES ($1, $2)")
                    .await
                    .unwrap();
                let mut i = 0i64;
                while !stop.load(Ordering::Acquire) {
                    let id = w * 1_000_000 + i;
                    let r = if transactions && i % 10 == 9 {
                        c.batch_execute(&format!(
                            "BEGIN; INSERT INTO events (id, writer) VALUES ({id}, {w}); COMMIT"
                        ))
                        .await
                    } else {
                        c.execute(&ins, &[&id, &(w as i32)]).await.map(|_| ())
                    };
                    if let Err(e) = r {
                        eprintln!("writer {w}: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                i
            }));
        }
        Writers {
            stop,
            errors,
            done,
            tasks,
        }
    }

    /// Writes completed so far (failed ones included), across writers.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stop, wait for every writer; returns (rows written, writes that failed).
    pub async fn finish(self) -> (i64, u64) {
        self.stop.store(true, Ordering::Release);
        let mut written = 0;
        for t in self.tasks {
            written += t.await.expect("a writer panicked");
        }
        (written, self.errors.load(Ordering::Relaxed))
    }
}
