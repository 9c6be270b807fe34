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

//!
//! # Layer
//! `shadow` owns sampled reads: the sampling state and per-statement results (`results`),
//! comparing two answers (`compare`), the report (`report`), and the shared secondary
//! sessions samples run on (`lane`). May use: `dual`, `wire`, `config`, `metrics`. The
//! session's secondary worker (`session::secondary`) decides when a sample runs and hands it
//! here.

pub mod compare;
pub mod lane;
pub mod report;
pub mod results;
#[cfg(test)]
mod tests;

// The report's types are what `dualwrite-proxy shadow` and the tests read.
pub use report::{render, Percentiles, ShadowReport, StatementReport};
