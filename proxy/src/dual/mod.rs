//! # `dual`: what a write is, the order it reaches the secondary in, and its durable record
//!
//! Owns deciding what must reach the secondary (`classify`: which statements write or change
//! session state), cutting a session's traffic into units (`unit`, `copytrack`), what a backend
//! answered (`outcome`), the primary's commit order that the secondary commits in (`order`),
//! commit markers (`marker`), the journal of writes the secondary missed (`journal`), its
//! replay (`replay`), backend sessions to end after a loss (`abandoned`), and proxy-wide
//! dual-write facts (`facts`).
//!
//! May use: `wire`, `config`, `metrics`. Never a session, a shadow read or the control plane:
//! the session's secondary worker (`session::secondary`) drives these pieces.

pub mod abandoned;
pub mod classify;
pub mod copytrack;
pub mod facts;
pub mod journal;
pub mod marker;
pub mod order;
pub mod outcome;
pub mod replay;
pub mod unit;
